"""A fleet: three node processes on one shared PostgreSQL log (issue 12, second part).

Each node is a Python process holding ``Gate.open(home)`` on its own home joined to the log
(``tests/fleet_node.py``): the code path of the SDK, ``exec`` and ``mcp-proxy``, and the gate
behind ``interlock serve``. Each test uses its own database and drops it. No mocks: real
processes, real PostgreSQL, a real TCP proxy for the network faults.

Stopping the PostgreSQL server is not possible here without disturbing its other users; it is
simulated twice: by refusing new connections to the test's database and terminating every
connection to it (``pg_terminate_backend``) — the server is gone as far as the nodes can tell —
and by a TCP proxy that silently stops forwarding (a partition: nothing answers, nothing is
refused).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from interlock.capability import revocation_ids
from tests.conftest import RESEARCHER, SUMMARIZER, edit_config, tool_request

EXE = [sys.executable, "-m", "interlock.cli"]
NODE = [sys.executable, str(Path(__file__).resolve().parents[1] / "fleet_node.py")]
LEASE_S = 2.0
#: time for a slow, shared CI machine on top of the lease
MARGIN_S = 3.0


# -- a TCP proxy that can stop forwarding --------------------------------------------------


class Proxy:
    """A loopback TCP proxy to PostgreSQL. ``blackhole()``: every byte in either direction is
    held, nothing is answered or refused (connections stay open: a network partition as the
    nodes see it); ``heal()``: traffic flows again."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.flowing = threading.Event()
        self.flowing.set()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def blackhole(self) -> None:
        self.flowing.clear()

    def heal(self) -> None:
        self.flowing.set()

    def close(self) -> None:
        self._stop.set()
        self.flowing.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.upstream)
        except OSError:
            client.close()
            return
        pair = {client: server, server: client}
        try:
            while not self._stop.is_set():
                if not self.flowing.is_set():
                    time.sleep(0.02)  # hold everything: read nothing, send nothing
                    continue
                ready, _, _ = select.select(list(pair), [], [], 0.05)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    pair[s].sendall(data)
        except OSError:
            return
        finally:
            client.close()
            server.close()


# -- nodes ---------------------------------------------------------------------------------


class NodeProc:
    def __init__(self, home: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k != "INTERLOCK_HOME"}
        # the repo (for tests.fleet_node) and its src, so that a node imports the Interlock
        # under test even where the venv's editable install points at another checkout
        root = Path(__file__).resolve().parents[2]
        env["PYTHONPATH"] = os.pathsep.join([str(root / "src"), str(root)])
        self.proc = subprocess.Popen(
            [*NODE, str(home)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
            bufsize=1,
        )
        # lines are read on a thread: select() on a buffered pipe misses buffered lines
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        hello = self._read(60)
        assert hello.get("ready"), hello
        self.node_id: str = hello["node_id"]

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(json.loads(line))
        self._lines.put(None)  # end of output: the process exited

    def _read(self, timeout: float = 60) -> dict[str, Any]:
        try:
            got = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("node did not answer") from None
        assert got is not None, "node exited"
        return got

    def rest(self) -> list[dict[str, Any]]:
        """Every line still to come, until the process's output ends."""
        got: list[dict[str, Any]] = []
        while (line := self._lines.get(timeout=30)) is not None:
            got.append(line)
        return got

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def ask(self, **cmd: Any) -> dict[str, Any]:
        self.send(**cmd)
        return self._read()

    def decide(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.ask(op="decide", request=request)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, AssertionError):
                self.send(op="exit")
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "INTERLOCK_HOME"}
    return subprocess.run(
        [*EXE, *args, "--home", str(home)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def _set_store(homes: list[Path], url: str) -> None:
    """Point every home at ``url``: an operator's edit of ``interlock.toml`` on node 1 (the
    new platform trusted, the trust settings recorded on the log), copied to the others (a
    fleet's nodes share one configuration, so one measured platform)."""
    cfg = homes[0] / "interlock.toml"
    text = cfg.read_text()
    start = text.index("store = ")
    end = text.index("\n", start)
    edit_config(homes[0], text[start:end], f'store = "{url}"')
    for h in homes[1:]:
        (h / "interlock.toml").write_text(cfg.read_text())


@pytest.fixture
def fleet_homes(tmp_path: Path, pg_url: str) -> list[Path]:
    """Three homes on one log: node 1 made it, nodes 2 and 3 joined it."""
    from interlock.bootstrap import init_home
    from interlock.home import Home, join_home

    first = init_home(tmp_path / "node1", origin="interlock.test/fleet", store=pg_url).path
    edit_config(first, "deadline_ms = 50", "deadline_ms = 5000")
    edit_config(first, "ledger_timeout_ms = 2000", "ledger_timeout_ms = 1000")
    homes = [first]
    for n in (2, 3):
        homes.append(join_home(tmp_path / f"node{n}", Home.load(first)).path)
    return homes


@pytest.fixture
def home(fleet_homes: list[Path]) -> Path:
    """The home the shared fixtures (``issue``) use: node 1's (every node has its keys)."""
    return fleet_homes[0]


@contextlib.contextmanager
def _nodes(homes: list[Path]) -> Iterator[list[NodeProc]]:
    started: list[NodeProc] = []
    try:
        for h in homes:
            started.append(NodeProc(h))
        yield started
    finally:
        for n in started:
            n.stop()


def _until(check: Any, timeout: float, every: float = 0.01) -> float:
    """Seconds until ``check()`` is true; fails after ``timeout``."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(every)
    return time.monotonic() - t0


def _verify(home: Path) -> dict[str, Any]:
    r = _cli(home, "ledger", "verify", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    out: dict[str, Any] = json.loads(r.stdout)
    assert out["ok"] is True
    return out


# -- propagation -------------------------------------------------------------------------------


def test_governance_through_node_1_denies_on_nodes_2_and_3(
    fleet_homes: list[Path], issue: Any
) -> None:
    token = issue(RESEARCHER, "tool.call:Tool::*")
    other = issue(RESEARCHER, "tool.call:Tool::*")
    helper = issue(SUMMARIZER, "tool.call:Tool::web_search")
    timings: dict[str, list[float]] = {}
    with _nodes(fleet_homes) as (n1, n2, n3):
        for n in (n1, n2, n3):
            for t, who in ((token, RESEARCHER), (other, RESEARCHER), (helper, SUMMARIZER)):
                d = n.decide(tool_request(t, principal=who))
                assert d["effect"] == "allow", d

        def spread(what: str, request: dict[str, Any], code: str) -> None:
            t0 = time.monotonic()
            for n in (n2, n3):

                def denied(n: NodeProc = n) -> bool:
                    d = n.decide(request)
                    assert d["effect"] == "deny" or time.monotonic() - t0 < LEASE_S, d
                    return d["effect"] == "deny" and code in d["codes"]

                _until(denied, LEASE_S)
                timings.setdefault(what, []).append(time.monotonic() - t0)

        assert "index" in n1.ask(op="revoke", ids=list(revocation_ids(token)))
        spread("revocation", tool_request(token), "CAPABILITY_REVOKED")
        assert n2.decide(tool_request(other))["effect"] == "allow"  # only that token

        assert "index" in n1.ask(op="quarantine", principal=SUMMARIZER)
        spread("quarantine", tool_request(helper, principal=SUMMARIZER), "PRINCIPAL_QUARANTINED")

        assert "index" in n1.ask(op="kill", on=True)
        spread("kill switch", tool_request(other), "POLICY_FORBID")
        assert "index" in n1.ask(op="kill", on=False)
        for n in (n2, n3):
            _until(lambda n=n: n.decide(tool_request(other))["effect"] == "allow", LEASE_S)

        got = n1.ask(op="policy", version=2, forbid="read_file")
        assert got.get("version") == 2, got
        spread("policy activation", tool_request(other, "read_file"), "POLICY_FORBID")
        for n in (n2, n3):
            assert n.decide(tool_request(other))["effect"] == "allow"
            st = n.ask(op="state")
            assert st["fail_closed"] is None, st
    for what, ts in timings.items():
        print(
            f"propagation of {what} to nodes 2 and 3: {', '.join(f'{t * 1000:.1f} ms' for t in ts)}"
        )
    _verify(fleet_homes[0])


# -- the store goes away -----------------------------------------------------------------------


def _admin(pg_url: str) -> str:
    return pg_url.rsplit("/", 1)[0] + "/test"


def _terminate_all(pg_url: str) -> int:
    name = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(_admin(pg_url), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchall()
    return len(rows)


def _allow_connections(pg_url: str, on: bool) -> None:
    name = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(_admin(pg_url), autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS {'true' if on else 'false'}")


def _outage(nodes: list[NodeProc], request: dict[str, Any], fault: Any, heal: Any) -> None:
    """Every node denies within lease + margin of ``fault()``, allows nothing for a while
    longer than the lease, and allows again by itself after ``heal()``."""
    for n in nodes:
        assert n.decide(request)["effect"] == "allow"
    t0 = time.monotonic()
    fault()
    try:
        for n in nodes:
            waited = _until(
                lambda n=n: n.decide(request)["effect"] == "deny", LEASE_S + MARGIN_S, 0.05
            )
            print(f"denied after {waited * 1000:.0f} ms")
        # nothing is allowed while the store is away, well past the lease
        seen: set[str] = set()
        while time.monotonic() - t0 < 2 * LEASE_S + MARGIN_S:
            for n in nodes:
                d = n.decide(request)
                assert d["effect"] == "deny" and d["index"] is None, d
                assert d["codes"][0] in ("LEDGER_UNAVAILABLE", "POLICY_STALE"), d
                seen.add(d["codes"][0])
            time.sleep(0.1)
        # after the lease, a node knows it is stale: POLICY_STALE with the lease's age
        for n in nodes:
            d = n.decide(request)
            if d["codes"] == ["POLICY_STALE"]:
                assert "s ago" in d["detail"] or "not yet" in d["detail"] or "start" in d["detail"]
            st = n.ask(op="state")
            assert st["fail_closed"] is not None, st
        print(f"codes seen during the outage: {sorted(seen)}")
    finally:
        heal()
    t1 = time.monotonic()
    for n in nodes:
        _until(lambda n=n: n.decide(request)["effect"] == "allow", 30, 0.1)
    print(f"every node allowed again {time.monotonic() - t1:.1f} s after the store came back")


def test_killed_and_refused_connections_deny_then_recover(
    fleet_homes: list[Path], pg_url: str, issue: Any
) -> None:
    request = tool_request(issue())
    with _nodes(fleet_homes) as nodes:
        # only killed connections: every node's next call fails or reconnects, nothing is
        # allowed on a broken connection, and they carry on
        assert _terminate_all(pg_url) > 0
        allowed: list[int] = []
        for n in nodes:
            d = n.decide(request)
            assert d["effect"] == "deny" or d["index"] is not None, d
            if d["effect"] == "allow":  # on a fresh connection: it must be on the log
                allowed.append(d["index"])
        for n in nodes:
            _until(lambda n=n: n.decide(request)["effect"] == "allow", 10, 0.05)

        # the server "stops": no new connection, every open one killed
        def fault() -> None:
            _allow_connections(pg_url, False)
            _terminate_all(pg_url)

        _outage(nodes, request, fault, lambda: _allow_connections(pg_url, True))
    out = _verify(fleet_homes[0])
    assert all(i < out["size"] for i in allowed)


def test_a_partition_denies_then_recovers(fleet_homes: list[Path], pg_url: str, issue: Any) -> None:
    proxy = Proxy(("127.0.0.1", 5432))
    try:
        via = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        assert via != pg_url
        _set_store(fleet_homes, via)
        request = tool_request(issue())
        with _nodes(fleet_homes) as nodes:
            _outage(nodes, request, proxy.blackhole, proxy.heal)
    finally:
        proxy.close()
    # the auditor reads the log directly (verification does not measure the platform)
    cfg = fleet_homes[0] / "interlock.toml"
    cfg.write_text(cfg.read_text().replace(via, pg_url))
    _verify(fleet_homes[0])


def test_a_node_opened_while_the_store_is_away_starts_denies_and_recovers(
    fleet_homes: list[Path], pg_url: str, issue: Any
) -> None:
    proxy = Proxy(("127.0.0.1", 5432))
    try:
        _set_store(fleet_homes, pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}"))
        request = tool_request(issue())
        proxy.blackhole()
        with _nodes([fleet_homes[1]]) as (node,):
            for _ in range(5):
                d = node.decide(request)
                assert d["effect"] == "deny" and d["index"] is None, d
                assert d["codes"][0] in ("LEDGER_UNAVAILABLE", "POLICY_STALE"), d
            assert node.ask(op="state")["fail_closed"].startswith("LEDGER_UNAVAILABLE")
            proxy.heal()
            waited = _until(lambda: node.decide(request)["effect"] == "allow", 30, 0.1)
            print(f"a node opened during the outage allowed {waited:.1f} s after it ended")
            assert node.ask(op="state")["fail_closed"] is None
    finally:
        proxy.close()


# -- many writers, and a writer killed ---------------------------------------------------------


def test_three_nodes_writing_at_once_make_one_gap_free_log(
    fleet_homes: list[Path], issue: Any
) -> None:
    request = tool_request(issue())
    per_node = 150
    with _nodes(fleet_homes) as nodes:
        for n in nodes:
            n.send(op="burst", n=per_node, request=request)
        indices: list[int] = []
        for n in nodes:
            for _ in range(per_node):
                d = n._read()
                assert d["effect"] == "allow", d
                indices.append(d["index"])
            assert n._read() == {"done": True}
        assert len(set(indices)) == len(indices)
        # let every follower reach the head, then compare what each node decides from
        time.sleep(LEASE_S / 3 + 0.5)
        states = [n.ask(op="state") for n in nodes]
    out = _verify(fleet_homes[0])
    assert out["entries"] == out["size"] and max(indices) < out["size"]
    snaps = [s["snapshot"] for s in states]
    assert snaps[0] is not None and snaps.count(snaps[0]) == 3, snaps
    marks = {s["watermark"] for s in states}
    assert len(marks) == 1, states  # every node folded the same head


def test_a_node_killed_in_the_middle_of_appends_leaves_a_log_that_verifies(
    fleet_homes: list[Path], issue: Any
) -> None:
    from interlock.audit import open_for_audit

    request = tool_request(issue())
    with _nodes(fleet_homes[:2]) as (n1, n2):
        n2.send(op="burst", n=2000, request=request)
        n1.send(op="burst", n=100, request=request)
        told: list[int] = []
        while len(told) < 50:
            d = n2._read()
            if d["effect"] == "allow":
                told.append(d["index"])
        os.kill(n2.proc.pid, signal.SIGKILL)
        n2.proc.wait()
        for d in n2.rest():  # answers the caller had been sent before the kill
            if d.get("effect") == "allow":
                told.append(d["index"])
        for _ in range(100):
            assert n1._read()["effect"] == "allow"
        assert n1._read() == {"done": True}
    _verify(fleet_homes[0])
    with open_for_audit(fleet_homes[0]) as view:
        for idx in told:
            rec = json.loads(view.ledger.entry(idx))
            assert rec["type"] == "decision" and rec["effect"] == "allow", rec
    print(f"{len(told)} allows told before the kill, all on the log")


# -- what a node says about itself -------------------------------------------------------------


def test_health_metrics_and_nodes_show_the_lease(fleet_homes: list[Path], issue: Any) -> None:
    from starlette.testclient import TestClient

    from interlock.gate import Gate
    from interlock.server.app import create_app

    with Gate.open(fleet_homes[0]) as gate:
        assert gate.lease is not None and gate.node is not None
        client = TestClient(create_app(gate), base_url="http://localhost")
        h = client.get("/healthz").json()
        assert h["fail_closed"] == "ok", h
        assert h["lease"]["lease_s"] == LEASE_S and h["lease"]["stale"] is False
        assert 0 <= h["lease"]["age_s"] < LEASE_S
        text = client.get("/metrics").text
        assert "interlock_lease_age_seconds" in text
        assert "interlock_stale_denials_total 0.0" in text
        mine = gate.node.node_id
        _until(lambda: any(r.node_id == mine for r in gate.ledger.nodes()), 5)  # type: ignore[attr-defined]
        # a lease that lapsed: every decision denies POLICY_STALE, and says so everywhere
        gate.node.stop()
        gate.lease.confirmed_at = time.monotonic() - LEASE_S - 0.5
        d = gate.decide(tool_request(issue()))
        assert d.codes == ("POLICY_STALE",) and d.ledger_index is None
        assert "s ago" in d.reasons[0].detail
        h = client.get("/healthz").json()
        assert h["fail_closed"].startswith("POLICY_STALE") and h["lease"]["stale"] is True
        assert client.get("/readyz").status_code == 503
        assert "interlock_stale_denials_total 1.0" in client.get("/metrics").text
    # a node that stopped cleanly has left the list; a running one is on it
    with _nodes(fleet_homes[1:2]) as (running,):
        rows: list[dict[str, Any]] = []

        def listed() -> bool:
            r = _cli(fleet_homes[0], "nodes", "--json")
            assert r.returncode == 0, r.stdout + r.stderr
            rows[:] = json.loads(r.stdout)
            return any(row["node_id"] == running.node_id for row in rows)

        _until(listed, 10, 0.2)  # its first heartbeat
        assert mine not in {row["node_id"] for row in rows}, rows
        assert {"node_id", "lease_age_s", "policy_version", "log_size", "state"} <= set(rows[0])
        r = _cli(fleet_homes[0], "nodes")
        assert r.returncode == 0 and "Nodes on the shared log" in r.stdout


def test_the_lease_check_is_strict() -> None:
    from interlock.fleet.lease import Lease

    lease = Lease(LEASE_S)
    assert lease.stale(100.0) is not None  # never confirmed
    lease.confirm(100.0)
    assert lease.stale(100.0 + LEASE_S) is None
    assert lease.stale(100.0 + LEASE_S + 1e-6) is not None
    lease.behind = "the log's policy cannot be loaded"
    assert lease.stale(100.0) == "the log's policy cannot be loaded"
    lease.confirm(101.0)
    assert lease.behind is None and lease.stale(101.5) is None
    # its cost on the decision path is a benchmark figure (interlock bench: lease_check)
