"""Fault matrix, PostgreSQL under a fleet: the server stopped (a private cluster of the test's
own, ``pg_ctl stop -m immediate``), every connection killed with ``pg_terminate_backend`` while
new ones are refused, and the traffic silently dropped (a TCP proxy that stops forwarding).

Two node processes on one shared log (``tests/fleet_node.py``) decide throughout. Every test uses a
database (or cluster) of its own and drops it. Failover to a promoted standby is the row of
``test_postgres_failover.py``."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.conftest import RESEARCHER, edit_config, tool_request
from tests.faults.harness import Attempt, env_for, record
from tests.integration.test_fleet import (
    LEASE_S,
    NODE,
    NodeProc,
    Proxy,
    _allow_connections,
    _set_store,
    _terminate_all,
    _until,
    _verify,
)
from tests.pg_private import Cluster, cluster_fixture  # noqa: F401 - the fixture

DOWN = ("LEDGER_UNAVAILABLE", "POLICY_STALE")


def _fleet(tmp_path: Path, url: str) -> list[Path]:
    from interlock.bootstrap import init_home
    from interlock.home import Home, join_home

    first = init_home(tmp_path / "node1", origin="interlock.test/faults", store=url).path
    edit_config(first, "deadline_ms = 50", "deadline_ms = 5000")
    edit_config(first, "ledger_timeout_ms = 2000", "ledger_timeout_ms = 1000")
    return [first, join_home(tmp_path / "node2", Home.load(first)).path]


class Node(NodeProc):
    """tests/fleet_node.py on ``home``, importing Interlock from this checkout's src/ (the
    platform the test trusted) whatever is installed."""

    def __init__(self, home: Path) -> None:
        import queue
        import subprocess
        import threading

        self.proc = subprocess.Popen(
            [*NODE, str(home)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={k: v for k, v in env_for(home).items() if k != "INTERLOCK_HOME"},
            bufsize=1,
        )
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        hello = self._read(60)
        assert hello.get("ready"), hello
        self.node_id = hello["node_id"]


@contextlib.contextmanager
def _nodes(homes: list[Path]) -> Iterator[list[NodeProc]]:
    started: list[NodeProc] = []
    try:
        for h in homes:
            started.append(Node(h))
        yield started
    finally:
        for n in started:
            n.stop()


def _under_outage(
    homes: list[Path],
    token: str,
    fault: Callable[[], None],
    heal: Callable[[], None],
) -> list[Attempt]:
    """Every attempt the running nodes make from the moment of ``fault()`` until past the
    lease (a new `interlock decide` or `exec` is left out: on a fleet home whose store is
    away it takes ~45 s to answer its deny here, too long for the suite); afterwards
    ``heal()``, and every node allows again by itself."""
    request = tool_request(token)
    attempts: list[Attempt] = []
    with _nodes(homes) as nodes:
        for n in nodes:
            first = n.decide(request)
            assert first["effect"] == "allow", first
        t0 = time.monotonic()
        fault()
        try:
            while time.monotonic() - t0 < LEASE_S + 1.0:
                for i, n in enumerate(nodes, 1):
                    attempts.append(_node_attempt(n, request, i))
                time.sleep(0.2)
        finally:
            heal()
        for n in nodes:
            _until(lambda n=n: n.decide(request)["effect"] == "allow", 30, 0.1)
    return attempts


def _node_attempt(node: NodeProc, request: dict[str, Any], i: int) -> Attempt:
    d = node.decide(request)
    return Attempt(
        f"decide (running node {i})",
        d["effect"],
        tuple(d["codes"]),
        index=d["index"],
        detail=d.get("detail") or "",
    )


def _recorded(attempts: list[Attempt]) -> str:
    written = [a for a in attempts if a.effect != "allow" and a.index is not None]
    return (
        f"{len(written)} of {len(attempts)}"
        if written
        else "not possible: the shared log is what cannot be reached"
    )


def test_stopped(tmp_path: Path, cluster: Cluster) -> None:
    homes = _fleet(tmp_path, cluster.url)
    token = _token(homes[0])
    attempts = _under_outage(homes, token, cluster.stop, cluster.start)
    _verify(homes[0])
    record(
        "postgres.stopped",
        "postgres",
        "a private PostgreSQL cluster under two nodes stopped with `pg_ctl stop -m immediate`"
        " (then started again: every node allows again by itself, the log verifies)",
        DOWN,
        attempts,
        recorded=_recorded(attempts),
    )


def test_connections_killed(tmp_path: Path, pg_url: str) -> None:
    homes = _fleet(tmp_path, pg_url)
    token = _token(homes[0])

    def fault() -> None:
        _allow_connections(pg_url, False)
        _terminate_all(pg_url)

    attempts = _under_outage(homes, token, fault, lambda: _allow_connections(pg_url, True))
    _verify(homes[0])
    record(
        "postgres.connections-killed",
        "postgres",
        "every connection to the fleet's database killed with pg_terminate_backend, new ones"
        " refused (ALTER DATABASE ... ALLOW_CONNECTIONS false), then allowed again",
        DOWN,
        attempts,
        recorded=_recorded(attempts),
    )


def test_traffic_dropped(tmp_path: Path, pg_url: str) -> None:
    proxy = Proxy(("127.0.0.1", 5432))
    homes = _fleet(tmp_path, pg_url)
    token = _token(homes[0])
    via = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    try:
        _set_store(homes, via)
        attempts = _under_outage(homes, token, proxy.blackhole, proxy.heal)
    finally:
        proxy.close()
    cfg = homes[0] / "interlock.toml"
    cfg.write_text(cfg.read_text().replace(via, pg_url))
    _verify(homes[0])
    record(
        "postgres.traffic-dropped",
        "postgres",
        "a TCP proxy between the nodes and PostgreSQL holds every byte both ways (a partition:"
        " nothing answered, nothing refused), then forwards again",
        DOWN,
        attempts,
        recorded=_recorded(attempts),
    )


def _token(home: Path) -> str:
    from datetime import UTC, datetime, timedelta

    from interlock.capability import CapabilityIssuer, Right
    from interlock.home import Home
    from interlock.trust import keys

    issuer = CapabilityIssuer(keys.private_raw(Home.load(home).private_key("biscuit-root")))
    return issuer.issue(
        principal=RESEARCHER,
        rights=[Right.parse("tool.call:Tool::*"), Right.parse("shell.exec:Host::*")],
        expires_at=datetime.now(UTC) + timedelta(minutes=15),
    )
