"""The HTTP API (issue 4 §4) served by a real uvicorn on a loopback port, spoken to with httpx:
decisions recorded before the answer, malformed and oversized requests recorded as denies,
executions, lineage, the ledger and its C2SP tiles (read by the independent ``tlog_scales``
client), readiness, metrics, and admin endpoints that change nothing without an admin
capability."""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import json
import os
import shutil
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tlog_scales.backend import HttpBackend
from tlog_scales.reader import TilesReader

from interlock.capability import CapabilityIssuer, Right, attenuate, revocation_ids
from interlock.core.model import MAX_REQUEST_BYTES
from interlock.errors import LedgerUnavailable
from interlock.gate import Gate
from interlock.home import Home
from interlock.ledger import merkle
from interlock.ledger.note import open_checkpoint
from interlock.ledger.tiles import decode_entry_bundle
from interlock.policy.bundle import PolicyBundle, load_bundle, sign_bundle
from interlock.server import create_app
from interlock.server.routes.ledger import parse_tile_path
from interlock.trust import keys
from interlock.trust.approval import make_approval
from interlock.trust.keys import private_raw
from tests.conftest import RESEARCHER, SUMMARIZER, edit_config, tool_request

ADMIN = "spiffe://acme.test/human/ops"
JSON = {"Content-Type": "application/json"}


@contextlib.contextmanager
def live_server(gate: Gate, **options: Any) -> Iterator[str]:
    """Serve ``create_app(gate, **options)`` with uvicorn on a free loopback port, in a
    thread (its lifespan runs: the execution verifier is started and stopped)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = create_app(gate, **options)
    config = uvicorn.Config(app, log_level="warning", ws="none", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()


@dataclass
class Api:
    gate: Gate
    url: str
    http: httpx.Client

    def decide(self, body: Any) -> httpx.Response:
        if isinstance(body, bytes):
            return self.http.post("/v1/decisions", content=body, headers=JSON)
        return self.http.post("/v1/decisions", json=body)

    def record(self, index: int) -> dict[str, Any]:
        rec: dict[str, Any] = json.loads(self.gate.ledger.entry(index))
        return rec


@contextlib.contextmanager
def serving(home: Path, **options: Any) -> Iterator[Api]:
    with (
        Gate.open(home) as gate,
        live_server(gate, **options) as url,
        httpx.Client(base_url=url, timeout=30) as http,
    ):
        yield Api(gate=gate, url=url, http=http)


@pytest.fixture
def api(home: Path) -> Iterator[Api]:
    with serving(home) as a:
        yield a


def _raw_status(url: str, request: bytes) -> int:
    """Send raw bytes, return the response's status code."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(request)
        head = conn.recv(4096)
    return int(head.split(b" ", 2)[1])


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- decisions ---------------------------------------------------------------------------------


def test_an_allow_is_on_the_ledger_before_the_answer(api: Api, issue: Any) -> None:
    r = api.decide(tool_request(issue()))
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["effect"] == "allow" and d["reasons"] == [] and d["stage"] == "pipeline"
    data = api.gate.ledger.entry(d["ledger_index"])
    assert hashlib.sha256(data).hexdigest() == d["decision_hash"]
    rec = json.loads(data)
    assert rec["id"] == d["request_id"] and rec["effect"] == "allow"
    # and it is served back byte for byte
    e = api.http.get(f"/v1/ledger/entries/{d['ledger_index']}").json()
    assert base64.b64decode(e["data"]) == data
    assert e["leaf_hash"] == merkle.leaf_hash(data).hex()
    assert e["record"]["id"] == d["request_id"]


def test_a_policy_deny_is_200_with_its_reason_and_recorded(api: Api, issue: Any) -> None:
    r = api.decide(tool_request(issue(), tool="delete_database"))
    assert r.status_code == 200
    d = r.json()
    assert d["effect"] == "deny"
    assert [x["code"] for x in d["reasons"]] == ["POLICY_FORBID"]
    assert api.record(d["ledger_index"])["reasons"][0]["code"] == "POLICY_FORBID"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{not json",
        b"[]",
        b'"a string"',
        b"\xff\xfe",
        b'{"principal": "spiffe://acme.test/agent/researcher"}',
        b'{"principal": 1, "action": "tool.call", "resource": {"type": "Tool", "id": "x"}}',
        json.dumps({**tool_request("tok"), "surprise": True}).encode(),
        b'{"a": 1, "a": 2}',
    ],
)
def test_a_malformed_request_is_422_and_recorded_as_a_deny(api: Api, body: bytes) -> None:
    before = api.gate.ledger.size()
    r = api.decide(body)
    assert r.status_code == 422, r.text
    out = r.json()
    assert out["detail"]
    d = out["decision"]
    assert d["effect"] == "deny" and d["stage"] == "intake"
    assert [x["code"] for x in d["reasons"]] == ["MALFORMED_REQUEST"]
    assert api.gate.ledger.size() == before + 1
    rec = api.record(d["ledger_index"])
    assert rec["stage"] == "intake" and rec["effect"] == "deny"
    assert rec["request"]["raw_sha256"] == hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize("extra", [1, 100_000, 3 * 1024 * 1024])
def test_an_oversized_request_is_413_and_recorded_as_a_deny(api: Api, extra: int) -> None:
    before = api.gate.ledger.size()
    body = b'{"principal": "' + b"a" * (MAX_REQUEST_BYTES + extra) + b'"}'
    try:
        r = api.decide(body)
    except httpx.TransportError:
        # past the drain limit the server answers and closes while the client still writes;
        # the deny is recorded all the same
        r = None
    if r is not None:
        assert r.status_code == 413, r.text
        d = r.json()["decision"]
        assert [x["code"] for x in d["reasons"]] == ["MALFORMED_REQUEST"]
        assert "64 KiB" in d["reasons"][0]["detail"]
    deadline = time.monotonic() + 5
    while api.gate.ledger.size() == before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert api.gate.ledger.size() == before + 1
    rec = api.record(before)
    assert rec["request"]["raw_size"] == MAX_REQUEST_BYTES + 1  # the prefix that was read
    assert rec["reasons"][0]["code"] == "MALFORMED_REQUEST"


def test_other_bodies_are_capped_and_change_nothing(api: Api, issue: Any) -> None:
    admin = issue(ADMIN, "admin:Admin::*")
    before = api.gate.ledger.size()
    big = {"principal": RESEARCHER, "reason": "x" * (MAX_REQUEST_BYTES + 10)}
    r = api.http.post("/v1/admin/quarantine", json=big, headers=_bearer(admin))
    assert r.status_code == 413
    # declared too large: refused before the body is read (httpx will not send a lie)
    status = _raw_status(
        api.url,
        b"POST /v1/admin/kill-switch HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/json\r\n"
        + f"Authorization: Bearer {admin}\r\nContent-Length: {10**9}\r\n\r\n{{}}".encode(),
    )
    assert status == 413

    # no length declared (chunked): reading stops at the cap
    def chunks() -> Iterator[bytes]:
        yield b'{"principal": "' + RESEARCHER.encode() + b'", "reason": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}'

    r = api.http.post(
        "/v1/admin/quarantine",
        content=chunks(),
        headers={**_bearer(admin), "Content-Type": "application/json"},
    )
    assert r.status_code == 413
    assert api.gate.ledger.size() == before
    assert not api.gate.snapshot.quarantined and not api.gate.snapshot.kill_switch


# -- executions and lineage --------------------------------------------------------------------


def _start(api: Api, token: str, **extra: Any) -> dict[str, Any]:
    r = api.http.post("/v1/executions", json=tool_request(token, **extra))
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def test_an_execution_is_started_then_ended_by_its_holder(api: Api, issue: Any) -> None:
    token = issue()
    started = _start(api, token)
    eid = started["execution_id"]
    assert started["status"] == "running" and started["decision"]["effect"] == "allow"
    start = api.record(started["start_index"])
    assert start["type"] == "exec.start" and start["id"] == eid
    assert started["start_index"] > started["decision"]["ledger_index"]

    got = api.http.get(f"/v1/executions/{eid}").json()
    assert got["status"] == "running" and got["effect"] == "allow"
    assert got["authorization"] == {"holds": True, "reasons": []}

    end = {"exit_status": 0, "duration_ms": 12, "stdout_sha256": "ab" * 32, "outcome": "ok"}
    before = api.gate.ledger.size()
    assert api.http.patch(f"/v1/executions/{eid}", json=end).status_code == 401
    other = issue(RESEARCHER)  # the same principal's other token is not this execution's
    r = api.http.patch(f"/v1/executions/{eid}", json=end, headers=_bearer(other))
    assert r.status_code == 403
    assert api.gate.ledger.size() == before

    r = api.http.patch(f"/v1/executions/{eid}", json=end, headers=_bearer(token))
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["status"] == "ended"
    rec = api.record(out["end_index"])
    assert rec["type"] == "exec.end" and rec["id"] == eid
    assert rec["exit_status"] == 0 and rec["stdout_sha256"] == "ab" * 32
    assert rec["reported_via"] == "http"

    again = api.http.patch(f"/v1/executions/{eid}", json=end, headers=_bearer(token))
    assert again.status_code == 409
    got = api.http.get(f"/v1/executions/{eid}").json()
    assert got["status"] == "ended" and "authorization" not in got


def test_a_denied_execution_is_403_and_recorded(api: Api, issue: Any) -> None:
    r = api.http.post("/v1/executions", json=tool_request(issue(), tool="delete_database"))
    assert r.status_code == 403
    d = r.json()["decision"]
    assert d["effect"] == "deny" and d["reasons"][0]["code"] == "POLICY_FORBID"
    row = api.http.get(f"/v1/executions/{d['request_id']}").json()
    assert row["status"] == "denied" and row["decision_index"] == d["ledger_index"]
    assert api.http.post("/v1/executions", content=b"{", headers=JSON).status_code == 422


def test_an_execution_that_cannot_be_recorded_is_503_and_absent(
    api: Api, issue: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = issue()
    before = api.gate.ledger.size()

    def disk_full(*_args: Any, **_kwargs: Any) -> Any:
        raise LedgerUnavailable("disk full")

    monkeypatch.setattr(api.gate.ledger, "append", disk_full)
    r = api.http.post("/v1/executions", json=tool_request(token))
    assert r.status_code == 503
    d = r.json()["decision"]
    assert d["effect"] == "deny" and d["ledger_index"] is None
    assert "LEDGER_UNAVAILABLE" in [x["code"] for x in d["reasons"]]
    monkeypatch.undo()
    assert api.gate.ledger.size() == before
    assert api.http.get(f"/v1/executions/{d['request_id']}").status_code == 404


def test_the_end_report_is_validated(api: Api, issue: Any) -> None:
    token = issue()
    eid = _start(api, token)["execution_id"]
    for bad in (
        {"exit_status": "zero"},
        {"exit_status": 2**40},
        {"stdout_sha256": "not hex"},
        {"unknown": 1},
        {"duration_ms": 1.5},
    ):
        r = api.http.patch(f"/v1/executions/{eid}", json=bad, headers=_bearer(token))
        assert r.status_code == 422, bad
    assert api.http.get(f"/v1/executions/{eid}").json()["status"] == "running"


def test_a_running_execution_reports_when_its_authorization_ends(api: Api, issue: Any) -> None:
    token = issue()
    eid = _start(api, token)["execution_id"]
    api.gate.revoke(revocation_ids(token), reason="test")
    auth = api.http.get(f"/v1/executions/{eid}").json()["authorization"]
    assert auth["holds"] is False
    assert [x["code"] for x in auth["reasons"]] == ["CAPABILITY_REVOKED"]


def test_lineage_walks_from_a_child_to_its_root(api: Api, issue: Any) -> None:
    root = _start(api, issue())["execution_id"]
    child_token = attenuate(
        issue(RESEARCHER),
        root_public_raw=keys.public_raw(api.gate.home.private_key("biscuit-root")),
        parent=root,
        delegate_to=SUMMARIZER,
    )
    child = _start(api, child_token, principal=SUMMARIZER, parent=root)["execution_id"]
    grandchild = api.decide(
        tool_request(child_token, principal=SUMMARIZER, parent=child)
    ).json()  # the token is bound to `root`: the grandchild is denied, and still on record
    assert grandchild["effect"] == "deny"
    out = api.http.get(f"/v1/lineage/{grandchild['request_id']}").json()
    assert out["complete"] is True
    assert [x["id"] for x in out["chain"]] == [grandchild["request_id"], child, root]
    assert [x["depth"] for x in out["chain"]] == [2, 1, 0]
    for hop in out["chain"]:
        data = api.gate.ledger.entry(hop["decision_index"])
        assert merkle.leaf_hash(data).hex() == hop["decision_leaf"]
    assert api.http.get(f"/v1/lineage/{root}").json()["chain"][0]["parent"] is None


@pytest.mark.parametrize("path", ["/v1/executions/", "/v1/lineage/"])
def test_unknown_and_malformed_execution_ids(api: Api, path: str) -> None:
    assert api.http.get(path + "0190b3f6-7a1c-7000-8000-000000000000").status_code == 404
    for bad in (
        "nope",
        "0190B3F6-7A1C-7000-8000-000000000000",
        "0190b3f6-7a1c-7000-8000-000000000000%0A",  # "$" must not match before a newline
        "%00",
        "x" * 5000,
    ):
        assert api.http.get(path + bad).status_code in (404, 422), bad


# -- the ledger ----------------------------------------------------------------------------------


def test_checkpoint_proofs_and_consistency_verify(api: Api, issue: Any) -> None:
    token = issue()
    for _ in range(5):
        api.decide(tool_request(token))
    idx = api.decide(tool_request(token)).json()["ledger_index"]
    proof = api.http.get(f"/v1/ledger/proof/{idx}").json()
    cp = open_checkpoint(proof["checkpoint"], api.gate.log_verifier)
    assert cp.size == proof["tree_size"] > idx
    merkle.verify_inclusion(
        idx,
        cp.size,
        bytes.fromhex(proof["leaf_hash"]),
        [bytes.fromhex(h) for h in proof["hashes"]],
        cp.root_hash,
    )
    latest = api.http.get("/v1/ledger/checkpoint").json()
    assert open_checkpoint(latest["note"], api.gate.log_verifier).size == latest["size"]
    assert api.http.get("/tlog/checkpoint").text == latest["note"]

    # explicit sizes, and consistency between them
    size = api.gate.ledger.size()
    p = api.http.get(f"/v1/ledger/proof/{idx}", params={"size": size}).json()
    assert p["tree_size"] == size and p["checkpoint"] is None
    c = api.http.get("/v1/ledger/consistency", params={"from": 3, "to": size}).json()
    merkle.verify_consistency(
        3,
        size,
        bytes.fromhex(c["from_root"]),
        bytes.fromhex(c["to_root"]),
        [bytes.fromhex(h) for h in c["hashes"]],
    )
    merkle.verify_inclusion(
        idx,
        size,
        bytes.fromhex(p["leaf_hash"]),
        [bytes.fromhex(h) for h in p["hashes"]],
        bytes.fromhex(c["to_root"]),
    )
    default = api.http.get("/v1/ledger/consistency", params={"from": 1}).json()
    assert default["to"] == api.gate.ledger.latest_checkpoint().size  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/v1/ledger/entries/999999", None, 404),
        ("/v1/ledger/entries/-1", None, 422),
        ("/v1/ledger/entries/abc", None, 422),
        (f"/v1/ledger/entries/{2**64}", None, 422),
        ("/v1/ledger/proof/999999", None, 404),
        ("/v1/ledger/proof/1", {"size": 1}, 404),
        ("/v1/ledger/proof/1", {"size": 999999}, 404),
        ("/v1/ledger/proof/1", {"size": 0}, 422),
        ("/v1/ledger/proof/1", {"size": 2**63}, 422),
        ("/v1/ledger/consistency", {"from": 5, "to": 2}, 422),
        ("/v1/ledger/consistency", {"from": 1, "to": 999999}, 404),
        ("/v1/ledger/consistency", {"to": 1}, 422),
        ("/v1/ledger/consistency", {"from": "x"}, 422),
        # "$" also matches before a final newline: Starlette's route patterns end with it
        ("/v1/ledger/entries/1%0A", None, 404),
        ("/v1/ledger/proof/1%0A", None, 404),
        ("/v1/ledger/entries/1%20", None, 404),
        ("/healthz%0A", None, 404),
    ],
)
def test_ledger_reads_answer_4xx_to_bad_parameters(
    api: Api, path: str, params: dict[str, Any] | None, status: int
) -> None:
    r = api.http.get(path, params=params)
    assert r.status_code == status, r.text
    assert r.json()["detail"]


def test_tiles_are_read_by_an_independent_tlog_client(api: Api) -> None:
    # past one full tile, so both full and partial tiles and entry bundles are served
    for i in range(300):
        api.gate.decide(b"malformed %d" % i)
    cp = open_checkpoint(api.gate.ledger.checkpoint().note, api.gate.log_verifier)  # type: ignore[union-attr]
    assert cp.size > 256
    reader = TilesReader(HttpBackend(api.url + "/tlog"))
    reader.set_size(cp.size)
    assert reader.calculate_root_hash() == cp.root_hash
    for i in (0, 1, 255, 256, cp.size - 1):
        assert reader.get_entry(i) == api.gate.ledger.entry(i)
        proof = reader.get_inclusion_proof(i, cp.size).node_hashes
        assert proof == api.gate.ledger.inclusion_proof(i, cp.size)
    their = reader.get_consistency_proof(100, cp.size).node_hashes
    assert their == api.gate.ledger.consistency_proof(100, cp.size)

    full = api.http.get("/tlog/tile/entries/000")
    assert full.status_code == 200
    assert full.headers["cache-control"].endswith("immutable")
    assert decode_entry_bundle(full.content) == [api.gate.ledger.entry(i) for i in range(256)]
    assert len(api.http.get("/tlog/tile/0/000").content) == 256 * 32
    assert len(api.http.get("/tlog/tile/0/001.p/7").content) == 7 * 32
    for bad in (
        "0/x000/001",  # not canonical
        "00/000",
        "0/1",
        "0/000.p/256",
        "0/000.p/0",
        "0/000.p/07",
        "64/000",
        "1/000",  # no level-1 tile yet (fewer than 65,536 entries)
        "0/x999/x999/x999/999",
        "0/002",
        "entries/009.p/3",
        "../../etc/passwd",
        "0/000%0A",  # a valid tile path but for the final newline ("$" matches before it)
        "entries/000%0A",
        "0/001.p/7%0A",
    ):
        assert api.http.get(f"/tlog/tile/{bad}").status_code == 404, bad


def test_tile_paths_are_matched_whole() -> None:
    assert parse_tile_path("0/000") == (0, 0, 256)
    for bad in ("0/000\n", "entries/000.p/3\n", "0/000\r", " 0/000", "0/000 "):
        assert parse_tile_path(bad) is None, repr(bad)


# -- health and metrics ----------------------------------------------------------------------------


def test_healthz_readyz_and_metrics(api: Api, issue: Any) -> None:
    h = api.http.get("/healthz").json()
    assert h["status"] == "ok" and h["policy_version"] == 1
    assert api.http.get("/readyz").json() == {"ready": True, "reasons": []}
    token = issue()
    api.decide(tool_request(token))
    api.decide(tool_request(token, tool="delete_database"))
    api.decide(b"{")
    text = api.http.get("/metrics").text
    assert 'interlock_decisions_total{code="none",effect="allow",endpoint="decisions"} 1.0' in text
    assert 'code="POLICY_FORBID",effect="deny",endpoint="decisions"} 1.0' in text
    assert 'code="MALFORMED_REQUEST",effect="deny",endpoint="decisions"} 1.0' in text
    assert 'interlock_decision_seconds_count{endpoint="decisions"} 3.0' in text
    assert f"interlock_ledger_entries {float(api.gate.ledger.size())}" in text
    assert "interlock_ready 1.0" in text


def test_readyz_is_503_without_a_valid_policy(home: Path, issue: Any) -> None:
    pol = home / "policy" / "policies.cedar"
    pol.write_text(pol.read_text() + "\n// an unsigned change\n")
    with serving(home) as api:
        r = api.http.get("/readyz")
        assert r.status_code == 503
        (reason,) = r.json()["reasons"]
        assert reason.startswith("POLICY_UNAVAILABLE:")
        d = api.decide(tool_request(issue())).json()
        assert d["reasons"][0]["code"] == "POLICY_UNAVAILABLE"
        assert "interlock_ready 0.0" in api.http.get("/metrics").text


def test_readyz_is_503_on_a_corrupt_ledger(home: Path, issue: Any) -> None:
    with Gate.open(home) as gate:
        assert gate.decide(tool_request(issue())).allowed
    conn = sqlite3.connect(home / "ledger.db")
    conn.execute("DROP TRIGGER entries_no_update")
    conn.execute("UPDATE entries SET leaf_hash = zeroblob(32) WHERE idx = 1")
    conn.commit()
    conn.close()
    with serving(home) as api:
        r = api.http.get("/readyz")
        assert r.status_code == 503
        assert any(x.startswith("LEDGER_CORRUPT:") for x in r.json()["reasons"])
        d = api.decide(tool_request(issue())).json()
        assert d["effect"] == "deny" and d["reasons"][0]["code"] == "LEDGER_CORRUPT"
        # hostile or not, reads of a broken ledger are never a 500
        assert api.http.get("/v1/ledger/proof/1").status_code in (200, 404, 503)


# -- admin -----------------------------------------------------------------------------------------


def test_admin_endpoints_refuse_without_an_admin_capability(api: Api, issue: Any) -> None:
    expired = issue(ADMIN, "admin:Admin::*", ttl=timedelta(seconds=-120))
    revoked = issue(ADMIN, "admin:Admin::*")
    api.gate.revoke(revocation_ids(revoked), reason="test")
    quarantined_admin = "spiffe://acme.test/human/rogue"
    rogue = issue(quarantined_admin, "admin:Admin::*")
    api.gate.quarantine(quarantined_admin, "test", on=True)
    forged = CapabilityIssuer(private_raw(Ed25519PrivateKey.generate())).issue(
        principal=ADMIN,
        rights=[Right.parse("admin:Admin::*")],
        expires_at=datetime.now(UTC) + timedelta(hours=1),
    )
    cases: list[tuple[dict[str, str], int]] = [
        ({}, 401),
        ({"Authorization": "Basic YWRtaW46YWRtaW4="}, 401),
        ({"Authorization": "Bearer"}, 401),
        (_bearer("not-a-token"), 403),
        (_bearer(issue()), 403),  # an agent's token
        (_bearer(issue(RESEARCHER, "*:*")), 403),  # a wildcard is not an admin right
        (_bearer(issue(ADMIN, "admin:Admin::kill-switch")), 403),  # another operation
        (_bearer(expired), 403),
        (_bearer(revoked), 403),
        (_bearer(rogue), 403),
        (_bearer(forged), 403),
    ]
    before = api.gate.ledger.size()
    calls: list[Callable[[dict[str, str]], httpx.Response]] = [
        lambda h: api.http.post(
            "/v1/admin/quarantine", json={"principal": RESEARCHER, "reason": "r"}, headers=h
        ),
        lambda h: api.http.request(
            "DELETE",
            "/v1/admin/quarantine",
            params={"principal": quarantined_admin, "reason": "r"},
            headers=h,
        ),
        lambda h: api.http.post(
            "/v1/admin/revocations", json={"revocation_ids": ["ab" * 32], "reason": "r"}, headers=h
        ),
        lambda h: api.http.put(
            "/v1/admin/policy",
            json={"v": 1, "manifest": {}, "signature": {}, "files": {}},
            headers=h,
        ),
        lambda h: api.http.post(
            "/v1/admin/approvals",
            json={"approval": "abc", "request_digest": "ab" * 32},
            headers=h,
        ),
    ]
    for headers, status in cases:
        for call in calls:
            r = call(headers)
            assert r.status_code == status, (headers, r.text)
            if status == 401:
                assert r.headers["www-authenticate"].startswith("Bearer")
    kill = api.http.post("/v1/admin/kill-switch", json={"on": True, "reason": "r"})
    assert kill.status_code == 401
    assert api.gate.ledger.size() == before
    snap = api.gate.snapshot
    assert snap.quarantined == frozenset({quarantined_admin}) and not snap.kill_switch
    assert api.decide(tool_request(issue())).json()["effect"] == "allow"
    metrics = api.http.get("/metrics").text
    assert 'interlock_admin_requests_total{operation="quarantine",outcome="refused"}' in metrics


def test_admin_quarantine_and_release(api: Api, issue: Any) -> None:
    admin, token = issue(ADMIN, "admin:Admin::quarantine"), issue()
    r = api.http.post(
        "/v1/admin/quarantine",
        json={"principal": RESEARCHER, "reason": "leaked a key"},
        headers=_bearer(admin),
    )
    assert r.status_code == 200, r.text
    rec = api.record(r.json()["ledger_index"])
    assert rec["event"] == "principal.quarantined" and rec["principal"] == RESEARCHER
    assert ADMIN in rec["reason"] and "leaked a key" in rec["reason"]
    d = api.decide(tool_request(token)).json()
    assert d["reasons"][0]["code"] == "PRINCIPAL_QUARANTINED"

    bad = api.http.post(
        "/v1/admin/quarantine",
        json={"principal": "not a spiffe id", "reason": "x"},
        headers=_bearer(admin),
    )
    assert bad.status_code == 422
    assert (
        api.http.post(
            "/v1/admin/quarantine",
            json={"principal": RESEARCHER, "reason": "  "},
            headers=_bearer(admin),
        ).status_code
        == 422
    )
    r = api.http.request(
        "DELETE",
        "/v1/admin/quarantine",
        params={"principal": RESEARCHER, "reason": "key rotated"},
        headers=_bearer(admin),
    )
    assert r.status_code == 200
    assert api.record(r.json()["ledger_index"])["event"] == "principal.released"
    assert api.decide(tool_request(token)).json()["effect"] == "allow"


def test_admin_kill_switch_makes_the_node_unready(api: Api, issue: Any) -> None:
    admin, token = issue(ADMIN, "admin:Admin::*"), issue()
    r = api.http.post(
        "/v1/admin/kill-switch", json={"on": True, "reason": "incident"}, headers=_bearer(admin)
    )
    assert r.status_code == 200 and r.json()["event"] == "kill_switch.on"
    ready = api.http.get("/readyz")
    assert ready.status_code == 503
    assert any(x.startswith("POLICY_FORBID:") for x in ready.json()["reasons"])
    d = api.decide(tool_request(token)).json()
    assert d["reasons"][0]["code"] == "POLICY_FORBID"
    assert d["reasons"][0]["policy"] == "kill-switch"
    # the admin can still turn it off: admin access does not pass through the pipeline
    r = api.http.post(
        "/v1/admin/kill-switch", json={"on": False, "reason": "resolved"}, headers=_bearer(admin)
    )
    assert r.status_code == 200
    assert api.http.get("/readyz").status_code == 200
    assert api.decide(tool_request(token)).json()["effect"] == "allow"


def _kill(api: Api, token: str, on: bool = True) -> httpx.Response:
    return api.http.post(
        "/v1/admin/kill-switch", json={"on": on, "reason": "test"}, headers=_bearer(token)
    )


def test_admin_rights_do_not_add_up_across_rights(api: Api, issue: Any) -> None:
    # `*:*` covers action admin on Admin::kill-switch, and `admin:Admin::approval` is an admin
    # right: the right that grants the operation must itself be the admin right for it
    mixed = issue(ADMIN, "*:*", "admin:Admin::approval")
    root = keys.public_raw(api.gate.home.private_key("biscuit-root"))
    refused = {
        "*:* beside admin:Admin::approval": mixed,
        "*:* alone": issue(ADMIN, "*:*"),
        "*:Admin::*": issue(ADMIN, "*:Admin::*"),
        "admin:*": issue(ADMIN, "admin:*"),
        "the mixed token attenuated to the kill switch": attenuate(
            mixed, root_public_raw=root, rights=[Right.parse("admin:Admin::kill-switch")]
        ),
        "admin:Admin::* attenuated to approvals": attenuate(
            issue(ADMIN, "admin:Admin::*"),
            root_public_raw=root,
            rights=[Right.parse("admin:Admin::approval")],
        ),
    }
    before = api.gate.ledger.size()
    for name, token in refused.items():
        r = _kill(api, token)
        assert r.status_code == 403, (name, r.text)
        assert r.json()["detail"] == "admin capability refused: CAPABILITY_INSUFFICIENT", name
    assert api.gate.ledger.size() == before  # nothing recorded, nothing changed
    assert not api.gate.snapshot.kill_switch
    assert api.http.get("/readyz").status_code == 200
    assert api.decide(tool_request(issue())).json()["effect"] == "allow"
    # the mixed token is still an admin for the one operation its admin right names
    r = api.http.post(
        "/v1/admin/approvals",
        json={"approval": "bm90IGFuIGFwcHJvdmFs", "request_digest": "ab" * 32},
        headers=_bearer(mixed),
    )
    assert r.status_code == 200 and r.json()["valid"] is False


@pytest.mark.parametrize("right", ["admin:Admin::kill-switch", "admin:Admin::*"])
def test_an_admin_right_on_the_kill_switch_works(api: Api, issue: Any, right: str) -> None:
    admin = issue(ADMIN, right)
    r = _kill(api, admin)
    assert r.status_code == 200, r.text
    assert api.gate.snapshot.kill_switch
    assert _kill(api, admin, on=False).status_code == 200
    assert not api.gate.snapshot.kill_switch


def test_an_admin_token_from_the_future_is_refused(api: Api) -> None:
    # minted by an issuer whose clock is a year ahead: it would otherwise be valid for a year
    issuer = CapabilityIssuer(private_raw(api.gate.home.private_key("biscuit-root")))
    ahead = datetime.now(UTC) + timedelta(days=365)
    future = issuer.issue(
        principal=ADMIN,
        rights=[Right.parse("admin:Admin::*")],
        expires_at=ahead + timedelta(hours=1),
        now=ahead,
    )
    before = api.gate.ledger.size()
    r = _kill(api, future)
    assert r.status_code == 403
    assert r.json()["detail"] == "admin capability refused: CAPABILITY_INVALID"
    assert api.gate.ledger.size() == before and not api.gate.snapshot.kill_switch
    # within the allowed skew it is accepted
    soon = datetime.now(UTC) + timedelta(seconds=20)
    skewed = issuer.issue(
        principal=ADMIN,
        rights=[Right.parse("admin:Admin::kill-switch")],
        expires_at=soon + timedelta(hours=1),
        now=soon,
    )
    assert _kill(api, skewed).status_code == 200
    assert _kill(api, skewed, on=False).status_code == 200


def test_admin_revocation_by_token(api: Api, issue: Any) -> None:
    admin, token = issue(ADMIN, "admin:Admin::revocation"), issue()
    assert api.decide(tool_request(token)).json()["effect"] == "allow"
    r = api.http.post(
        "/v1/admin/revocations", json={"token": token, "reason": "leaked"}, headers=_bearer(admin)
    )
    assert r.status_code == 200, r.text
    rec = api.record(r.json()["ledger_index"])
    assert rec["event"] == "capability.revoked"
    assert rec["revocation_ids"] == list(revocation_ids(token))
    d = api.decide(tool_request(token)).json()
    assert d["reasons"][0]["code"] == "CAPABILITY_REVOKED"
    for bad in ({"reason": "x"}, {"token": "!!", "reason": "x"}, {"revocation_ids": ["XY"]}):
        assert (
            api.http.post("/v1/admin/revocations", json=bad, headers=_bearer(admin)).status_code
            == 422
        ), bad


def _bundle(home: Path, tmp: Path, version: int, extra: str, key: Any = None) -> bytes:
    folder = tmp / f"bundle-{version}-{len(list(tmp.iterdir()))}"
    shutil.copytree(home / "policy", folder)
    (folder / "extra.cedar").write_text(extra)
    (folder / "manifest.json").unlink()  # sign any version, even one that goes backwards
    h = Home.load(home)
    sign_bundle(folder, key or h.private_key("policy"), version=version)
    trusted = [key.public_key()] if key is not None else h.trusted_policy_keys()
    return load_bundle(folder, trusted).to_blob()


NO_WEB_SEARCH = (
    '@id("no-web-search")\n'
    'forbid (principal, action == Action::"tool.call", resource == Tool::"web_search");\n'
)


def test_admin_policy_upload_installs_only_a_trusted_newer_bundle(
    api: Api, issue: Any, home: Path, tmp_path: Path
) -> None:
    admin, token = issue(ADMIN, "admin:Admin::policy"), issue()
    put = lambda blob: api.http.put(  # noqa: E731
        "/v1/admin/policy",
        content=blob,
        headers={**_bearer(admin), "Content-Type": "application/json"},
    )
    manifest_before = (home / "policy" / "manifest.json").read_bytes()

    # refused: changes nothing, not even a file
    untrusted = _bundle(home, tmp_path, 2, NO_WEB_SEARCH, key=Ed25519PrivateKey.generate())
    doc = json.loads(_bundle(home, tmp_path, 2, NO_WEB_SEARCH))
    doc["files"]["extra.cedar"] = base64.b64encode(
        b"permit (principal, action, resource);"
    ).decode()
    tampered = json.dumps(doc).encode()
    same_version = _bundle(home, tmp_path, 1, NO_WEB_SEARCH)
    before = api.gate.ledger.size()
    for blob, status in ((untrusted, 422), (tampered, 422), (same_version, 409), (b"{}", 422)):
        r = put(blob)
        assert r.status_code == status, r.text
    assert api.gate.ledger.size() == before
    assert (home / "policy" / "manifest.json").read_bytes() == manifest_before
    assert not (home / "policy" / "extra.cedar").exists()
    assert not [p for p in home.iterdir() if p.name.startswith(".policy-")]
    assert api.decide(tool_request(token)).json()["effect"] == "allow"

    running = _start(api, token)["execution_id"]
    good = _bundle(home, tmp_path, 2, NO_WEB_SEARCH)
    r = put(good)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["version"] == 2 and out["changed"] is True
    # the new policy forbids what the running execution does: it is terminated
    reason = _wait_status(api, running, "terminated")["reason"]
    assert reason["code"] == "POLICY_FORBID" and reason["policy"] == "no-web-search"
    d = api.decide(tool_request(token)).json()
    assert d["reasons"][0]["code"] == "POLICY_FORBID"
    assert d["reasons"][0]["policy"] == "no-web-search"
    loaded = [
        rec
        for _i, _h, data in api.gate.ledger.iter_entries()
        if (rec := json.loads(data)).get("event") == "policy.loaded"
    ]
    assert loaded[-1]["policy_version"] == 2 and loaded[-1]["policy_digest"] == out["digest"]
    assert api.http.get("/healthz").json()["policy_version"] == 2
    assert (home / "policy" / "extra.cedar").read_text() == NO_WEB_SEARCH
    assert not [p for p in home.iterdir() if p.name.startswith(".policy-")]
    # the same bundle again changes nothing; a reopened gate loads the uploaded bundle
    assert put(good).json()["changed"] is False
    with Gate.open(home) as other:
        assert other.snapshot.descriptor["policy_version"] == 2


def test_admin_approval_check(home: Path, issue: Any) -> None:
    approver = Ed25519PrivateKey.generate()
    edit_config(home, "keys = []", f'keys = ["{keys.public_raw(approver).hex()}"]')
    digest = "cd" * 32
    good = make_approval(digest, approver, expires_at=int(time.time()) + 600)
    stranger = make_approval(
        digest, Ed25519PrivateKey.generate(), expires_at=int(time.time()) + 600
    )
    with serving(home) as api:
        admin = issue(ADMIN, "admin:Admin::approval")

        def check(approval: str, wanted: str = digest) -> dict[str, Any]:
            r = api.http.post(
                "/v1/admin/approvals",
                json={"approval": approval, "request_digest": wanted},
                headers=_bearer(admin),
            )
            assert r.status_code == 200, r.text
            out: dict[str, Any] = r.json()
            return out

        assert check(good)["valid"] is True
        assert check(good, "ef" * 32)["valid"] is False
        assert check(stranger)["valid"] is False
        assert check("bm90IGFuIGFwcHJvdmFs")["valid"] is False


def test_openapi_lists_every_public_endpoint(api: Api) -> None:
    spec = api.http.get("/openapi.json").json()
    paths = set(spec["paths"])
    assert paths >= {
        "/v1/decisions",
        "/v1/executions",
        "/v1/executions/{execution_id}",
        "/v1/lineage/{execution_id}",
        "/v1/ledger/checkpoint",
        "/v1/ledger/entries/{index}",
        "/v1/ledger/proof/{index}",
        "/v1/ledger/consistency",
        "/tlog/checkpoint",
        "/tlog/tile/{tile_path}",
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/admin/quarantine",
        "/v1/admin/revocations",
        "/v1/admin/kill-switch",
        "/v1/admin/approvals",
        "/v1/admin/policy",
        "/console/proof",
    }
    body = spec["paths"]["/v1/decisions"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["required"] == ["principal", "action", "resource"]
    assert api.http.get("/docs").status_code == 404  # no third-party JavaScript


def test_concurrent_decisions_are_all_recorded(api: Api, issue: Any) -> None:
    token = issue()
    before = api.gate.ledger.size()
    results: list[int] = []

    def client() -> None:
        with httpx.Client(base_url=api.url, timeout=30) as http:
            for _ in range(10):
                r = http.post("/v1/decisions", json=tool_request(token))
                results.append(r.json()["ledger_index"])

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 80 and len(set(results)) == 80
    assert api.gate.ledger.size() == before + 80


# -- continuous verification of HTTP executions (DESIGN I5, I6) -----------------------------------


def _wait_status(api: Api, eid: str, status: str, timeout: float = 2.0) -> dict[str, Any]:
    """Poll ``GET /v1/executions/{eid}`` until its status is ``status`` — for ``terminated``,
    until its ``exec.terminated`` is committed too (``exec.verify`` sets the status just
    before) — and fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got: dict[str, Any] = api.http.get(f"/v1/executions/{eid}").json()
        if got["status"] == status and (status != "terminated" or "terminated_index" in got):
            return got
        assert time.monotonic() < deadline, f"still {got['status']} after {timeout} s: {got}"
        time.sleep(0.02)


def _records(api: Api, eid: str, kind: str) -> list[dict[str, Any]]:
    out = []
    for _i, _h, data in api.gate.ledger.iter_entries():
        rec = json.loads(data)
        if rec.get("type") == kind and rec.get("id") == eid:
            out.append(rec)
    return out


@pytest.mark.parametrize(
    ("how", "parent_principal", "child_principal", "code", "child_code"),
    [
        # not through the API: nothing wakes the verifier, the snapshot change does
        ("revoke", RESEARCHER, SUMMARIZER, "CAPABILITY_REVOKED", "LINEAGE_BROKEN"),
        # a child must be the parent's own principal or below it (issue 9), and a quarantine
        # covers everything below the quarantined principal: the child is quarantined too
        ("quarantine", SUMMARIZER, SUMMARIZER, "PRINCIPAL_QUARANTINED", "PRINCIPAL_QUARANTINED"),
    ],
)
def test_an_http_execution_is_terminated_when_its_authorization_ends(
    api: Api,
    issue: Any,
    how: str,
    parent_principal: str,
    child_principal: str,
    code: str,
    child_code: str,
) -> None:
    token = issue(parent_principal)
    eid = _start(api, token, principal=parent_principal)["execution_id"]
    child_token = issue(child_principal)
    child_request = tool_request(child_token, principal=child_principal, parent=eid)
    # while it runs, its children are allowed, and one of them runs too
    assert api.decide(child_request).json()["effect"] == "allow"
    child = _start(api, child_token, principal=child_principal, parent=eid)["execution_id"]
    time.sleep(0.3)  # a few verification passes: nothing changes while authorization holds
    assert api.http.get(f"/v1/executions/{eid}").json()["status"] == "running"
    assert not _records(api, eid, "exec.verify")

    t0 = time.monotonic()
    if how == "revoke":
        api.gate.revoke(revocation_ids(token), reason="test")
    else:
        admin = issue(ADMIN, "admin:Admin::quarantine")
        r = api.http.post(
            "/v1/admin/quarantine",
            json={"principal": parent_principal, "reason": "test"},
            headers=_bearer(admin),
        )
        assert r.status_code == 200, r.text
    got = _wait_status(api, eid, "terminated", timeout=2.0)
    assert time.monotonic() - t0 < 2.0
    assert got["reason"]["code"] == code and "authorization" not in got

    # on the ledger: the Watch's exec.verify deny (it set the status), then exec.terminated
    (verify,) = [r for r in _records(api, eid, "exec.verify") if r["effect"] == "deny"]
    assert verify["reasons"][0]["code"] == code
    assert verify["decision_leaf"] == got["decision_leaf"]
    terminated = api.record(got["terminated_index"])
    assert terminated["type"] == "exec.terminated" and terminated["id"] == eid
    assert terminated["reason"]["code"] == code and terminated["supervisor"] == "http"
    assert terminated["verify_recorded"] is True
    assert api.gate.ledger.execution(eid).status == "terminated"  # type: ignore[union-attr]

    # I5: a new child is denied; the running child is terminated in turn
    d = api.decide(child_request).json()
    assert d["effect"] == "deny" and d["reasons"][0]["code"] == child_code
    assert _wait_status(api, child, "terminated")["reason"]["code"] == child_code
    # the runner's end report comes too late
    r = api.http.patch(f"/v1/executions/{eid}", json={"exit_status": 0}, headers=_bearer(token))
    assert r.status_code == 409
    assert 'interlock_execution_events_total{event="terminated"} 2.0' in (
        api.http.get("/metrics").text
    )


def test_an_http_execution_is_terminated_when_its_capability_expires(
    home: Path, issue: Any
) -> None:
    # no governance change at all: the timed re-decision finds it
    with serving(home, verify_interval=0.2) as api:
        token = issue(ttl=timedelta(seconds=2))
        eid = _start(api, token)["execution_id"]
        assert api.record(_start(api, issue())["start_index"])["interval_ms"] == 200
        got = _wait_status(api, eid, "terminated", timeout=4.0)
        assert got["reason"]["code"] == "CAPABILITY_EXPIRED"
        assert _records(api, eid, "exec.verify")[-1]["effect"] == "deny"


def test_an_execution_whose_runner_stops_reporting_is_terminated(home: Path, issue: Any) -> None:
    with serving(home, execution_lease=0.6) as api:
        token = issue()
        started = _start(api, token)
        eid = started["execution_id"]
        assert started["lease_ms"] == 600
        assert api.record(started["start_index"])["lease_ms"] == 600
        for _ in range(4):  # reporting renews the lease: alive well past one lease
            time.sleep(0.3)
            r = api.http.get(f"/v1/executions/{eid}", headers=_bearer(token))
            assert r.status_code == 200 and r.json()["status"] == "running", r.text
        other = api.http.get(f"/v1/executions/{eid}", headers=_bearer(issue()))
        assert other.status_code == 403  # someone else's token neither reads as nor renews it
        got = _wait_status(api, eid, "terminated", timeout=2.0)
        assert got["reason"]["code"] == "DEADLINE_EXCEEDED"
        assert not _records(api, eid, "exec.verify")  # not a verification: just the lease
        assert api.record(got["terminated_index"])["reason"]["code"] == "DEADLINE_EXCEEDED"


def test_executions_are_bounded_and_terminated_when_the_server_stops(
    home: Path, issue: Any
) -> None:
    token = issue()
    with serving(home, max_executions=1) as api:
        first = _start(api, token)["execution_id"]
        before = api.gate.ledger.size()
        full = api.http.post("/v1/executions", json=tool_request(token))
        assert full.status_code == 503 and "nothing was recorded" in full.json()["detail"]
        assert api.gate.ledger.size() == before
        r = api.http.patch(
            f"/v1/executions/{first}", json={"exit_status": 0}, headers=_bearer(token)
        )
        assert r.status_code == 200
        last = _start(api, token)["execution_id"]  # the ended one's slot is free again
    with Gate.open(home) as gate:
        row = gate.ledger.execution(last)
        assert row is not None and row.status == "terminated"
        assert gate.ledger.execution(first).status == "ended"  # type: ignore[union-attr]
        (rec,) = [
            r
            for _i, _h, data in gate.ledger.iter_entries()
            if (r := json.loads(data)).get("type") == "exec.terminated"
        ]
        assert rec["id"] == last and rec["supervisor"] == "http"
        assert rec["reason"]["code"] == "INTERNAL_ERROR" and "stopped" in rec["reason"]["detail"]


def test_executions_are_refused_while_nothing_re_verifies_them(api: Api, issue: Any) -> None:
    from starlette.testclient import TestClient

    app = create_app(api.gate)  # its lifespan never runs: no verifier
    before = api.gate.ledger.size()
    client = TestClient(app, base_url="http://localhost")
    r = client.post("/v1/executions", json=tool_request(issue()))
    assert r.status_code == 503 and "not running" in r.json()["detail"]
    assert api.gate.ledger.size() == before
    assert client.post("/v1/decisions", json=tool_request(issue())).status_code == 200


# -- DNS rebinding and cross-site requests -----------------------------------------------------


def test_a_foreign_host_header_is_400_and_nothing_recorded(api: Api, issue: Any) -> None:
    before = api.gate.ledger.size()
    for host in (
        "evil.example",
        "evil.example:8750",
        "127.0.0.1.evil.example",
        "localhost.evil",
        "[::2]",
        "",
    ):
        request = tool_request(issue())
        r = api.http.post("/v1/decisions", json=request, headers={"Host": host})
        assert r.status_code == 400, host
        r = api.http.post("/v1/executions", json=request, headers={"Host": host})
        assert r.status_code == 400, host
        assert api.http.get("/readyz", headers={"Host": host}).status_code == 400, host
    assert api.gate.ledger.size() == before


def test_loopback_and_configured_host_headers_are_accepted(home: Path, issue: Any) -> None:
    with serving(home, allowed_hosts=["api.example.test", "*.corp.test"]) as api:
        port = api.url.rsplit(":", 1)[1]
        for host in (
            "localhost",
            f"localhost:{port}",
            "LOCALHOST",
            "127.0.0.1",
            f"[::1]:{port}",
            "api.example.test",
            f"api.example.test:{port}",
            "x.corp.test",
        ):
            r = api.http.get("/healthz", headers={"Host": host})
            assert r.status_code == 200, host
        for host in ("corp.test", "example.test", "evil.example"):
            assert api.http.get("/healthz", headers={"Host": host}).status_code == 400, host
    for bad in (["bad host"], ["a.test:8750"], ["*evil"], "localhost"):
        with pytest.raises(ValueError):
            create_app(api.gate, allowed_hosts=bad)


def test_a_body_that_is_not_json_is_415_and_nothing_recorded(api: Api, issue: Any) -> None:
    token, admin = issue(), issue(ADMIN, "admin:Admin::*")
    eid = _start(api, token)["execution_id"]
    before = api.gate.ledger.size()
    body = json.dumps(tool_request(token)).encode()
    for content_type in (
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "text/json",
        "application/jsonp",
    ):
        headers = {} if content_type is None else {"Content-Type": content_type}
        responses = [
            api.http.post("/v1/decisions", content=body, headers=headers),
            api.http.post("/v1/decisions", content=b"{not json", headers=headers),
            api.http.post("/v1/executions", content=body, headers=headers),
            api.http.patch(
                f"/v1/executions/{eid}",
                content=b'{"exit_status": 0}',
                headers={**headers, **_bearer(token)},
            ),
            api.http.post(
                "/v1/admin/kill-switch",
                content=b'{"on": true, "reason": "r"}',
                headers={**headers, **_bearer(admin)},
            ),
            api.http.put("/v1/admin/policy", content=b"{}", headers={**headers, **_bearer(admin)}),
        ]
        for r in responses:
            assert r.status_code == 415, (content_type, r.request.url, r.text)
    assert api.gate.ledger.size() == before
    assert not api.gate.snapshot.kill_switch
    assert api.http.get(f"/v1/executions/{eid}").json()["status"] == "running"


def test_a_json_body_with_parameters_is_accepted(api: Api, issue: Any) -> None:
    body = json.dumps(tool_request(issue())).encode()
    for content_type in ("application/json; charset=utf-8", "Application/JSON"):
        r = api.http.post("/v1/decisions", content=body, headers={"Content-Type": content_type})
        assert r.status_code == 200 and r.json()["effect"] == "allow"
    # malformed JSON *is* JSON as far as the media type goes: recorded as a deny, as always
    r = api.http.post("/v1/decisions", content=b"{not json", headers=JSON)
    assert r.status_code == 422 and r.json()["decision"]["ledger_index"] is not None


# -- policy upload: the folder is swapped in whole -----------------------------------------------


def _watch_policy_folder(
    monkeypatch: pytest.MonkeyPatch, home: Path, digests: set[str]
) -> tuple[list[str], list[str]]:
    """After every rename, replace or exchange, load ``<home>/policy`` as the gate would:
    returns (what was seen: a digest or the error, the targets of os.replace in order)."""
    from interlock.server import swap

    trusted = Home.load(home).trusted_policy_keys()
    seen: list[str] = []
    replaced: list[str] = []

    def look() -> None:
        try:
            digest = load_bundle(home / "policy", trusted).digest
        except Exception as exc:  # noqa: BLE001 - what a reader would see
            seen.append(f"error: {exc}")
        else:
            seen.append(digest if digest in digests else f"unexpected: {digest}")

    def spy(fn: Callable[..., Any], log: list[str] | None = None) -> Callable[..., Any]:
        def wrapped(a: Any, b: Any, *args: Any, **kwargs: Any) -> Any:
            out = fn(a, b, *args, **kwargs)
            if log is not None:
                log.append(Path(b).name)
            look()
            return out

        return wrapped

    monkeypatch.setattr(os, "rename", spy(os.rename))
    monkeypatch.setattr(os, "replace", spy(os.replace, replaced))
    monkeypatch.setattr(swap, "exchange", spy(swap.exchange))
    return seen, replaced


def test_a_policy_upload_is_swapped_in_atomically(
    api: Api, issue: Any, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = issue(ADMIN, "admin:Admin::policy")
    old = api.gate.snapshot.descriptor["policy_digest"]
    blob = _bundle(home, tmp_path, 2, NO_WEB_SEARCH)
    new_digest = PolicyBundle.from_blob(blob, Home.load(home).trusted_policy_keys()).digest
    seen, _replaced = _watch_policy_folder(monkeypatch, home, {old, new_digest})
    r = api.http.put("/v1/admin/policy", content=blob, headers={**_bearer(admin), **JSON})
    assert r.status_code == 200, r.text
    assert r.json()["digest"] == new_digest
    # after every step a reader finds a complete signed bundle: the old one, then the new one
    assert seen and all(x in (old, new_digest) for x in seen), seen
    assert seen[-1] == new_digest
    assert not [p for p in home.iterdir() if p.name.startswith(".policy-")]


def test_a_policy_upload_without_atomic_exchange_replaces_the_manifest_last(
    api: Api, issue: Any, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from interlock.server import swap

    def unsupported(_a: Path, _b: Path) -> None:
        raise OSError(errno.EINVAL, "not supported here")

    monkeypatch.setattr(swap, "exchange", unsupported)
    admin, token = issue(ADMIN, "admin:Admin::policy"), issue()
    old = api.gate.snapshot.descriptor["policy_digest"]
    blob = _bundle(home, tmp_path, 2, NO_WEB_SEARCH)
    new_digest = PolicyBundle.from_blob(blob, Home.load(home).trusted_policy_keys()).digest
    seen, replaced = _watch_policy_folder(monkeypatch, home, {old, new_digest})
    r = api.http.put("/v1/admin/policy", content=blob, headers={**_bearer(admin), **JSON})
    assert r.status_code == 200, r.text
    assert r.json()["digest"] == new_digest
    # a reader may see a refused mix for a moment, never a bundle that is neither
    assert not [x for x in seen if x.startswith("unexpected:")]
    assert seen[-1] == new_digest
    assert replaced[-2:] == ["manifest.sig", "manifest.json"]
    assert replaced[0] == "extra.cedar"
    assert load_bundle(home / "policy", Home.load(home).trusted_policy_keys()).digest == (
        new_digest
    )
    assert api.decide(tool_request(token)).json()["reasons"][0]["code"] == "POLICY_FORBID"
    assert not [p for p in home.iterdir() if p.name.startswith(".policy-")]


@pytest.mark.parametrize("exchange", [True, False])
def test_a_policy_that_cannot_be_loaded_is_swapped_back_out(
    api: Api,
    issue: Any,
    home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    exchange: bool,
) -> None:
    from interlock.server import swap

    def unsupported(_a: Path, _b: Path) -> None:
        raise OSError(errno.ENOSYS, "no renameat2")

    if not exchange:
        monkeypatch.setattr(swap, "exchange", unsupported)
    before = {p.name: p.read_bytes() for p in (home / "policy").iterdir() if p.is_file()}
    admin, token = issue(ADMIN, "admin:Admin::policy"), issue()
    blob = _bundle(home, tmp_path, 2, NO_WEB_SEARCH)

    def unrecorded() -> None:
        raise LedgerUnavailable("disk full")

    monkeypatch.setattr(api.gate, "reload_policy", unrecorded)
    size = api.gate.ledger.size()
    r = api.http.put("/v1/admin/policy", content=blob, headers={**_bearer(admin), **JSON})
    assert r.status_code == 503, r.text
    monkeypatch.undo()
    after = {p.name: p.read_bytes() for p in (home / "policy").iterdir() if p.is_file()}
    assert after == before
    assert api.gate.ledger.size() == size
    assert api.decide(tool_request(token)).json()["effect"] == "allow"
    assert not [p for p in home.iterdir() if p.name.startswith(".policy-")]
