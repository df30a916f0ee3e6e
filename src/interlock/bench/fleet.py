"""Benchmarks of the fleet (issue 12): nodes on one shared PostgreSQL log.

    figures = bench_fleet(quick=True)
    figures["P8_propagation_p99"]["met"]

* **P8** — propagation: a revocation appended through node 1, until nodes 2 and 3 each deny a
  request carrying the revoked token (p50/p99 over the runs, each node a process of its own);
  baseline: the lease (the bound a node must meet or deny).
* **Fleet throughput** — durable decisions/s of 1, 2 and 3 node processes deciding at once
  (8 threads each) on one PostgreSQL log; baseline: one node on SQLite (the embedded default,
  ``full`` durability) in the same run.
* **Lease check** — the check each decision makes on a fleet node (:meth:`Lease.stale` with
  the clock read), beside reading the clock alone.

The database is made for the run and dropped after it, on the server at
``$INTERLOCK_BENCH_PG`` (default ``postgresql://postgres@127.0.0.1:5432/test``, the one
``make bench`` ensures).
"""

from __future__ import annotations

import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from interlock.bench.common import Result, figure, pct, set_deadline

__all__ = ["bench_fleet"]

ADMIN_URL = os.environ.get("INTERLOCK_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
_PRINCIPAL = "spiffe://acme.test/agent/researcher"

#: a node process: open the gate, say ready, then obey one JSON command per line
_NODE = r"""
import json, sys, threading, time
from interlock.gate import Gate
gate = Gate.open(sys.argv[1])
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["op"] == "exit":
        break
    if cmd["op"] == "until_denied":  # decide until the request is denied; when, on the clock
        while gate.decide(cmd["request"]).allowed:
            time.sleep(0.0005)
        print(json.dumps({"at": time.monotonic()}), flush=True)
    elif cmd["op"] == "allowed":
        print(json.dumps({"allowed": gate.decide(cmd["request"]).allowed}), flush=True)
    elif cmd["op"] == "revoke":
        t = time.monotonic()
        gate.revoke(tuple(cmd["ids"]), reason="bench")
        print(json.dumps({"at": t}), flush=True)
    elif cmd["op"] == "load":  # threads x decisions from start_at (a shared monotonic time)
        done, denied = [0], []
        def work(t):
            req = dict(cmd["request"])
            while time.monotonic() < cmd["start_at"]:
                time.sleep(0.001)
            end = cmd["start_at"] + cmd["seconds"]
            while time.monotonic() < end:
                d = gate.decide({**req, "args": {"q": f"{t}-{done[0]}"}})
                if d.allowed:
                    done[0] += 1
                else:
                    denied.append(d.codes[0])
        ths = [threading.Thread(target=work, args=(t,)) for t in range(cmd["threads"])]
        for th in ths: th.start()
        for th in ths: th.join()
        print(json.dumps({"allowed": done[0], "denied": denied[:5], "n_denied": len(denied)}),
              flush=True)
gate.close()
"""


class _Node:
    def __init__(self, home: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k != "INTERLOCK_HOME"}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _NODE, str(home)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        if self.proc.stdin is None or self.proc.stdout is None:  # pragma: no cover - PIPE
            raise RuntimeError("pipes missing")
        self._in, self._out = self.proc.stdin, self.proc.stdout
        self.read()

    def send(self, **cmd: Any) -> None:
        self._in.write(json.dumps(cmd) + "\n")
        self._in.flush()

    def read(self) -> dict[str, Any]:
        line = self._out.readline()
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr is not None else ""
            raise RuntimeError(f"a fleet node exited: {err[-2000:]}")
        out: dict[str, Any] = json.loads(line)
        return out

    def ask(self, **cmd: Any) -> dict[str, Any]:
        self.send(**cmd)
        return self.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send(op="exit")
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


def _database() -> str:
    """A new database on the bench's server, by URL.

    Raises:
        RuntimeError: the server cannot be reached (what to do is in the message).
    """
    import psycopg

    name = f"interlock_b_{secrets.token_hex(6)}"
    try:
        with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"CREATE DATABASE {name}")
    except psycopg.Error as exc:
        raise RuntimeError(
            f"the fleet benchmarks need PostgreSQL ({exc.__class__.__name__}): run"
            " scripts/ensure-postgres.sh (make bench does) or set INTERLOCK_BENCH_PG"
        ) from exc
    parts = urlsplit(ADMIN_URL)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


def _drop(url: str) -> None:
    import psycopg

    name = urlsplit(url).path.lstrip("/")
    if not name.startswith("interlock_b_"):  # pragma: no cover - only ours
        return
    with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _request(token: str) -> dict[str, Any]:
    return {
        "principal": _PRINCIPAL,
        "action": "tool.call",
        "resource": {"type": "Tool", "id": "web_search"},
        "args": {"q": "bench"},
        "capability": token,
    }


def _throughput(homes: list[Path], token: str, seconds: float, threads: int = 8) -> float:
    """Durable decisions/s of one node process per home, deciding at once."""
    nodes = [_Node(h) for h in homes]
    try:
        start_at = time.monotonic() + 1.0
        for n in nodes:
            n.send(
                op="load", request=_request(token), threads=threads, seconds=seconds,
                start_at=start_at,
            )  # fmt: skip
        answers = [n.read() for n in nodes]
    finally:
        for n in nodes:
            n.close()
    denied = sum(a["n_denied"] for a in answers)
    if denied:
        codes = [c for a in answers for c in a["denied"]]
        raise RuntimeError(f"{denied} fleet decisions denied during the benchmark: {codes}")
    return float(sum(a["allowed"] for a in answers)) / seconds


def bench_fleet(quick: bool = False) -> dict[str, Result]:
    """Measure P8 propagation, fleet throughput with 1-3 nodes beside SQLite, the lease check.

    Raises:
        RuntimeError: PostgreSQL cannot be reached, or a node failed or denied.
    """
    from interlock.bootstrap import init_home
    from interlock.capability import CapabilityIssuer, Right, revocation_ids
    from interlock.fleet.lease import Lease
    from interlock.home import Home, join_home
    from interlock.trust import keys

    runs = 10 if quick else 50
    seconds = 2.0 if quick else 8.0
    url = _database()
    try:
        with tempfile.TemporaryDirectory(prefix="interlock-bench-fleet-") as tmp:
            first = init_home(Path(tmp) / "node1", origin="interlock.bench/fleet", store=url)
            set_deadline(first, 2000)
            homes = [first.path] + [
                join_home(Path(tmp) / f"node{n}", Home.load(first.path)).path for n in (2, 3)
            ]
            issuer = CapabilityIssuer(keys.private_raw(first.private_key("biscuit-root")))

            def token() -> str:
                now = datetime.now(UTC)
                return issuer.issue(
                    principal=_PRINCIPAL,
                    rights=[Right.parse("tool.call:Tool::*")],
                    expires_at=now + timedelta(hours=1),
                    now=now,
                )

            # P8: revoke through node 1; nodes 2 and 3 decide until they deny
            lease_s = Home.load(first.path).config.lease_ms / 1000
            nodes = [_Node(h) for h in homes]
            delays: list[float] = []
            try:
                for _ in range(runs):
                    tok = token()
                    for n in nodes[1:]:
                        if not n.ask(op="allowed", request=_request(tok))["allowed"]:
                            raise RuntimeError("a fresh token was denied before its revocation")
                    for n in nodes[1:]:
                        n.send(op="until_denied", request=_request(tok))
                    at = nodes[0].ask(op="revoke", ids=list(revocation_ids(tok)))["at"]
                    delays.extend((n.read()["at"] - at) * 1000 for n in nodes[1:])
            finally:
                for n in nodes:
                    n.close()

            fleet = {k: _throughput(homes[:k], token(), seconds) for k in (1, 2, 3)}

            sqlite_home = init_home(Path(tmp) / "sqlite", origin="interlock.bench/fleet-sqlite")
            set_deadline(sqlite_home, 2000)
            sq_issuer = CapabilityIssuer(keys.private_raw(sqlite_home.private_key("biscuit-root")))
            now = datetime.now(UTC)
            sq_token = sq_issuer.issue(
                principal=_PRINCIPAL,
                rights=[Right.parse("tool.call:Tool::*")],
                expires_at=now + timedelta(hours=1),
                now=now,
            )
            sqlite_rate = _throughput([sqlite_home.path], sq_token, seconds)
    finally:
        _drop(url)

    # the lease check as a decision makes it, against reading the clock alone
    lease = Lease(lease_s)
    lease.confirm(time.monotonic() + 3600)  # fresh for the whole measurement
    iterations = 200_000 if quick else 1_000_000
    clock = time.monotonic
    t0 = time.perf_counter()
    for _ in range(iterations):
        lease.stale(clock())
    check_ns = (time.perf_counter() - t0) / iterations * 1e9
    t0 = time.perf_counter()
    for _ in range(iterations):
        clock()
    clock_ns = (time.perf_counter() - t0) / iterations * 1e9

    p50, p99 = statistics.median(delays), pct(delays, 0.99)
    lease_ms = lease_s * 1000
    what = f"the freshness lease ({lease_ms:.0f} ms)"
    per_node = "durable decisions/s, 8 threads per node process"
    out: dict[str, Result] = {
        "P8_propagation_p50": figure(
            p50, "ms", lease_ms, what, "reported", True, runs=runs, nodes=2
        ),
        "P8_propagation_p99": figure(
            p99, "ms", lease_ms, what, "p99 <= 100 ms across 3 nodes (P8)", p99 <= 100, runs=runs
        ),
    }
    for k, rate in fleet.items():
        out[f"fleet_{k}_node{'s' if k > 1 else ''}"] = figure(
            rate,
            "decisions/s",
            sqlite_rate,
            "one node on SQLite, full durability, 8 threads (decisions/s)",
            f"reported: {per_node}, {k} on one PostgreSQL",
            True,
            seconds=seconds,
        )
    out["lease_check"] = figure(
        check_ns,
        "ns",
        clock_ns,
        "time.monotonic() alone (ns)",
        "reported: the lease check's cost on the decision path",
        True,
        added_ns=round(check_ns - clock_ns, 1),
    )
    return out
