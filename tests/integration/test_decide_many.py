"""``gate.decide_many`` and ``POST /v1/decisions:batch`` (issue 14): many requests, one
durable commit, each answered as ``decide`` would answer it alone."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from interlock.audit import verify_ledger
from interlock.gate import Gate
from interlock.server.app import create_app
from tests.conftest import RESEARCHER, SUMMARIZER, edit_config, tool_request

#: (principal, tool) -> the answer the default policy gives (effect, first code)
CASES = [
    (RESEARCHER, "web_search", "allow", None),
    (RESEARCHER, "delete_database", "deny", "POLICY_FORBID"),
    (SUMMARIZER, "send_email", "deny", "POLICY_NO_PERMIT"),
    (SUMMARIZER, "summarize", "allow", None),
    (RESEARCHER, "read_file", "allow", None),
]


def _requests(issue: Any) -> list[dict[str, Any]]:
    tokens = {p: issue(p) for p in (RESEARCHER, SUMMARIZER)}
    return [tool_request(tokens[p], tool, principal=p) for p, tool, _, _ in CASES]


def test_each_answer_is_what_decide_gives_and_the_batch_is_one_commit(
    gate: Gate, issue: Any
) -> None:
    requests = _requests(issue)
    singles = [gate.decide(r) for r in requests]
    before = gate.ledger.size()
    batch = gate.decide_many(requests)
    assert [(d.effect.value, d.codes[0] if d.codes else None) for d in batch] == [
        (e, c) for _, _, e, c in CASES
    ]
    assert [d.effect for d in batch] == [d.effect for d in singles]
    # recorded in order, one index after another: one append, one transaction
    assert [d.ledger_index for d in batch] == list(range(before, before + len(CASES)))
    for d in batch:
        rec = json.loads(gate.ledger.entry(d.ledger_index))  # type: ignore[arg-type]
        assert rec["id"] == d.request_id and rec["effect"] == d.effect.value
    gate.ledger.checkpoint()
    report = verify_ledger(gate.ledger, gate.vkey)  # raises if it does not verify
    assert report.size == gate.ledger.size() and report.covered == report.size


def test_a_malformed_request_in_a_batch_is_denied_alone(gate: Gate, issue: Any) -> None:
    good = tool_request(issue(), "web_search")
    dup = b'{"principal": "a", "principal": "b"}'
    led: Any = gate.ledger
    before, commits = led.size(), led.commits
    out = gate.decide_many([good, dup, b"\xff\xfe", good])
    assert [d.effect.value for d in out] == ["allow", "deny", "deny", "allow"]
    assert out[1].codes == ("MALFORMED_REQUEST",) and out[2].codes == ("MALFORMED_REQUEST",)
    # the malformed requests are recorded too, in the batch's one commit, in order
    assert led.commits == commits + 1
    assert [d.ledger_index for d in out] == list(range(before, before + 4))
    rec = json.loads(gate.ledger.entry(out[1].ledger_index))  # type: ignore[arg-type]
    assert rec["id"] == out[1].request_id and rec["stage"] == "intake"
    assert rec["request"]["raw_size"] == len(dup)


def test_a_ledger_that_cannot_commit_denies_the_whole_batch(home: Path, issue: Any) -> None:
    edit_config(home, "ledger_timeout_ms = 2000", "ledger_timeout_ms = 200")
    requests: list[Any] = [*_requests(issue), b"not json"]
    with Gate.open(home) as gate:
        before = gate.ledger.size()
        blocker = sqlite3.connect(home / "ledger.db", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            out = gate.decide_many(requests)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert [d.effect.value for d in out] == ["deny"] * (len(CASES) + 1)
        assert all(d.codes[-1] == "LEDGER_UNAVAILABLE" and d.ledger_index is None for d in out)
        assert out[-1].codes == ("MALFORMED_REQUEST", "LEDGER_UNAVAILABLE")
        time.sleep(0.3)
        ids = {d.request_id for d in out}
        recorded = [json.loads(x) for _, _, x in gate.ledger.iter_entries(before)]
        assert not [r for r in recorded if r.get("id") in ids and r.get("effect") == "allow"]


def test_the_batch_endpoint(gate: Gate, issue: Any) -> None:
    requests = _requests(issue)
    with TestClient(create_app(gate), base_url="http://localhost") as client:
        r = client.post("/v1/decisions:batch", json={"requests": requests})
        assert r.status_code == 200, r.text
        got = [
            (d["effect"], d["reasons"][0]["code"] if d["reasons"] else None)
            for d in r.json()["decisions"]
        ]
        assert got == [(e, c) for _, _, e, c in CASES]
        # a duplicate key inside one request is seen: its bytes reach intake as sent
        body = b'{"requests": [{"principal": "a", "principal": "b"}]}'
        r = client.post(
            "/v1/decisions:batch", content=body, headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 200
        assert r.json()["decisions"][0]["reasons"][0]["code"] == "MALFORMED_REQUEST"
        for bad in ({"requests": []}, {"requests": requests * 60}, {"reqs": []}, [1]):
            assert client.post("/v1/decisions:batch", json=bad).status_code == 422, bad
        big = {"requests": [{"args": {"x": "y" * 60_000}}] * 80}
        assert client.post("/v1/decisions:batch", json=big).status_code == 413
