"""The Health Dashboard's data (``/console/api/health``): nodes, rates by reason code, latency.

Real home, real gate, real decisions on a real ledger, the real app through FastAPI's
TestClient; the expected numbers are worked out by hand in each test, not by the code under
test. The decisions of the bucketing tests are made with the gate's clock set to known seconds
(a few seconds in the future: the log's time floor forbids the past).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from interlock.gate import Gate
from interlock.ledger.protocols import NodeRow
from interlock.server import create_app
from interlock.server.console import health, health_sampler
from interlock.server.console.feed import DecisionFeed
from interlock.server.state import ServerState
from tests.conftest import RESEARCHER, tool_request

AUDITOR = "spiffe://acme.test/human/auditor"
OPS = "spiffe://acme.test/human/ops"


class Clock:
    """The gate's clock, set by the test (nanoseconds)."""

    def __init__(self) -> None:
        self.ns = time.time_ns()

    def __call__(self) -> int:
        return self.ns

    def at(self, seconds: float) -> None:
        self.ns = int(seconds * 1e9)


def _base() -> int:
    """A 20-s boundary 20 to 40 s from now: ahead of the log's time floor, and of every
    bucket boundary the tests use (10 s and 20 s)."""
    return (int(time.time()) // 20 + 2) * 20


def _indexed(gate: Gate) -> DecisionFeed:
    feed = DecisionFeed(gate.ledger)
    size = gate.ledger.size()
    while feed.size < size or not feed.complete:
        feed.poll_once()
    return feed


@contextmanager
def _client(gate: Gate) -> Iterator[TestClient]:
    app = create_app(gate)
    try:
        with TestClient(app, base_url="http://localhost") as client:
            yield client
    finally:
        health.close(app)


def _signed_in(client: TestClient, token: str) -> None:
    r = client.post("/console/api/session", json={"token": token})
    assert r.status_code == 200, r.text


# -- quantiles ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        # 4 observations: 2 in (0, 1 ms], 2 in (1 ms, 10 ms]
        (0.25, 0.0005),  # rank 1 of 2 in the first bucket: half-way from 0 to 1 ms
        (0.5, 0.001),  # rank 2: the top of the first bucket
        (0.75, 0.0055),  # rank 3: 1 ms + (10 - 1) ms * 1/2
        (1.0, 0.01),
    ],
)
def test_quantile_interpolates_within_a_bucket(q: float, expected: float) -> None:
    got = health_sampler.quantile(q, [0.001, 0.01, math.inf], [2, 4, 4])
    assert got == pytest.approx(expected)


def test_quantile_of_an_empty_histogram_is_unknown_and_the_inf_bucket_gives_the_top_bound() -> None:
    assert health_sampler.quantile(0.5, [0.001, math.inf], [0, 0]) is None
    assert health_sampler.quantile(0.5, [], []) is None
    # every observation above the last finite bound: the answer is that bound, not infinity
    assert health_sampler.quantile(0.99, [0.001, 0.01, math.inf], [0, 0, 5]) == 0.01


# -- rates by reason code, bucketed -------------------------------------------------------------


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def clocked(home: Path, clock: Clock) -> Iterator[Gate]:
    with Gate.open(home, clock_ns=clock) as g:
        yield g


def _decide_at(gate: Gate, clock: Clock, seconds: float, request: dict[str, Any]) -> str:
    clock.at(seconds)
    d = gate.decide(request)
    return d.reasons[0].code.value if d.reasons else d.effect.value


def test_rates_are_bucketed_by_time_and_reason_code(
    clocked: Gate, clock: Clock, issue: Callable[..., str]
) -> None:
    full = issue(RESEARCHER, "tool.call:Tool::*")
    narrow = issue(RESEARCHER, "tool.call:Tool::web_search")
    b = _base()
    made = [
        _decide_at(clocked, clock, b + 1, tool_request(full)),  # allow
        _decide_at(clocked, clock, b + 4, tool_request(narrow, "read_file")),
        _decide_at(clocked, clock, b + 9.5, tool_request("not-a-token")),
        _decide_at(clocked, clock, b + 10, tool_request(full)),  # allow, next bucket
        _decide_at(clocked, clock, b + 15, tool_request(full, "delete_database")),
        _decide_at(clocked, clock, b + 27, tool_request(narrow, "send_email")),
    ]
    assert made == [
        "allow",
        "CAPABILITY_INSUFFICIENT",
        "CAPABILITY_INVALID",
        "allow",
        "POLICY_FORBID",
        "CAPABILITY_INSUFFICIENT",
    ]
    feed = _indexed(clocked)
    rates = health.Rates()
    now = b + 28.0  # 8 s into the third bucket
    rates.update(feed, now)
    sampler = health_sampler.Sampler(ServerState.for_gate(clocked), clock=lambda: now)
    out = health.series(rates, sampler, now=now, window_s=30, bucket_s=10)

    assert out["t"] == [b, b + 10, b + 20]
    # whole buckets: count / 10 s; the current one: count / the 8 s elapsed
    assert out["allows"] == [0.1, 0.1, 0.0]
    assert out["denials"] == [0.2, 0.1, 0.125]
    assert out["decisions"] == [0.3, 0.2, 0.125]
    assert out["denials_by_code"] == {
        "CAPABILITY_INSUFFICIENT": [0.1, 0.0, 0.125],
        "CAPABILITY_INVALID": [0.1, 0.0, 0.0],
        "POLICY_FORBID": [0.0, 0.1, 0.0],
    }
    # the most frequent code first, then by name
    assert list(out["denial_totals"].items()) == [
        ("CAPABILITY_INSUFFICIENT", 2),
        ("CAPABILITY_INVALID", 1),
        ("POLICY_FORBID", 1),
    ]

    # 20-s buckets over 40 s: [b-20, b) is empty, [b, b+20) holds five decisions
    wide = health.series(rates, sampler, now=b + 39.0, window_s=40, bucket_s=20)
    assert wide["t"] == [b, b + 20]
    assert wide["allows"] == [0.1, 0.0]
    assert wide["denials"] == [0.15, round(1 / 19, 4)]


def test_each_decision_is_counted_once_and_nothing_older_than_the_horizon(
    clocked: Gate, clock: Clock, issue: Callable[..., str]
) -> None:
    full = issue(RESEARCHER, "tool.call:Tool::*")
    b = _base()
    for s in (b + 1, b + 2, b + 12):
        _decide_at(clocked, clock, s, tool_request(full, "delete_database"))
    feed = _indexed(clocked)
    # a horizon of 20 s at b + 25: b + 1 and b + 2 are too old, b + 12 is not
    rates = health.Rates(horizon_s=20)
    rates.update(feed, b + 25.0)
    assert rates.counts(b, b + 30) == {"POLICY_FORBID": 1}

    everything = health.Rates()
    everything.update(feed, b + 25.0)
    everything.update(feed, b + 25.0)  # nothing new: nothing counted twice
    assert everything.counts(b, b + 30) == {"POLICY_FORBID": 3}
    _decide_at(clocked, clock, b + 26, tool_request(full))
    feed.poll_once()
    everything.update(feed, b + 27.0)
    assert everything.counts(b, b + 30) == {"POLICY_FORBID": 3, "allow": 1}
    assert everything.counts(b + 20, b + 30) == {"allow": 1}


# -- latency, from samples of the histogram -----------------------------------------------------


def test_latency_percentiles_per_bucket_come_from_the_difference_of_two_samples(
    gate: Gate,
) -> None:
    state = ServerState.for_gate(gate)
    b = _base()
    now = [float(b)]
    sampler = health_sampler.Sampler(state, clock=lambda: now[0])
    sampler.sample(at=b)
    # bounds (s): 0.0001 0.00025 0.0005 0.001 0.0025 0.005 0.01 0.025 ...
    for seconds in (0.0003, 0.0003, 0.0003, 0.003):
        state.metrics.latency.labels("/v1/decisions").observe(seconds)
    now[0] = b + 10.0
    sampler.sample(at=b + 10)
    for seconds in (0.02, 0.02):
        state.metrics.latency.labels("/v1/decisions").observe(seconds)
    now[0] = b + 14.0  # the second bucket is in progress: it ends at a reading taken now
    percentiles, counts = sampler.latency([b - 10, b, b + 10], 10, now[0])
    p50, p90, p99 = percentiles
    # before the first sample: unknown
    assert (p50[0], counts[0]) == (None, None)
    # first bucket: 3 in (0.25, 0.5] ms, 1 in (2.5, 5] ms
    #   p50: rank 2 -> 0.25 + 0.25 * 2/3 ms; p90: rank 3.6 -> 2.5 + 2.5 * 0.6 ms;
    #   p99: rank 3.96 -> 2.5 + 2.5 * 0.96 ms
    assert counts[1] == 4
    assert p50[1] == pytest.approx(0.25 + 0.25 * 2 / 3, abs=1e-4)
    assert p90[1] == pytest.approx(4.0)
    assert p99[1] == pytest.approx(4.9)
    # second bucket: only the two 20 ms observations (10..25 ms): p50 rank 1 -> 17.5 ms
    assert counts[2] == 2
    assert p50[2] == pytest.approx(17.5)
    assert p99[2] == pytest.approx(10 + 15 * 0.99)


def test_growth_is_entries_per_second_since_a_reading_about_a_minute_ago(gate: Gate) -> None:
    state = ServerState.for_gate(gate)
    now = [1000.0]
    sampler = health_sampler.Sampler(state, clock=lambda: now[0])
    first = sampler.sample()
    assert first.size == gate.ledger.size()
    assert sampler.growth(first.size, 1000.5) is None  # less than a second apart
    assert first.size is not None
    now[0] = 1030.0
    sampler.sample()
    now[0] = 1070.0
    sampler.sample()
    # at 1075 the reading at least 60 s old is the one at 1000: 30 entries in 75 s
    assert sampler.growth(first.size + 30, 1075.0) == pytest.approx(0.4)


# -- the routes ---------------------------------------------------------------------------------


def test_this_node_turns_fail_closed_with_the_kill_switch_and_back(
    gate: Gate, issue: Callable[..., str]
) -> None:
    with _client(gate) as client:
        assert client.get("/console/api/health/nodes").status_code == 401
        _signed_in(client, issue(AUDITOR, "admin:Admin::read"))
        out = client.get("/console/api/health/nodes").json()
        assert out["role"] == "embedded"
        (me,) = out["nodes"]
        assert me["this"] is True
        assert (me["state"], me["reasons"]) == ("ready", [])
        assert me["lease"] is None  # embedded: its own log, no lease
        assert me["policy_version"] == gate.snapshot.descriptor["policy_version"] == 1
        assert me["policy_digest"] == gate.snapshot.descriptor["policy_digest"]
        assert me["log_size"] == gate.ledger.size()
        assert me["attestation"]["state"] == "trusted"
        assert me["attestation"]["digest"] == gate.attestation()[0].digest  # type: ignore[union-attr]

        admin = {"Authorization": f"Bearer {issue(OPS, 'admin:Admin::*')}"}
        r = client.post("/v1/admin/kill-switch", json={"on": True, "reason": "t"}, headers=admin)
        assert r.status_code == 200, r.text
        (me,) = client.get("/console/api/health/nodes").json()["nodes"]
        assert me["state"] == "fail-closed"
        assert [r["code"] for r in me["reasons"]] == ["POLICY_FORBID"]
        assert "kill switch" in me["reasons"][0]["detail"]
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["reasons"] == [f"{r['code']}: {r['detail']}" for r in me["reasons"]]

        r = client.post("/v1/admin/kill-switch", json={"on": False, "reason": "t"}, headers=admin)
        assert r.status_code == 200, r.text
        (me,) = client.get("/console/api/health/nodes").json()["nodes"]
        assert (me["state"], me["reasons"]) == ("ready", [])


def test_checkpoint_age_is_that_of_the_logs_newest_signed_checkpoint(
    gate: Gate, issue: Callable[..., str]
) -> None:
    before = time.time()
    cp = gate.ledger.checkpoint()
    assert cp is not None
    with _client(gate) as client:
        _signed_in(client, issue(AUDITOR, "admin:Admin::read"))
        (me,) = client.get("/console/api/health/nodes").json()["nodes"]
    assert me["checkpoint"]["size"] == cp.size
    assert me["checkpoint"]["created"] == cp.created
    # created has whole seconds: the age is at most a second more than the time since
    assert 0 <= me["checkpoint"]["age_s"] <= time.time() - before + 1


def test_series_counts_decisions_made_over_http_by_their_code(
    gate: Gate, issue: Callable[..., str]
) -> None:
    full = issue(RESEARCHER, "tool.call:Tool::*")
    narrow = issue(RESEARCHER, "tool.call:Tool::web_search")
    with _client(gate) as client:
        _signed_in(client, issue(AUDITOR, "admin:Admin::read"))
        client.get("/console/api/health/nodes")  # the sampler's baseline: before the decisions
        for token, tool in [
            (full, "web_search"),
            (full, "delete_database"),
            (narrow, "read_file"),
            (narrow, "send_email"),
        ]:
            assert client.post("/v1/decisions", json=tool_request(token, tool)).status_code in (
                200,
                403,
            )
        feed: DecisionFeed = client.app.state.console_feed  # type: ignore[attr-defined]
        size = gate.ledger.size()
        deadline = time.monotonic() + 30
        while feed.size < size and time.monotonic() < deadline:
            feed.wait(0.2)
        out = client.get("/console/api/health/series", params={"window": 300}).json()
    assert out["bucket_s"] == 10
    assert len(out["t"]) == 30
    assert out["denial_totals"] == {"CAPABILITY_INSUFFICIENT": 2, "POLICY_FORBID": 1}
    # all four were timed by this node since the baseline, in the last bucket or the one before
    timed = [c for c in out["latency_count"][-2:] if c is not None]
    assert sum(timed) == 4
    assert out["latency_ms"]["p50"][-1] is not None or out["latency_ms"]["p50"][-2] is not None


@pytest.mark.parametrize(
    "params",
    [
        {"bucket": 15},  # not a multiple of the sampling interval
        {"bucket": 5},
        {"window": 10},
        {"window": 99_999},
        {"bucket": "x"},
    ],
)
def test_series_parameters_are_bounded(
    gate: Gate, issue: Callable[..., str], params: dict[str, Any]
) -> None:
    with _client(gate) as client:
        assert client.get("/console/api/health/series").status_code == 401
        _signed_in(client, issue(AUDITOR, "admin:Admin::read"))
        r = client.get("/console/api/health/series", params=params)
        assert r.status_code == 422, r.text
        assert "detail" in r.json()


def test_a_fleet_nodes_heartbeat_is_shown_as_it_recorded_it() -> None:
    row = NodeRow(
        node_id="n2",
        host="h",
        pid=7,
        started="2026-01-01T00:00:00Z",
        heartbeat="2026-01-01T00:01:00Z",
        lease_age_s=12.5,
        policy_version=3,
        log_size=42,
        attestation="ab" * 32,
        state="POLICY_STALE: no confirmation of the log's head for 12.5 s (lease 5.000 s)",
        silent_s=2.0,
    )
    card = health.fleet_node(row)
    assert card["state"] == "fail-closed"
    assert card["reasons"] == [
        {
            "code": "POLICY_STALE",
            "detail": "no confirmation of the log's head for 12.5 s (lease 5.000 s)",
        }
    ]
    assert (card["heartbeat_age_s"], card["silent"]) == (2.0, False)
    assert (card["policy_version"], card["log_size"]) == (3, 42)

    ok = dataclasses.replace(row, state="ok")
    assert health.fleet_node(ok)["state"] == "ready"
    assert health.fleet_node(ok)["reasons"] == []
    # the heartbeat's state covers ledger and lease only: the shared kill switch is added
    killed = health.fleet_node(ok, kill_switch=True)
    assert killed["state"] == "fail-closed"
    assert [r["code"] for r in killed["reasons"]] == ["POLICY_FORBID"]
    unloaded = health.fleet_node(dataclasses.replace(ok, policy_version=None))
    assert [r["code"] for r in unloaded["reasons"]] == ["POLICY_UNAVAILABLE"]
    # silent past SILENT_S: what it recorded may no longer be true
    quiet = health.fleet_node(dataclasses.replace(ok, silent_s=health.SILENT_S + 1))
    assert (quiet["state"], quiet["silent"]) == ("silent", True)
