"""The lean ``POST /v1/decisions`` path (interlock.server.fastpath): concurrent requests are
decided in batches with the same answers, odd requests fall through to the full app, and a
dispatcher failure answers 500 — never an allow."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from interlock.server.fastpath import render
from tests.conftest import tool_request
from tests.integration.test_server import JSON, serving


def test_concurrent_decisions_are_batched_answered_and_recorded(home: Path, issue: Any) -> None:
    with serving(home) as api:
        calls: list[int] = []
        original = api.gate.decide_many

        def counting(requests: Any) -> Any:
            calls.append(len(requests))
            return original(requests)

        api.gate.decide_many = counting  # type: ignore[method-assign]
        token = issue()
        answers: list[httpx.Response] = []
        lock = threading.Lock()

        def client() -> None:
            with httpx.Client(base_url=api.url, timeout=30) as http:
                for _ in range(10):
                    r = http.post("/v1/decisions", json=tool_request(token))
                    with lock:
                        answers.append(r)

        threads = [threading.Thread(target=client) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(answers) == 80
        for r in answers:
            assert r.status_code == 200
            assert r.headers["content-type"] == "application/json"
            body = r.json()
            assert body["effect"] == "allow"
            # the bytes are JSONResponse's rendering of the decision
            assert r.content == render(body)
            assert api.record(body["ledger_index"])["id"] == body["request_id"]
        assert len({r.json()["ledger_index"] for r in answers}) == 80
        assert calls and sum(calls) <= 80  # decide_many was used for the batches


def test_odd_requests_fall_through_to_the_full_app(home: Path, issue: Any) -> None:
    with serving(home) as api:
        size = api.gate.ledger.size()
        assert api.http.post("/v1/decisions", content=b"{}").status_code == 415
        r = api.http.post("/v1/decisions", json={}, headers={"Host": "evil.example"})
        assert r.status_code == 400
        assert api.http.get("/v1/decisions").status_code == 405
        assert api.gate.ledger.size() == size  # none of them reached the gate
        r = api.http.post("/v1/decisions", content=b"x" * 70_000, headers=JSON)
        assert r.status_code == 413
        assert r.json()["decision"]["reasons"][0]["code"] == "MALFORMED_REQUEST"


@pytest.mark.parametrize("batched", [False, True])
def test_a_dispatcher_failure_is_500_and_never_an_allow(
    home: Path, issue: Any, batched: bool
) -> None:
    with serving(home) as api:

        def boom(*_a: Any, **_k: Any) -> Any:
            raise RuntimeError("injected")

        api.gate.decide = boom  # type: ignore[method-assign]
        api.gate.decide_many = boom  # type: ignore[method-assign]
        size = api.gate.ledger.size()
        token = issue()
        answers: list[httpx.Response] = []

        def client() -> None:
            with httpx.Client(base_url=api.url, timeout=30) as http:
                answers.append(http.post("/v1/decisions", json=tool_request(token)))

        threads = [threading.Thread(target=client) for _ in range(8 if batched else 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert answers and all(r.status_code == 500 for r in answers)
        assert all("allow" not in r.text for r in answers)
        assert api.gate.ledger.size() == size
        # the dispatcher keeps serving once the gate works again
        del api.gate.decide, api.gate.decide_many
        ok = api.http.post("/v1/decisions", content=json.dumps(tool_request(token)), headers=JSON)
        assert ok.status_code == 200 and ok.json()["effect"] == "allow"
