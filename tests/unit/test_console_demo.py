"""The Runtime Governance Demo's routes: each switch breaks its throwaway home for real and the
gate says so with its code; nothing runs on a deny; the bounds hold; the node's own home is
never touched; every demo home is removed when the app stops."""

from __future__ import annotations

import hashlib
import os
import stat
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from interlock.audit import open_for_audit
from interlock.core.model import Decision, Effect, Reason, ReasonCode, Stage
from interlock.gate import Gate
from interlock.server import create_app
from interlock.server.console import demo
from interlock.server.console.sandbox import SCENARIOS, stages_of

BASE = "/console/api/demo"


@pytest.fixture
def node(home: Path) -> Iterator[Gate]:
    """The serving node: a real home with a gate open on it."""
    with Gate.open(home) as gate:
        yield gate


@pytest.fixture
def client(node: Gate) -> Iterator[TestClient]:
    """The app on that node, its lifespan running (its shutdown calls ``close_all``)."""
    with TestClient(create_app(node), base_url="http://localhost") as c:
        yield c


def _new(client: TestClient) -> str:
    r = client.post(f"{BASE}/sessions", json={})
    assert r.status_code == 201, r.text
    sid: str = r.json()["id"]
    return sid


def _run(client: TestClient, sid: str, scenario: str = "allowed", **switches: bool) -> Any:
    r = client.post(
        f"{BASE}/sessions/{sid}/runs", json={"scenario": scenario, "switches": switches}
    )
    assert r.status_code == 200, r.text
    return r.json()


def _homes(client: TestClient) -> demo.DemoHomes:
    return demo.homes_of(typing.cast(Any, client.app))


def _status(trace: Any) -> dict[str, str]:
    return {s["id"]: s["status"] for s in trace["stages"]}


def _node_files(home: Path) -> dict[str, str]:
    """Every file of the node's home by path, with its digest (the ledger files by name only:
    the node's own checks may rewrite their pages; their entries are counted instead)."""
    out = {}
    for path in sorted(home.rglob("*")):
        if path.is_file():
            rel = path.relative_to(home).as_posix()
            ledger = rel.startswith("ledger.db")
            out[rel] = "" if ledger else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def test_the_scenarios_switches_and_stages_are_listed_without_a_credential(
    client: TestClient,
) -> None:
    r = client.get(f"{BASE}/scenarios")
    assert r.status_code == 200
    body = r.json()
    assert [s["id"] for s in body["scenarios"]] == list(SCENARIOS)
    assert set(typing.get_args(demo.ScenarioId)) == set(SCENARIOS)
    assert [s["id"] for s in body["switches"]] == [
        "revoke",
        "stale_policy",
        "locked_ledger",
        "changed_config",
    ]
    assert [s["id"] for s in body["stages"]] == [
        "intake",
        "capability",
        "environment",
        "lineage",
        "policy",
        "cedar",
        "record",
    ]


def test_the_allowed_path_executes_once_and_is_recorded_in_the_demo_home(
    client: TestClient,
) -> None:
    sid = _new(client)
    sandbox = _homes(client).use(sid).sandbox
    assert stat.S_IMODE(os.stat(sandbox.root).st_mode) == 0o700
    trace = _run(client, sid)
    assert trace["decision"]["effect"] == "allow"
    assert set(_status(trace).values()) == {"passed"}
    assert trace["executed"] is True
    assert trace["execution_status"] == "ended"
    assert sandbox.executions == 1
    index = trace["decision"]["ledger_index"]
    with open_for_audit(sandbox.home) as view:
        entry = view.ledger.entry(index)
    assert trace["decision"]["request_id"].encode() in entry
    assert b'"effect":"allow"' in entry
    assert trace["request"]["capability"] == "tool.call:Tool::*, 5 min"  # never the token


@pytest.mark.parametrize(
    ("switch", "code", "stage"),
    [
        ("revoke", "CAPABILITY_REVOKED", "capability"),
        ("stale_policy", "POLICY_UNAVAILABLE", "policy"),
        ("locked_ledger", "LEDGER_UNAVAILABLE", "record"),
        ("changed_config", "ENVIRONMENT_UNTRUSTED", "environment"),
    ],
)
def test_each_switch_denies_with_its_code_and_nothing_runs(
    client: TestClient, switch: str, code: str, stage: str
) -> None:
    sid = _new(client)
    sandbox = _homes(client).use(sid).sandbox
    trace = _run(client, sid, **{switch: True})
    assert trace["decision"]["effect"] == "deny"
    assert [r["code"] for r in trace["decision"]["reasons"]] == [code]
    assert trace["executed"] is False
    assert trace["output"] is None
    assert sandbox.executions == 0
    status = _status(trace)
    assert status[stage] == "denied"
    denied = next(s for s in trace["stages"] if s["id"] == stage)
    assert denied["code"] == code
    order = list(status)
    assert all(status[s] == "passed" for s in order[: order.index(stage)])
    if switch == "locked_ledger":
        assert trace["decision"]["ledger_index"] is None
        assert trace["decision"]["recorded"] is False
        assert "not recorded" in denied["detail"]
    else:
        assert all(status[s] == "not_reached" for s in order[order.index(stage) + 1 : -1])
        assert status["record"] == "passed"
        assert trace["decision"]["ledger_index"] is not None
        assert trace["execution_status"] == "denied"
    assert trace["setup"]  # it says what it broke
    # the switch is undone: the same request, unbroken, is allowed again and runs
    again = _run(client, sid)
    assert again["decision"]["effect"] == "allow"
    assert sandbox.executions == 1


def test_the_scenarios_give_their_expected_answers(client: TestClient) -> None:
    sid = _new(client)
    for scenario, spec in SCENARIOS.items():
        trace = _run(client, sid, scenario)
        got = trace["decision"]["effect"]
        if got == "deny":
            got = trace["decision"]["reasons"][0]["code"]
        assert got == spec.expected, scenario
        assert trace["executed"] is (got == "allow")


def test_a_demo_run_never_touches_the_nodes_home(client: TestClient, node: Gate) -> None:
    before, size = _node_files(node.home.path), node.ledger.size()
    sid = _new(client)
    sandbox = _homes(client).use(sid).sandbox
    assert not sandbox.root.resolve().is_relative_to(node.home.path.resolve())
    _run(client, sid)
    for switch in ("revoke", "stale_policy", "locked_ledger", "changed_config"):
        _run(client, sid, **{switch: True})
    assert client.post(f"{BASE}/sessions/{sid}/reset", json={}).status_code == 200
    assert client.delete(f"{BASE}/sessions/{sid}").status_code == 204
    assert node.ledger.size() == size
    assert _node_files(node.home.path) == before


def test_a_fifth_home_is_refused_until_one_has_been_idle(client: TestClient) -> None:
    ids = [_new(client) for _ in range(demo.MAX_HOMES)]
    r = client.post(f"{BASE}/sessions", json={})
    assert r.status_code == 429
    assert f"at most {demo.MAX_HOMES} throwaway homes" in r.json()["detail"]
    homes = _homes(client)
    assert len(homes) == demo.MAX_HOMES
    # the least recently used home, idle long enough, makes way for a new one
    oldest = homes.use(ids[1])
    oldest.last_used -= demo.EVICT_IDLE_S + 1
    root = oldest.sandbox.root
    assert client.post(f"{BASE}/sessions", json={}).status_code == 201
    assert not root.exists()
    r = client.post(f"{BASE}/sessions/{ids[1]}/runs", json={"scenario": "allowed"})
    assert r.status_code == 404
    assert "no such demo session" in r.json()["detail"]


def test_an_idle_home_is_removed(client: TestClient) -> None:
    sid = _new(client)
    homes = _homes(client)
    session = homes.use(sid)
    assert homes.sweep() == []
    session.last_used -= demo.IDLE_S + 1
    assert homes.sweep() == [sid]
    assert not session.sandbox.root.exists()
    assert client.post(f"{BASE}/sessions/{sid}/reset", json={}).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"scenario": "rm-rf"},
        {},
        {"scenario": "allowed", "sudo": True},
        {"scenario": "allowed", "switches": {"revoke": "yes"}},
        {"scenario": "allowed", "switches": {"revoke": 1}},
        {"scenario": "allowed", "switches": {"kill_switch": True}},
        {"scenario": ["allowed"]},
    ],
)
def test_bad_run_bodies_are_refused(client: TestClient, body: Any) -> None:
    sid = _new(client)
    r = client.post(f"{BASE}/sessions/{sid}/runs", json=body)
    assert r.status_code == 422, r.text
    assert _homes(client).use(sid).sandbox.executions == 0


def test_bad_requests_get_a_clear_4xx(client: TestClient) -> None:
    assert client.post(f"{BASE}/sessions", json={"home": "/etc"}).status_code == 422
    r = client.post(f"{BASE}/sessions", content=b"{}", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    unknown = "A" * 32
    for method, path in [
        ("POST", f"{BASE}/sessions/{unknown}/runs"),
        ("POST", f"{BASE}/sessions/{unknown}/reset"),
        ("DELETE", f"{BASE}/sessions/{unknown}"),
    ]:
        body = {"scenario": "allowed"} if path.endswith("runs") else {}
        r = client.request(method, path, json=None if method == "DELETE" else body)
        assert r.status_code == 404, (method, path, r.text)
        assert "no such demo session" in r.json()["detail"]
    for bad in ("short", "../../etc/passwd", "A" * 33):
        r = client.post(f"{BASE}/sessions/{bad}/runs", json={"scenario": "allowed"})
        assert r.status_code in (404, 422), bad
    assert len(_homes(client)) == 0


def test_requests_are_rate_bounded_per_session(client: TestClient) -> None:
    sid = _new(client)
    codes = []
    for _ in range(demo.RUN_BURST * 4):
        r = client.post(f"{BASE}/sessions/{sid}/runs", json={"scenario": "malformed"})
        codes.append(r.status_code)
        if r.status_code == 429:
            assert "too many demo requests" in r.json()["detail"]
            assert int(r.headers["Retry-After"]) >= 1
            break
    assert codes[-1] == 429
    assert codes[: demo.RUN_BURST] == [200] * demo.RUN_BURST
    # another session has its own budget
    assert _run(client, _new(client), "malformed")["executed"] is False


def test_close_all_removes_every_demo_home(node: Gate) -> None:
    app = create_app(node)
    with TestClient(app, base_url="http://localhost") as c:
        roots = [demo.homes_of(app).use(_new(c)).sandbox.root for _ in range(2)]
        assert all(r.is_dir() for r in roots)
    assert not any(r.exists() for r in roots)
    demo.close_all(app)  # twice is harmless


def _decision(*reasons: Reason, index: int | None, stage: Stage, snapshot: str = "s") -> Decision:
    return Decision(
        request_id="r",
        effect=Effect.DENY,
        reasons=reasons,
        snapshot=snapshot,
        decision_hash="h",
        ledger_index=index,
        stage=stage,
    )


def test_stages_of_a_denial_before_intake_reach_nothing_else() -> None:
    stale = Reason(code=ReasonCode.POLICY_STALE, detail="lease lost")
    out = {
        s["id"]: s["status"]
        for s in stages_of(_decision(stale, index=None, stage=Stage.GATE, snapshot=""))
    }
    assert out.pop("policy") == "denied"
    assert set(out.values()) == {"not_reached"}


def test_stages_of_a_deadline_do_not_claim_what_passed() -> None:
    late = Reason(code=ReasonCode.DEADLINE_EXCEEDED, detail="too slow")
    out = stages_of(_decision(late, index=9, stage=Stage.GATE))
    assert [s["status"] for s in out] == ["unknown"] * 6 + ["denied"]
    assert out[-1]["code"] == "DEADLINE_EXCEEDED"


def test_stages_of_a_schema_mismatch_point_at_the_policy() -> None:
    bad = Reason(code=ReasonCode.MALFORMED_REQUEST, detail="args.n is not a Long")
    out = {s["id"]: s["status"] for s in stages_of(_decision(bad, index=3, stage=Stage.PIPELINE))}
    assert out["cedar"] == "denied"
    assert out["intake"] == "passed"
    assert out["record"] == "passed"
