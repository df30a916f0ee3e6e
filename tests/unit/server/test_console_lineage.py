"""The Lineage Explorer's data routes on a real gate: the graph by principal, trace, time,
root and its bound; one execution's chain with its leaf hashes and links; redaction."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

import pytest
from starlette.testclient import TestClient

from interlock.core.model import RecordType
from interlock.gate import Gate
from interlock.ledger import merkle
from interlock.server import create_app
from interlock.server.console.session import ConsoleConfig
from tests.conftest import RESEARCHER, SUMMARIZER, tool_request

OPS = "spiffe://acme.test/human/ops"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
OTHER_TRACE = "0af7651916cd43dd8448eb211c80319c"
START = {"supervisor": "test", "interval_ms": 1000}


def _tp(trace: str) -> str:
    return f"00-{trace}-00f067aa0ba902b7-01"


@dataclass
class Tree:
    """root ─┬─ child ── grandchild          (running, running, allowed)
             ├─ denied                         (POLICY_FORBID)
             ├─ ended
             └─ killed                         (terminated)
    lone: a decision with no parent, on another trace."""

    root: str
    child: str
    grandchild: str
    denied: str
    ended: str
    killed: str
    lone: str

    def states(self) -> dict[str, str]:
        return {
            self.root: "running",
            self.child: "running",
            self.grandchild: "allowed",
            self.denied: "denied",
            self.ended: "ended",
            self.killed: "terminated",
        }


def _admit(gate: Gate, request: dict[str, Any]) -> str:
    decision, admitted = gate.admit(request, start=START)
    assert decision.allowed and admitted is not None, decision.to_json()
    return admitted.id


@pytest.fixture
def tree(gate: Gate, issue: Any) -> Tree:
    lead, sub = issue(RESEARCHER), issue(SUMMARIZER)
    tp = _tp(TRACE)
    root = _admit(gate, tool_request(lead, traceparent=tp))
    child = _admit(gate, tool_request(sub, principal=SUMMARIZER, parent=root, traceparent=tp))
    grandchild = gate.decide(tool_request(sub, principal=SUMMARIZER, parent=child, traceparent=tp))
    denied = gate.decide(
        tool_request(sub, "delete_database", principal=SUMMARIZER, parent=root, traceparent=tp)
    )
    assert grandchild.allowed and not denied.allowed
    ended = _admit(gate, tool_request(sub, principal=SUMMARIZER, parent=root, traceparent=tp))
    gate.record_execution(RecordType.EXEC_END, ended, {"exit_status": 0}, status="ended")
    killed = _admit(gate, tool_request(sub, principal=SUMMARIZER, parent=root, traceparent=tp))
    reason = {"code": "CAPABILITY_REVOKED", "detail": "test"}
    gate.record_execution(
        RecordType.EXEC_TERMINATED, killed, {"reason": reason}, status="terminated"
    )
    lone = gate.decide(tool_request(lead, "read_file", traceparent=_tp(OTHER_TRACE)))
    return Tree(
        root=root,
        child=child,
        grandchild=grandchild.request_id,
        denied=denied.request_id,
        ended=ended,
        killed=killed,
        lone=lone.request_id,
    )


def _client(
    gate: Gate, issue: Any, console: ConsoleConfig | None = None, capacity: int = 10_000
) -> TestClient:
    """A client of the app, signed in unless public. Its lifespan does not run (no
    verifier to touch the running executions): the log is indexed once, here."""
    app = create_app(gate, console=console, console_capacity=capacity)
    app.state.console_feed.poll_once()
    client = TestClient(app, base_url="http://localhost")
    if console is None or not console.public:
        token = issue(OPS, "admin:Admin::read")
        r = client.post("/console/api/session", json={"token": token})
        assert r.status_code == 200, r.text
    return client


@pytest.fixture
def client(gate: Gate, issue: Any, tree: Tree) -> TestClient:
    return _client(gate, issue)


def _graph(client: TestClient, **params: Any) -> dict[str, Any]:
    r = client.get("/console/api/lineage/graph", params=params)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def _edges(out: dict[str, Any]) -> set[tuple[str, str]]:
    return {(e["source"], e["target"]) for e in out["edges"]}


def test_a_principal_search_shows_its_executions_with_their_ancestors(
    client: TestClient, tree: Tree
) -> None:
    out = _graph(client, principal=SUMMARIZER)
    states = {n["id"]: n["state"] for n in out["nodes"]}
    # every summarizer execution, and the researcher's root they descend from
    assert states == tree.states()
    assert _edges(out) == {
        (tree.root, tree.child),
        (tree.child, tree.grandchild),
        (tree.root, tree.denied),
        (tree.root, tree.ended),
        (tree.root, tree.killed),
    }
    assert out["truncated"] is False
    by_id = {n["id"]: n for n in out["nodes"]}
    gc = by_id[tree.grandchild]
    assert gc["principal"] == SUMMARIZER and gc["action"] == "tool.call"
    assert gc["resource"] == "Tool::web_search" and gc["trace"] == TRACE
    assert gc["depth"] == 2 and gc["parent"] == tree.child and gc["effect"] == "allow"
    assert by_id[tree.denied]["code"] == "POLICY_FORBID"
    assert by_id[tree.root]["principal"] == RESEARCHER and by_id[tree.root]["depth"] == 0
    # the ledger index of each node holds that execution's decision
    gate: Gate = client.app.state.interlock.gate  # type: ignore[attr-defined]
    for node in out["nodes"]:
        rec = json.loads(gate.ledger.entry(node["index"]))
        assert rec["type"] == "decision" and rec["id"] == node["id"]


def test_a_trace_search_shows_that_trace_only(client: TestClient, tree: Tree) -> None:
    out = _graph(client, trace=TRACE.upper())
    assert {n["id"] for n in out["nodes"]} == set(tree.states())
    out = _graph(client, trace=OTHER_TRACE)
    assert [n["id"] for n in out["nodes"]] == [tree.lone]
    assert out["edges"] == []


def test_a_root_shows_what_descends_from_it(client: TestClient, tree: Tree) -> None:
    out = _graph(client, root=tree.child)
    assert {n["id"] for n in out["nodes"]} == {tree.root, tree.child, tree.grandchild}
    assert _edges(out) == {(tree.root, tree.child), (tree.child, tree.grandchild)}
    out = _graph(client, root=tree.root)
    assert {n["id"] for n in out["nodes"]} == set(tree.states())


def test_linked_leaves_out_executions_without_parent_or_child(
    client: TestClient, tree: Tree
) -> None:
    assert tree.lone in {n["id"] for n in _graph(client)["nodes"]}
    assert {n["id"] for n in _graph(client, linked="true")["nodes"]} == set(tree.states())


def test_a_time_range_selects_by_decision_time(client: TestClient, tree: Tree) -> None:
    nodes = {n["id"]: n for n in _graph(client)["nodes"]}
    ts = nodes[tree.lone]["ts"]
    out = _graph(client, since=ts)
    assert [n["id"] for n in out["nodes"]] == [tree.lone]
    out = _graph(client, until=nodes[tree.child]["ts"])  # until is exclusive
    assert [n["id"] for n in out["nodes"]] == [tree.root]
    # a match hangs from its root: the grandchild's ancestors come with it
    window = _graph(client, since=nodes[tree.grandchild]["ts"], until=nodes[tree.denied]["ts"])
    assert [n["id"] for n in window["nodes"]] == [tree.root, tree.child, tree.grandchild]
    assert _graph(client, since="2999-01-01T00:00:00Z")["nodes"] == []


def test_the_graph_is_bounded_and_says_so(client: TestClient, tree: Tree) -> None:
    out = _graph(client, principal=SUMMARIZER, limit=2)
    assert len(out["nodes"]) == 2 and out["truncated"] is True
    assert out["limit"] == 2
    full = _graph(client, principal=SUMMARIZER, limit=len(tree.states()))
    assert full["truncated"] is False
    for bad in ({"limit": 0}, {"limit": 2001}, {"principal": "x" * 513}):
        assert client.get("/console/api/lineage/graph", params=bad).status_code == 422


@pytest.mark.parametrize(
    "params",
    [
        {"trace": "not-a-trace"},
        {"trace": "4bf92f3577b34da6a3ce929d0e0e473"},
        {"since": "yesterday"},
        {"until": "x" * 65},
        {"root": "nope"},
        {"root": "0190B3F6-7A1C-7000-8000-000000000000"},
    ],
)
def test_malformed_filters_are_refused(client: TestClient, params: dict[str, str]) -> None:
    r = client.get("/console/api/lineage/graph", params=params)
    assert r.status_code == 422
    assert "detail" in r.json()


def test_unknown_executions_are_404(client: TestClient) -> None:
    unknown = "0190b3f6-7a1c-7000-8000-000000000000"
    r = client.get("/console/api/lineage/graph", params={"root": unknown})
    assert r.status_code == 404 and unknown in r.json()["detail"]
    assert client.get(f"/console/api/lineage/chain/{unknown}").status_code == 404
    assert client.get("/console/api/lineage/chain/nope").status_code == 422


def test_a_chain_runs_from_the_root_with_each_hops_leaf_and_link(
    client: TestClient, tree: Tree
) -> None:
    r = client.get(f"/console/api/lineage/chain/{tree.grandchild}")
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["id"] == tree.grandchild and out["complete"] is True
    hops = out["hops"]
    assert [h["id"] for h in hops] == [tree.root, tree.child, tree.grandchild]
    assert [h["state"] for h in hops] == ["running", "running", "allowed"]
    assert [h["depth"] for h in hops] == [0, 1, 2]
    assert [h["principal"] for h in hops] == [RESEARCHER, SUMMARIZER, SUMMARIZER]
    gate: Gate = client.app.state.interlock.gate  # type: ignore[attr-defined]
    for hop in hops:
        data = gate.ledger.entry(hop["index"])
        assert merkle.leaf_hash(data).hex() == hop["leaf_hash"]
        assert json.loads(data)["id"] == hop["id"]
    assert hops[0]["parent"] is None and hops[0]["parent_leaf"] is None
    for parent, child in itertools.pairwise(hops):
        assert child["parent"] == parent["id"]
        assert child["parent_leaf"] == parent["leaf_hash"]
    denied = client.get(f"/console/api/lineage/chain/{tree.denied}").json()["hops"]
    assert [h["state"] for h in denied] == ["running", "denied"]
    assert denied[1]["code"] == "POLICY_FORBID" and denied[1]["parent_leaf"] == hops[0]["leaf_hash"]


def test_reading_needs_a_session(gate: Gate, issue: Any, tree: Tree) -> None:
    anonymous = TestClient(create_app(gate), base_url="http://localhost")
    assert anonymous.get("/console/api/lineage/graph").status_code == 401
    assert anonymous.get(f"/console/api/lineage/chain/{tree.root}").status_code == 401


def test_public_mode_redacts_principals_and_matches_their_pseudonyms(
    gate: Gate, issue: Any, tree: Tree
) -> None:
    console = ConsoleConfig(public=True, redact=frozenset({"principal", "resource"}))
    client = _client(gate, issue, console)
    out = _graph(client, root=tree.root)
    text = json.dumps(out)
    assert SUMMARIZER not in text and RESEARCHER not in text and "web_search" not in text
    by_id = {n["id"]: n for n in out["nodes"]}
    alias = by_id[tree.child]["principal"]
    assert alias.startswith("principal:") and alias == by_id[tree.grandchild]["principal"]
    assert by_id[tree.child]["resource"].startswith("resource:")  # as the console shows it
    found = _graph(client, principal=alias)
    assert {n["id"] for n in found["nodes"]} == set(tree.states())
    assert _graph(client, principal=SUMMARIZER)["nodes"] == []  # the name finds nothing
    hops = client.get(f"/console/api/lineage/chain/{tree.grandchild}").json()["hops"]
    assert [h["principal"] for h in hops] == [by_id[tree.root]["principal"], alias, alias]
    assert hops[1]["resource"] == by_id[tree.child]["resource"]
    assert SUMMARIZER not in json.dumps(hops)


def test_an_ancestor_older_than_the_index_is_read_from_the_ledger(
    gate: Gate, issue: Any, tree: Tree
) -> None:
    # an index of the newest two decisions (killed, lone): the root is older than that
    client = _client(gate, issue, capacity=2)
    out = _graph(client, trace=TRACE)
    assert [n["id"] for n in out["nodes"]] == [tree.root, tree.killed]
    assert _edges(out) == {(tree.root, tree.killed)}
    root = out["nodes"][0]
    assert root["state"] == "running" and root["principal"] == RESEARCHER
    assert root["resource"] == "Tool::web_search" and root["trace"] == TRACE
    out = _graph(client, root=tree.child)  # not indexed at all: the node alone
    assert [n["id"] for n in out["nodes"]] == [tree.child]


def test_each_hops_evidence_comes_from_the_decision_detail(client: TestClient, tree: Tree) -> None:
    """The page proves a hop from ``/console/api/decisions/{index}``: a child's too."""
    from interlock.ledger.proof import parse_proof

    hops = client.get(f"/console/api/lineage/chain/{tree.grandchild}").json()["hops"]
    for hop in hops:
        r = client.get(f"/console/api/decisions/{hop['index']}")
        assert r.status_code == 200, r.text
        detail = r.json()
        assert detail["leaf_hash"] == hop["leaf_hash"] and detail["vkey"]
        assert parse_proof(detail["proof"]).index == hop["index"]
    assert [p["id"] for p in detail["lineage"]] == [tree.child, tree.root]
