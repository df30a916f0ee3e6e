"""The console's index of recorded decisions: what the stream, the filters and paging read.

    feed = DecisionFeed(gate.ledger)
    feed.start()                     # tails the ledger on a thread
    page = feed.query(Filters(effect="deny"), before=None, limit=50)
    feed.stop()

The ledger is the source of truth; this is a projection of it, in memory, rebuilt on every
start and never written anywhere. One thread tails the log (every ``poll_s``, 200 ms): it
first indexes the newest ``window`` entries, so the first page is ready at once however long
the log, then backfills older history newest-first while it keeps up with new entries. At most
``capacity`` decisions are kept (the newest); filters and paging reach that far back, and
:attr:`DecisionFeed.oldest` says where that is. Entries the index cannot parse are skipped and
counted (``skipped``): the ledger's own verification is what judges them.

Each row keeps what a filter needs (principal, action, resource, effect, first reason code,
stage, trace id) with repeated strings shared, about 150 bytes a decision. The detail of one
decision is read from the ledger itself, by index (:mod:`.api`).
"""

from __future__ import annotations

import bisect
import json
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from interlock.errors import Error

if TYPE_CHECKING:
    from interlock.ledger.protocols import LogReader

__all__ = ["DecisionFeed", "Filters", "Row"]

_log = logging.getLogger("interlock.server")

DEFAULT_CAPACITY = 500_000
DEFAULT_WINDOW = 2_000
CHUNK = 2_048


@dataclass(frozen=True, slots=True)
class Row:
    """One recorded decision as the console lists it."""

    index: int
    ts: str
    id: str
    principal: str | None
    action: str | None
    resource: str | None
    effect: str
    code: str | None
    stage: str
    trace: str | None
    parent: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "ts": self.ts,
            "id": self.id,
            "principal": self.principal,
            "action": self.action,
            "resource": self.resource,
            "effect": self.effect,
            "code": self.code,
            "stage": self.stage,
            "trace": self.trace,
            "parent": self.parent,
        }


@dataclass(frozen=True, slots=True)
class Filters:
    """What the console filters on; ``None`` matches anything. Times are RFC 3339 strings in
    the records' own form (``2026-12-03T09:30:00.000000Z``), compared as text."""

    principal: str | None = None
    action: str | None = None
    effect: str | None = None
    code: str | None = None
    since: str | None = None
    until: str | None = None
    trace: str | None = None

    def matches(self, row: Row) -> bool:
        return (
            (self.principal is None or row.principal == self.principal)
            and (self.action is None or row.action == self.action)
            and (self.effect is None or row.effect == self.effect)
            and (self.code is None or row.code == self.code)
            and (self.since is None or row.ts >= self.since)
            and (self.until is None or row.ts < self.until)
            and (self.trace is None or row.trace == self.trace)
        )


def _trace_id(traceparent: Any) -> str | None:
    # W3C traceparent: version-traceid-parentid-flags
    if not isinstance(traceparent, str):
        return None
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


class DecisionFeed:
    """An in-memory, tailing index of the decisions on one ledger."""

    def __init__(
        self,
        ledger: LogReader,
        *,
        capacity: int = DEFAULT_CAPACITY,
        window: int = DEFAULT_WINDOW,
        poll_s: float = 0.2,
    ) -> None:
        if capacity < 1 or window < 1 or poll_s <= 0:
            raise ValueError("capacity and window must be >= 1 and poll_s > 0")
        self._ledger = ledger
        self.capacity = capacity
        self._window = window
        self._poll_s = poll_s
        self._rows: list[Row] = []  # in index order
        self._keys: list[int] = []  # their indexes, for bisect
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._strings: dict[str, str] = {}
        #: the next ledger index to read going forward; the lowest index read going backward
        self._head = 0
        self._low = 0
        self.skipped = 0
        self.problem: str | None = None
        #: governance records (index, parsed record) in index order: few, kept whole
        self._governance: list[tuple[int, dict[str, Any]]] = []
        self.changed = threading.Condition(self._lock)

    # -- reading --------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Ledger entries read so far going forward (the index covers ``oldest``..size-1)."""
        with self._lock:
            return self._head

    @property
    def oldest(self) -> int:
        """The lowest ledger index the index covers (0 once history is fully loaded)."""
        with self._lock:
            return self._low

    @property
    def complete(self) -> bool:
        """True when every decision back to index 0 (or to ``capacity``) is indexed."""
        with self._lock:
            return self._low == 0 or len(self._rows) >= self.capacity

    def query(
        self, filters: Filters, *, before: int | None = None, limit: int = 50
    ) -> tuple[list[Row], int | None]:
        """Up to ``limit`` matching rows below ledger index ``before``, newest first, and the
        ``before`` of the next page (None when there is none)."""
        with self._lock:
            end = len(self._keys) if before is None else bisect.bisect_left(self._keys, before)
            rows = self._rows
            out: list[Row] = []
            i = end - 1
            while i >= 0 and len(out) < limit:
                row = rows[i]
                if filters.matches(row):
                    out.append(row)
                i -= 1
            more = any(filters.matches(rows[j]) for j in range(i, -1, -1)) if i >= 0 else False
        return out, (out[-1].index if out and more else None)

    def after(self, index: int, filters: Filters, limit: int = 1_000) -> tuple[list[Row], int]:
        """Matching rows above ledger index ``index`` (oldest first) and the new cursor: the
        stream's read. The cursor moves past rows that did not match, too."""
        with self._lock:
            start = bisect.bisect_right(self._keys, index)
            rows = self._rows[start : start + limit]
            cursor = rows[-1].index if rows else max(index, self._head - 1)
        return [r for r in rows if filters.matches(r)], cursor

    def governance(self, event_prefix: str = "") -> list[tuple[int, dict[str, Any]]]:
        """The indexed governance records whose event starts with ``event_prefix``, in index
        order (the newest ``capacity`` of them)."""
        with self._lock:
            return [
                g for g in self._governance if str(g[1].get("event", "")).startswith(event_prefix)
            ]

    def rows(self) -> list[Row]:
        """Every indexed row, in index order (a copy)."""
        with self._lock:
            return list(self._rows)

    def wait(self, timeout: float) -> None:
        """Block until the index changes or ``timeout`` passes."""
        with self.changed:
            self.changed.wait(timeout)

    # -- the tailing thread ---------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="console-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5)

    def poll_once(self) -> None:
        """Read what is new, then one chunk of older history. Raises interlock Errors."""
        size = self._ledger.size()
        with self._lock:
            first = self._head == 0 and self._low == 0 and not self._rows
        if first and size > self._window:
            with self._lock:
                self._head = self._low = size - self._window
        head = self.size
        if size > head:
            self._forward(head, size)
        self._backfill()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
                self.problem = None
            except Error as exc:
                # the console shows it; the gate's own checks are what deny
                self.problem = exc.message
            except Exception as exc:  # noqa: BLE001 - a projection never takes the server down
                self.problem = f"{type(exc).__name__}"
                _log.exception("console feed: unexpected error")
            self._stop.wait(self._poll_s)

    def _forward(self, start: int, end: int) -> None:
        for chunk in self._ledger.iter_entry_chunks(start, end, chunk=CHUNK):
            gov: list[tuple[int, dict[str, Any]]] = []
            rows = list(self._parse(chunk, gov))
            with self.changed:
                self._rows.extend(rows)
                self._keys.extend(r.index for r in rows)
                self._governance.extend(gov)
                self._head = chunk[-1][0] + 1 if chunk else self._head
                self._trim()
                self.changed.notify_all()

    def _backfill(self) -> None:
        with self._lock:
            low = self._low
            full = len(self._rows) >= self.capacity
        if low == 0 or full:
            return
        start = max(0, low - CHUNK)
        rows: list[Row] = []
        gov: list[tuple[int, dict[str, Any]]] = []
        for chunk in self._ledger.iter_entry_chunks(start, low, chunk=CHUNK):
            rows.extend(self._parse(chunk, gov))
        with self.changed:
            self._rows[:0] = rows
            self._keys[:0] = [r.index for r in rows]
            self._governance[:0] = gov
            self._low = start
            self._trim()
            self.changed.notify_all()

    def _trim(self) -> None:
        excess = len(self._rows) - self.capacity
        if excess > 0:
            del self._rows[:excess]
            del self._keys[:excess]
            self._low = self._keys[0] if self._keys else self._head
        if len(self._governance) > self.capacity:
            del self._governance[: len(self._governance) - self.capacity]

    def _s(self, value: Any) -> str | None:
        if not isinstance(value, str):
            return None
        return self._strings.setdefault(value, value) if len(self._strings) < 100_000 else value

    def _parse(
        self, chunk: Iterable[tuple[int, bytes, bytes]], gov: list[tuple[int, dict[str, Any]]]
    ) -> Iterable[Row]:
        s = self._s
        for index, _leaf, data in chunk:
            try:
                rec = json.loads(data)
                if rec.get("type") == "governance":
                    gov.append((index, rec))
                    continue
                if rec.get("type") != "decision":
                    continue
                req = rec.get("request") or {}
                res = req.get("resource")
                resource = f"{res.get('type')}::{res.get('id')}" if isinstance(res, dict) else None
                reasons = rec.get("reasons") or []
                code = reasons[0].get("code") if reasons and isinstance(reasons[0], dict) else None
                yield Row(
                    index=index,
                    ts=str(rec.get("ts", "")),
                    id=str(rec.get("id", "")),
                    principal=s(req.get("principal")),
                    action=s(req.get("action")),
                    resource=s(resource),
                    effect=s(rec.get("effect")) or "deny",
                    code=s(code),
                    stage=s(rec.get("stage")) or "",
                    trace=_trace_id(req.get("traceparent")),
                    parent=rec.get("parent") if isinstance(rec.get("parent"), str) else None,
                )
            except (ValueError, AttributeError, TypeError):
                self.skipped += 1
