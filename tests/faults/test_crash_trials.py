"""Crash trials (issue 16): 100 ``kill -9`` trials under concurrent load.

Each trial starts several processes deciding on one home (two threads each: their appends
share commits), each reporting every allow it was told of — request id, ledger index, decision
hash — to a file, one write per allow; kills one of them or all of them with SIGKILL at a
random moment (so in a decision, an append, a checkpoint or the tree's integration, wherever
it lands), stops the rest, then runs ``interlock ledger verify`` on the home and looks every
reported allow up at its index. Most trials run on SQLite homes (a fresh one every ten
trials), some on a fleet: nodes on one PostgreSQL database.

The seed is printed; ``INTERLOCK_CRASH_SEED`` replays a run's kill moments.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RESEARCHER, edit_config, tool_request
from tests.faults.harness import CRASH, env_for

DRIVER = Path(__file__).with_name("crash_driver.py")
SQLITE_TRIALS = 90
#: of the SQLite trials, those with a decide_many caller in every process (issue 14)
SEQUENCER_TRIALS = 30
#: of the SQLite trials, those whose deciders hand their records to one sequencer process
SHARED_TRIALS = 20
FLEET_TRIALS = 10
PROCESSES = 3


class Driver:
    def __init__(self, home: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(DRIVER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env_for(home),
        )

    def ask(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the crash driver exited"
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write('{"op": "exit"}\n')
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def rng() -> random.Random:
    seed = int(os.environ.get("INTERLOCK_CRASH_SEED", random.SystemRandom().randrange(2**32)))
    print(f"crash trials: INTERLOCK_CRASH_SEED={seed}")
    return random.Random(seed)


def _token(home: Path) -> str:
    from datetime import UTC, datetime, timedelta

    from interlock.capability import CapabilityIssuer, Right
    from interlock.home import Home
    from interlock.trust import keys

    issuer = CapabilityIssuer(keys.private_raw(Home.load(home).private_key("biscuit-root")))
    return issuer.issue(
        principal=RESEARCHER,
        rights=[Right.parse("tool.call:Tool::*")],
        expires_at=datetime.now(UTC) + timedelta(hours=1),
    )


def _sqlite_home(where: Path) -> Path:
    from interlock.bootstrap import init_home

    home = init_home(where, origin="interlock.test/crash").path
    edit_config(home, "deadline_ms = 50", "deadline_ms = 5000")
    return home


def _trial(
    driver: Driver,
    rng: random.Random,
    homes: list[str],
    out: Path,
    verify_home: Path,
    batch: int = 1,
    shared: bool = False,
) -> dict[str, int]:
    """One trial; returns its counts."""
    out.mkdir()
    (out / "request.json").write_text(json.dumps(tool_request(_token(verify_home))))
    pids = driver.ask(op="start", homes=homes, out=str(out), threads=2, batch=batch, shared=shared)[
        "pids"
    ]
    time.sleep(rng.uniform(0.05, 0.8))  # the random moment
    kill_all = rng.random() < 0.5
    victims = pids if kill_all else [rng.choice(pids)]
    # a shared sequencer's process (the first pid) is the victim of half the single kills;
    # its deciders must then stop on their own
    host_only = shared and not kill_all and rng.random() < 0.5
    if host_only:
        victims = [pids[0]]
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    if not kill_all and not host_only:
        time.sleep(rng.uniform(0.0, 0.3))  # the others go on past the crash, then stop
        for pid in pids:
            if pid not in victims:
                os.kill(pid, signal.SIGTERM)
    if host_only:
        stayed = _still_running(pids[1:], within=30.0)
        for pid in stayed:
            os.kill(pid, signal.SIGTERM)
        assert not stayed, f"deciders {stayed} went on without their sequencer"
    status = {int(p): s for p, s in driver.ask(op="reap")["status"].items()}
    for pid in pids:
        if pid in victims:
            assert os.WIFSIGNALED(status[pid]) and os.WTERMSIG(status[pid]) == signal.SIGKILL
        else:
            assert os.waitstatus_to_exitcode(status[pid]) == 0, f"decider {pid} failed"
    reported = [
        line.split()
        for p in pids
        if (out / f"allows-{p}").exists()
        for line in (out / f"allows-{p}").read_text().splitlines()
    ]
    verified = driver.ask(op="verify", home=str(verify_home), out=str(out))
    ok = verified["exit"] == 0 and json.loads(verified["out"]).get("ok") is True
    if not ok:
        CRASH.notes.append(
            f"{out.name} ({len(victims)} killed): `ledger verify` exit {verified['exit']}: "
            + " ".join(verified["out"].split())
        )
    lost = _lost(verify_home, reported)
    return {
        "trials": 1,
        "killed": len(victims),
        "reported": len(reported),
        "lost": lost,
        "verified": int(ok),
    }


def _still_running(pids: list[int], *, within: float) -> list[int]:
    """Those of ``pids`` still running (not exited, not a zombie) after up to ``within`` s."""

    def running(pid: int) -> bool:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] != "Z"

    deadline = time.monotonic() + within
    while time.monotonic() < deadline and any(running(p) for p in pids):
        time.sleep(0.02)
    return [p for p in pids if running(p)]


def _lost(home: Path, reported: list[list[str]]) -> int:
    """How many reported allows are not on the ledger at their index, as decided."""
    from interlock.audit import open_for_audit

    lost = 0
    with open_for_audit(home) as view:
        size = view.ledger.size()
        for _, rid, idx, digest in reported:
            i = int(idx)
            if i >= size:
                lost += 1
                continue
            data = view.ledger.entry(i)
            rec = json.loads(data)
            if (
                rec.get("id") != rid
                or rec.get("effect") != "allow"
                or hashlib.sha256(data).hexdigest() != digest
            ):
                lost += 1
    return lost


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[Driver]:
    d = Driver(tmp_path)
    try:
        yield d
    finally:
        d.close()


def _run(kind: str, counts: list[dict[str, int]]) -> None:
    for c in counts:
        CRASH.add(kind, **c)
    total = {k: sum(c[k] for c in counts) for k in counts[0]}
    print(f"crash trials ({kind}): {total}")
    assert total["lost"] == 0, f"{total['lost']} reported allows lost"
    assert total["verified"] == total["trials"], "the ledger failed verification after a trial"
    assert total["reported"] >= total["trials"], "too few allows reported to mean anything"


def _sqlite_trials(
    tmp_path: Path,
    driver: Driver,
    rng: random.Random,
    trials: int,
    batch: Callable[[int], int] = lambda _n: 1,
    shared: bool = False,
) -> list[dict[str, int]]:
    """``trials`` trials of ``PROCESSES`` processes on one SQLite home (a fresh home every
    ten); trial ``n`` decides ``batch(n)`` requests a call on its first thread."""
    counts: list[dict[str, int]] = []
    home = tmp_path
    for n in range(trials):
        if n % 10 == 0:
            home = _sqlite_home(tmp_path / f"home{n // 10}")
        homes = [str(home)] * PROCESSES
        out = tmp_path / f"trial{n}"
        counts.append(_trial(driver, rng, homes, out, home, batch=batch(n), shared=shared))
    return counts


def test_kill_9_trials_on_sqlite_homes(tmp_path: Path, driver: Driver, rng: random.Random) -> None:
    counts = _sqlite_trials(tmp_path, driver, rng, SQLITE_TRIALS - SEQUENCER_TRIALS - SHARED_TRIALS)
    _run(f"SQLite: {PROCESSES} processes on one home", counts)


def test_kill_9_trials_of_the_sequencer_under_batched_load(
    tmp_path: Path, driver: Driver, rng: random.Random
) -> None:
    """Issue 14: the ledger's sequencer thread keeps the promise. Each process's sequencer
    commits batches that mix a ``decide_many`` caller of 16 with a single caller; SIGKILL
    lands wherever it lands — while the sequencer gathers, waits for the write lock, writes,
    syncs or answers — and every allow any caller was told of is on the verifying ledger."""
    counts = _sqlite_trials(tmp_path, driver, rng, SEQUENCER_TRIALS, batch=lambda _n: 16)
    _run(f"SQLite sequencer: {PROCESSES} processes, decide_many of 16 + decide", counts)


def test_kill_9_trials_of_a_sequencer_shared_by_processes(
    tmp_path: Path, driver: Driver, rng: random.Random
) -> None:
    """Issue 14: one sequencer process commits the records of every decider process (as
    ``interlock serve --workers`` does). SIGKILL lands on the sequencer's process (while it
    reads, gathers, writes, syncs or answers), on one decider, or on all; deciders that lose
    the sequencer stop; every allow any caller was told of is on the verifying ledger."""
    counts = _sqlite_trials(
        tmp_path, driver, rng, SHARED_TRIALS, batch=lambda n: 16 if n % 2 else 1, shared=True
    )
    _run(f"SQLite shared sequencer: 1 sequencer process, {PROCESSES} deciders", counts)


def test_kill_9_trials_on_a_fleet(
    tmp_path: Path, driver: Driver, rng: random.Random, pg_url: str
) -> None:
    from interlock.bootstrap import init_home
    from interlock.home import Home, join_home

    first = init_home(tmp_path / "node1", origin="interlock.test/crash", store=pg_url).path
    edit_config(first, "deadline_ms = 50", "deadline_ms = 5000")
    homes = [first] + [
        join_home(tmp_path / f"node{n}", Home.load(first)).path for n in range(2, PROCESSES + 1)
    ]
    counts = [
        _trial(driver, rng, [str(h) for h in homes], tmp_path / f"trial{n}", first)
        for n in range(FLEET_TRIALS)
    ]
    _run(f"PostgreSQL: {PROCESSES} nodes on one database", counts)
