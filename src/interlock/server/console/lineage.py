"""The Execution Lineage Explorer's data: the graph of executions and one execution's chain.

    GET /console/api/lineage/graph?principal=spiffe://acme.test/agent/researcher
    GET /console/api/lineage/graph?trace=4bf92f3577b34da6a3ce929d0e0e4736&since=...&until=...
    GET /console/api/lineage/graph?root=<execution id>        the root and what descends from it
    GET /console/api/lineage/chain/<execution id>             its hops, from the root down

Every decided request is an execution (its id is the request id): its **state** is ``denied``
for a deny, else the status the log's execution projection holds (``allowed``, ``running``,
``ended``, ``terminated``). A child names its parent; its decision record carries
``parent_leaf``, the leaf hash of the parent's decision record — the link a verifier checks.

The graph holds the decisions that match (from the console's in-memory index, :mod:`.feed`),
newest first, each with its ancestors up to its root; asked for a ``root``, that execution,
its ancestors and everything that descends from it. It stops at ``limit`` nodes (at most
2,000), and ``truncated`` says so. An ancestor
older than the index is read from the ledger itself. The chain route reads the projection and
the ledger only. Neither proves anything: the page fetches each hop's tlog-proof from
``/console/api/decisions/{index}`` and verifies it, and the links, in the browser.

Reads need a read session or the public mode (:mod:`.session`); redacted principals and
resources are redacted here too (a principal filter then matches the pseudonym).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse

from interlock.core.model import format_time
from interlock.errors import Error
from interlock.ledger.projection import Execution
from interlock.server.console.feed import DecisionFeed, Filters, Row
from interlock.server.console.session import Viewer, ViewerDep
from interlock.server.schemas import UUID_PATTERN
from interlock.server.state import StateDep

__all__ = ["MAX_HOPS", "MAX_NODES", "api"]

api = APIRouter(prefix="/console/api/lineage", tags=["console"])

#: the most nodes one graph answer holds
MAX_NODES = 2_000
#: a chain walk stops here whatever the data says (the gate denies much deeper chains)
MAX_HOPS = 256

_UUID = Annotated[str | None, Query(pattern=UUID_PATTERN, max_length=36)]
_Text = Annotated[str | None, Query(max_length=512)]
_TRACE = r"^[0-9a-fA-F]{32}$"


def _when(value: str | None, name: str) -> str | None:
    """An RFC 3339 time in the records' own form (they compare as text), or None.

    Raises:
        HTTPException: 422 when ``value`` is not a time.
    """
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise HTTPException(422, f"{name} is not an RFC 3339 time: {value[:40]!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return format_time(dt)


def _unreadable(exc: Error) -> HTTPException:
    return HTTPException(503, f"{exc.reason_code}: the ledger cannot be read: {exc.message}")


def _state(effect: str | None, row: Execution | None) -> str:
    if effect != "allow":
        return "denied"
    return row.status if row is not None else "unknown"


def _resource(viewer: Viewer, resource: Any) -> str | None:
    """``Type::id`` as the console lists it, or its pseudonym (the console's, too)."""
    if isinstance(resource, dict):
        resource = f"{resource.get('type')}::{resource.get('id')}"
    if not isinstance(resource, str):
        return None
    shown = viewer.resource_of(resource) if "resource" in viewer.redact else resource
    return shown if isinstance(shown, str) else None


def _trace_id(traceparent: Any) -> str | None:
    parts = traceparent.split("-") if isinstance(traceparent, str) else []
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


class _Nodes:
    """The graph being built: nodes by execution id, in the order they were added."""

    def __init__(self, state: Any, viewer: Viewer, limit: int) -> None:
        self.ledger = state.gate.ledger
        self.viewer = viewer
        self.limit = limit
        self.nodes: dict[str, dict[str, Any]] = {}
        self.truncated = False

    @property
    def full(self) -> bool:
        return len(self.nodes) >= self.limit

    def add_row(self, row: Row) -> bool:
        """Add an indexed decision; False when the graph is full (it is then truncated)."""
        if row.id in self.nodes:
            return True
        if self.full:
            self.truncated = True
            return False
        execution = self.ledger.execution(row.id)
        self.nodes[row.id] = {
            "id": row.id,
            "index": row.index,
            "effect": row.effect,
            "state": _state(row.effect, execution),
            "principal": self.viewer.principal_of(row.principal),
            "action": row.action,
            "resource": _resource(self.viewer, row.resource),
            "code": row.code,
            "ts": row.ts,
            "trace": row.trace,
            "parent": row.parent,
            "depth": execution.depth if execution is not None else None,
        }
        return True

    def add_unindexed(self, exec_id: str) -> str | None:
        """Add an execution older than the index, from the projection and its ledger record;
        returns its parent, or None (unknown, or the graph is full)."""
        if self.full:
            self.truncated = True
            return None
        execution: Execution | None = self.ledger.execution(exec_id)
        if execution is None:
            return None
        rec, req = _record(self.ledger.entry(execution.idx))
        self.nodes[exec_id] = {
            "id": exec_id,
            "index": execution.idx,
            "effect": execution.effect,
            "state": _state(execution.effect, execution),
            "principal": self.viewer.principal_of(req.get("principal")),
            "action": req.get("action"),
            "resource": _resource(self.viewer, req.get("resource")),
            "code": _first_code(rec),
            "ts": rec.get("ts"),
            "trace": _trace_id(req.get("traceparent")),
            "parent": execution.parent,
            "depth": execution.depth,
        }
        return execution.parent


def _record(data: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """A decision record and its ``request`` part (empty when absent).

    Raises:
        ValueError: the entry is not JSON.
    """
    rec = json.loads(data)
    if not isinstance(rec, dict):
        return {}, {}
    req = rec.get("request")
    return rec, req if isinstance(req, dict) else {}


def _first_code(rec: Any) -> str | None:
    reasons = rec.get("reasons") if isinstance(rec, dict) else None
    if isinstance(reasons, list) and reasons and isinstance(reasons[0], dict):
        code = reasons[0].get("code")
        return code if isinstance(code, str) else None
    return None


def _matcher(viewer: Viewer, filters: Filters, principal: str | None) -> Any:
    """A predicate over rows. A redacted principal is matched by its pseudonym (computed once
    per distinct principal): the reader only ever sees pseudonyms."""
    if principal is None or "principal" not in viewer.redact:
        plain = Filters(
            principal=principal,
            since=filters.since,
            until=filters.until,
            trace=filters.trace,
        )
        return plain.matches
    seen: dict[str | None, bool] = {}

    def matches(row: Row) -> bool:
        if row.principal not in seen:
            seen[row.principal] = viewer.principal_of(row.principal) == principal
        return seen[row.principal] and filters.matches(row)

    return matches


def _build(
    nodes: _Nodes,
    seeds: Iterable[Row],
    children: dict[str, list[Row]],
    by_id: dict[str, Row],
    *,
    descendants: bool,
) -> None:
    for seed in seeds:
        # the seed's ancestors first (root-ward), so that a chain is whole before its leaves
        ancestors: list[Row | str] = []
        parent = seed.parent
        seen = {seed.id}
        while parent is not None and parent not in seen and len(ancestors) < MAX_HOPS:
            seen.add(parent)
            known = by_id.get(parent)
            if known is None:
                ancestors.append(parent)
                break
            ancestors.append(known)
            parent = known.parent
        for ancestor in reversed(ancestors):
            if isinstance(ancestor, Row):
                if not nodes.add_row(ancestor):
                    return
                continue
            # older than the index: follow the projection from here to the root
            older: str | None = ancestor
            hops = 0
            while older is not None and older not in nodes.nodes and hops < MAX_HOPS:
                if nodes.full:
                    nodes.truncated = True
                    return
                older = nodes.add_unindexed(older)
                hops += 1
        if not nodes.add_row(seed):
            return
        if not descendants:
            continue
        # then what descends from it, breadth first
        queue = [seed.id]
        while queue:
            level: list[str] = []
            for exec_id in queue:
                for child in children.get(exec_id, ()):
                    if child.id in nodes.nodes:
                        continue
                    if not nodes.add_row(child):
                        return
                    level.append(child.id)
            queue = level


@api.get("/graph", summary="Executions and their parent links, as a graph")
def graph(
    request: Request,
    state: StateDep,
    viewer: ViewerDep,
    principal: _Text = None,
    trace: Annotated[str | None, Query(pattern=_TRACE)] = None,
    since: Annotated[str | None, Query(max_length=64)] = None,
    until: Annotated[str | None, Query(max_length=64)] = None,
    root: _UUID = None,
    linked: bool = False,
    limit: Annotated[int, Query(ge=1, le=MAX_NODES)] = 500,
) -> JSONResponse:
    """Nodes (``id, index, effect, state, principal, action, resource, code, ts, trace,
    parent, depth``) and edges (``{source: parent, target: child}``) of the executions that
    match — by ``principal``, W3C ``trace`` id, ``since``/``until`` (RFC 3339) — each with
    its ancestors up to its root; with ``root`` instead, that execution, its ancestors and all
    that descends from it. ``linked`` keeps only matches that have a parent or a child. At most
    ``limit`` nodes, newest matches first; ``truncated`` says when more would have come.

    Raises:
        HTTPException: 404 when ``root`` is unknown; 422 for a malformed filter; 503 when the
            ledger cannot be read.
    """
    feed: DecisionFeed = request.app.state.console_feed
    filters = Filters(
        since=_when(since, "since"),
        until=_when(until, "until"),
        trace=trace.lower() if trace else None,
    )
    rows = feed.rows()
    children: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        if row.parent is not None:
            children[row.parent].append(row)
    by_id = {row.id: row for row in rows if row.id in children or row.id == root}
    nodes = _Nodes(state, viewer, limit)
    try:
        if root is not None:
            seed = by_id.get(root)
            if seed is None:
                if state.gate.ledger.execution(root) is None:
                    raise HTTPException(404, f"no execution {root}")
                nodes.add_unindexed(root)  # older than the index: the node alone
            else:
                _build(nodes, [seed], children, by_id, descendants=True)
        else:
            matches = _matcher(viewer, filters, principal or None)
            seeds = (
                row
                for row in reversed(rows)
                if matches(row) and (not linked or row.parent is not None or row.id in children)
            )
            _build(nodes, seeds, children, by_id, descendants=False)
    except Error as exc:
        raise _unreadable(exc) from None
    except ValueError:
        raise HTTPException(503, "LEDGER_CORRUPT: a decision record is not JSON") from None
    edges = [
        {"source": node["parent"], "target": node["id"]}
        for node in nodes.nodes.values()
        if node["parent"] in nodes.nodes
    ]
    return JSONResponse(
        {
            "nodes": list(nodes.nodes.values()),
            "edges": edges,
            "truncated": nodes.truncated,
            "limit": limit,
            "indexed": {"oldest": feed.oldest, "size": feed.size, "complete": feed.complete},
        },
        headers={"Cache-Control": "no-store"},
    )


@api.get("/chain/{execution_id}", summary="One execution's chain of parents, root first")
def chain(
    state: StateDep,
    viewer: ViewerDep,
    execution_id: Annotated[str, Path(pattern=UUID_PATTERN, max_length=36)],
) -> JSONResponse:
    """The hops from the root down to ``execution_id``: each with its execution ``id``,
    ledger ``index``, ``leaf_hash`` (of its decision record), ``parent`` and ``parent_leaf``
    (as its record names them), ``effect``, ``state``, ``depth``, ``principal``, ``action``,
    ``resource`` and ``ts``. ``complete`` is false when a parent is missing from the log or
    the walk stopped at 256 hops. What the server says here is a claim: prove each hop from
    its tlog-proof (``/console/api/decisions/{index}``), as the Lineage Explorer does.

    Raises:
        HTTPException: 404 for an unknown execution; 503 when the ledger cannot be read.
    """
    ledger = state.gate.ledger
    hops: list[dict[str, Any]] = []
    complete = True
    try:
        row = ledger.execution(execution_id)
        if row is None:
            raise HTTPException(404, f"no execution {execution_id}")
        seen: set[str] = set()
        while row is not None:
            seen.add(row.id)
            rec, req = _record(ledger.entry(row.idx))
            hops.append(
                {
                    "id": row.id,
                    "index": row.idx,
                    "leaf_hash": row.leaf_hash.hex(),
                    "parent": row.parent,
                    "parent_leaf": rec.get("parent_leaf"),
                    "effect": row.effect,
                    "state": _state(row.effect, row),
                    "depth": row.depth,
                    "principal": viewer.principal_of(req.get("principal")),
                    "action": req.get("action"),
                    "resource": _resource(viewer, req.get("resource")),
                    "code": _first_code(rec),
                    "ts": rec.get("ts"),
                }
            )
            if row.parent is None:
                break
            if row.parent in seen or len(hops) >= MAX_HOPS:
                complete = False
                break
            parent = ledger.execution(row.parent)
            if parent is None:
                complete = False
            row = parent
    except Error as exc:
        raise _unreadable(exc) from None
    except ValueError:
        raise HTTPException(503, "LEDGER_CORRUPT: a decision record is not JSON") from None
    hops.reverse()
    return JSONResponse(
        {"id": execution_id, "hops": hops, "complete": complete},
        headers={"Cache-Control": "no-store"},
    )
