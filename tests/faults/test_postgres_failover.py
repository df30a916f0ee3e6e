"""Fault matrix, PostgreSQL failover: the primary of a private primary + synchronous standby
pair crashes (``pg_ctl stop -m immediate``) under two deciding nodes, the standby is promoted
(``pg_ctl promote``), and the nodes carry on through the same multi-host store URL.

The pair is the test's own: two clusters on free 127.0.0.1 ports in a temporary directory, run
as ``postgres`` when the test runs as root (initdb refuses root); the machine's shared server
is never touched. Replication is **synchronous** (``synchronous_standby_names`` on the primary,
``synchronous_commit = on``, which Interlock also forces per connection): a COMMIT — and so an
allow — returns only once the standby has flushed its WAL, which is what docs/scaling.md §1
requires for a failover to lose nothing that was acknowledged. The promoted standby runs
without a synchronous standby of its own (it has none to wait for; an operator attaches a new
one).

The store URL names both servers, libpq's way: ``postgresql://…@h:p1,h:p2/db?
target_session_attrs=read-write``; every new connection (the pool's, the doorbell's) takes the
first server that accepts writes, so after the promotion the running nodes find the new
primary by themselves, with no restart and no change of configuration.

What the row asserts: every answer a node gave between the crash and the promotion is a deny
with LEDGER_UNAVAILABLE or POLICY_STALE (the harness's check); every node allows again after
the promotion; every allow any node reported — before the crash, around it and after the
promotion — is on the promoted server's log at its index, with its id and decision hash; and
``interlock ledger verify`` passes on it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import tool_request
from tests.faults.harness import Attempt, record
from tests.faults.test_postgres import DOWN, _fleet, _nodes, _recorded, _token
from tests.integration.test_fleet import LEASE_S, NodeProc, _until, _verify
from tests.pg_private import PrivateServers, free_port

#: allows each node reports before the crash (the load the crash lands in)
BEFORE = 100
#: a denied caller's pause before it asks again (allows are asked back to back); it keeps the
#: outage's answers to a few dozen a node instead of thousands of instant denials
DENIED_PAUSE_S = 0.1


class Pair(PrivateServers):
    """A primary and a streaming, synchronous standby in one temporary directory."""

    def __init__(self) -> None:
        super().__init__("interlock-pg-failover-")
        self.ports = {"primary": free_port(), "standby": free_port()}
        self.running: set[str] = set()
        p1, p2 = self.ports["primary"], self.ports["standby"]
        #: the store URL of the fleet: both servers, the one that accepts writes wins
        self.url = (
            f"postgresql://postgres@127.0.0.1:{p1},127.0.0.1:{p2}/postgres"
            "?target_session_attrs=read-write"
        )

    def url_of(self, name: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.ports[name]}/postgres"

    def _data(self, name: str) -> Path:
        return self.dir / name

    def start(self) -> None:
        """initdb the primary, start it with synchronous replication to ``standby``, clone the
        standby with ``pg_basebackup -R``, start it, and wait until the primary reports it as
        its synchronous standby."""
        primary = self._data("primary")
        self.run("initdb", "-D", str(primary), "-A", "trust", "-U", "postgres", "--no-sync")
        with (primary / "pg_hba.conf").open("a") as f:
            f.write("host replication postgres 127.0.0.1/32 trust\n")
        self._start(
            "primary",
            "-c wal_level=replica -c max_wal_senders=4 -c synchronous_commit=on"
            " -c synchronous_standby_names=standby",
        )
        conninfo = (
            f"host=127.0.0.1 port={self.ports['primary']} user=postgres application_name=standby"
        )
        # -R: standby.signal and primary_conninfo (with application_name=standby, the name the
        # primary waits for); -X stream: the WAL written during the copy comes with it
        self.run(
            "pg_basebackup", "-d", conninfo, "-D", str(self._data("standby")), "-R", "-X", "stream"
        )
        self._start("standby", "-c hot_standby=on")

        def synchronous() -> bool:
            with psycopg.connect(self.url_of("primary"), autocommit=True) as c:
                rows = c.execute(
                    "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby'"
                ).fetchall()
            return rows == [("sync",)]

        _until(synchronous, 30, 0.1)

    def _start(self, name: str, extra: str) -> None:
        opts = (
            f"-c listen_addresses=127.0.0.1 -p {self.ports[name]} -k {self.dir} -c fsync=on {extra}"
        )
        log = str(self.dir / f"{name}.log")
        self.run("pg_ctl", "-D", str(self._data(name)), "-l", log, "-w", "-o", opts, "start")
        self.running.add(name)

    def crash(self, name: str) -> None:
        """``pg_ctl stop -m immediate``: what a crash or a power cut leaves (no shutdown
        checkpoint; the clients' connections cut)."""
        self.run("pg_ctl", "-D", str(self._data(name)), "-m", "immediate", "-w", "stop")
        self.running.discard(name)

    def promote(self, name: str) -> None:
        """``pg_ctl promote -w``: returns once the server accepts writes."""
        self.run("pg_ctl", "-D", str(self._data(name)), "-w", "promote")

    def close(self) -> None:
        for name in sorted(self.running):
            if (self._data(name) / "postmaster.pid").exists():
                self.crash(name)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def pair() -> Iterator[Pair]:
    p = Pair()
    try:
        p.start()
        yield p
    finally:
        p.close()


@dataclass
class Load:
    """One node deciding in a loop on a thread of its own, every answer kept with when it was
    asked and when it came (monotonic seconds)."""

    node: NodeProc
    request: dict[str, Any]
    answers: list[tuple[float, float, dict[str, Any]]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    error: list[BaseException] = field(default_factory=list)

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                t0 = time.monotonic()
                d = self.node.decide(self.request)
                self.answers.append((t0, time.monotonic(), d))
                if d["effect"] != "allow":
                    time.sleep(DENIED_PAUSE_S)
        except BaseException as exc:  # noqa: BLE001 - reported by the test's thread
            self.error.append(exc)

    def allows(self, after: float = 0.0) -> int:
        return sum(1 for t0, _, d in self.answers if t0 >= after and d["effect"] == "allow")


def test_failover(tmp_path: Path, pair: Pair) -> None:
    homes = _fleet(tmp_path, pair.url)
    token = _token(homes[0])
    request = tool_request(token)
    with _nodes(homes) as nodes:
        loads = [Load(n, request) for n in nodes]
        threads = [threading.Thread(target=ld.run, daemon=True) for ld in loads]
        for t in threads:
            t.start()
        try:
            _until(lambda: all(ld.allows() >= BEFORE or ld.error for ld in loads), 60, 0.05)
            t_crash = time.monotonic()
            pair.crash("primary")
            t_down = time.monotonic()
            # the outage: held past the lease, so that the nodes' leases run out too
            time.sleep(LEASE_S + 1.0)
            t_promote = time.monotonic()
            pair.promote("standby")
            t_up = time.monotonic()
            _until(lambda: all(ld.allows(after=t_up) >= 1 or ld.error for ld in loads), 45, 0.05)
            t_back = time.monotonic()
        finally:
            for ld in loads:
                ld.stop.set()
            for t in threads:
                t.join(timeout=60)
    for ld in loads:
        assert not ld.error, f"a node's load thread failed: {ld.error[0]!r}"

    # every answer asked after the crash was complete and given before the promotion began
    attempts = [
        Attempt(
            f"decide (running node {i})",
            d["effect"],
            tuple(d["codes"]),
            request_id=d.get("id"),
            index=d["index"],
            detail=d.get("detail") or "",
        )
        for i, ld in enumerate(loads, 1)
        for t0, t1, d in ld.answers
        if t0 >= t_down and t1 <= t_promote
    ]
    for i, ld in enumerate(loads, 1):
        assert any(t0 >= t_down and t1 <= t_promote for t0, t1, _ in ld.answers), (
            f"node {i} gave no answer during the outage"
        )

    # around the crash and after the promotion: allows, or denials for the store being away —
    # never another code (a failover must not look like a corrupt or rewritten log)
    odd = [
        d
        for ld in loads
        for _, _, d in ld.answers
        if d["effect"] != "allow" and (not d["codes"] or d["codes"][0] not in DOWN)
    ]
    assert not odd, f"answers other than allow or {DOWN}: {odd[:3]}"
    reported = [d for ld in loads for _, _, d in ld.answers if d["effect"] == "allow"]
    before = [
        d for ld in loads for _, t1, d in ld.answers if t1 <= t_crash and d["effect"] == "allow"
    ]
    lost = _lost_on(pair.url_of("standby"), reported)
    verified = _verify(homes[0])
    seen = Counter(a.codes[0] for a in attempts if a.codes)
    codes = ", ".join(f"{c} {n}" for c, n in sorted(seen.items()))
    observed = (
        f"observed: primary down {t_promote - t_down:.1f} s before the promotion began,"
        f" {len(attempts)} answers meanwhile ({codes}),"
        f" every node allowing again {t_back - t_up:.1f} s after `pg_ctl promote` returned"
        f" (same URL, no restart); {len(reported)} reported allows ({len(before)} before the"
        f" crash) checked on the promoted server, {len(lost)} missing; the log verifies at size"
        f" {verified.get('size')}"
    )
    print(f"failover: {observed}")
    assert not lost, f"reported allows not on the promoted server's log: {lost[:5]}"
    record(
        "postgres.failover",
        "postgres",
        "two nodes deciding back to back on a synchronous primary + standby pair; the primary"
        " crashed (`pg_ctl stop -m immediate`), the standby promoted (`pg_ctl promote`) past the"
        " lease; the store URL names both servers (`target_session_attrs=read-write`). After"
        " the promotion every node must allow again through that URL, and every allow any node"
        " reported must be on the promoted server's log at its index with its hash",
        DOWN,
        attempts,
        recorded=_recorded(attempts),
        note=observed,
    )


def _lost_on(url: str, reported: list[dict[str, Any]]) -> list[str]:
    """The reported allows that are not at their index on the server at ``url`` with their id,
    effect ``allow`` and decision hash (``sha256`` of the entry)."""
    with psycopg.connect(url, autocommit=True) as c:
        promoted = c.execute("SELECT NOT pg_is_in_recovery()").fetchone()
        assert promoted == (True,), "the standby was not promoted"
        rows = dict(
            c.execute(
                "SELECT idx, data FROM entries WHERE idx = ANY(%s)",
                ([int(d["index"]) for d in reported],),
            ).fetchall()
        )
    lost: list[str] = []
    for d in reported:
        data = rows.get(int(d["index"]))
        rec = json.loads(bytes(data)) if data is not None else {}
        if (
            data is None
            or rec.get("id") != d["id"]
            or rec.get("effect") != "allow"
            or hashlib.sha256(bytes(data)).hexdigest() != d["hash"]
        ):
            lost.append(f"{d['id']} at {d['index']}")
    return lost
