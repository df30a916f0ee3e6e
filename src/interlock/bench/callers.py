"""Durable decision throughput under concurrent callers, all processes counted (issue 14, P3).

    >>> from interlock.bench.callers import throughput
    >>> r = throughput(home, token, processes=2, callers=4, batch=1, seconds=5)  # doctest: +SKIP
    >>> r.rate, r.cpu_us, r.per_commit                                            # doctest: +SKIP
    (3021.4, 318.2, 2.1)

Each process opens its own :class:`~interlock.gate.Gate` on the one home (so each has its own
ledger sequencer; SQLite's write lock orders their commits) and runs ``callers`` threads.
A caller decides one request at a time with ``gate.decide`` (``batch == 1``) or ``batch``
requests per call with ``gate.decide_many``. Every answer must be an allow (a deny aborts the
run: a throughput of denials would measure nothing). The processes start together on a
signal, run for ``seconds``, and report decisions, their own CPU (user + system, every thread:
sequencer and watchers included) and their sequencer's commits, so that the figure reports
decisions/s over the slowest process's wall time, CPU per decision over all processes, and
decisions per fsync (per commit: with ``full`` durability one commit is one fsync).
"""

from __future__ import annotations

import json
import resource
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

__all__ = ["Load", "throughput", "tool_request"]

if TYPE_CHECKING:
    from interlock.ledger.storage.sqlite_shared import SequencerHost


@dataclass(frozen=True)
class Load:
    """One run's outcome: decisions/s, CPU µs per decision (all processes), decisions per
    commit (one fsync each at ``full`` durability), and the counts behind them."""

    rate: float
    cpu_us: float
    per_commit: float
    decisions: int
    commits: int


def tool_request(token: str, i: int) -> dict[str, Any]:
    """The benchmark's action request number ``i``: a tool call its policy allows."""
    return {
        "principal": "spiffe://acme.test/agent/researcher",
        "action": "tool.call",
        "resource": {"type": "Tool", "id": "web_search"},
        "args": {"q": f"query {i}"},
        "capability": token,
    }


def _child(
    home: str, token: str, callers: int, batch: int, seconds: float, sequencer_fd: int = -1
) -> None:
    """One load process: warm up, say ``ready``, wait for ``go`` on stdin, run, report JSON.
    ``sequencer_fd``: a socket to the parent's sequencer, which then commits every record."""
    import socket

    from interlock.gate import Gate
    from interlock.ledger.storage.sqlite_shared import SequencerLink

    gate = Gate.open(home)
    if sequencer_fd >= 0:
        gate.ledger.attach_sequencer(  # type: ignore[attr-defined]
            SequencerLink(socket.socket(fileno=sequencer_fd))
        )
    try:
        gate.decide_many([tool_request(token, i) for i in range(max(batch, 8))])
        print("ready", flush=True)
        sys.stdin.readline()
        counts = [0] * callers
        denied: list[str] = []
        stop = time.monotonic() + seconds

        def work(t: int) -> None:
            i = t * 10_000_000
            while time.monotonic() < stop and not denied:
                if batch == 1:
                    d = gate.decide(tool_request(token, i))
                    if not d.allowed:
                        denied.append(d.codes[0])
                    counts[t] += 1
                    i += 1
                else:
                    out = gate.decide_many([tool_request(token, i + j) for j in range(batch)])
                    denied.extend(d.codes[0] for d in out if not d.allowed)
                    counts[t] += len(out)
                    i += batch

        ledger: Any = gate.ledger
        commits0, committed0 = ledger.commits, ledger.committed
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        threads = [threading.Thread(target=work, args=(t,)) for t in range(callers)]
        t0 = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        elapsed = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
        report = {
            "decisions": sum(counts),
            "seconds": elapsed,
            "cpu": cpu,
            "commits": ledger.commits - commits0,
            "committed": ledger.committed - committed0,
            "denied": denied[:3],
        }
        print(json.dumps(report), flush=True)
    finally:
        gate.close()


def throughput(
    home: Path,
    token: str,
    *,
    processes: int,
    callers: int,
    batch: int,
    seconds: float,
    shared: bool = False,
) -> Load:
    """Run ``processes`` load processes of ``callers`` callers each on ``home``. ``shared``:
    this process commits every process's records with one sequencer (as ``interlock serve
    --workers`` does), and its CPU and commits are counted too.

    Raises:
        RuntimeError: a process failed or a decision was denied.
    """
    host = _host(home) if shared else None
    procs = []
    for _ in range(processes):
        fd = -1
        theirs = None
        if host is not None:
            mine, theirs = socket.socketpair()
            fd = theirs.fileno()
        code = "import sys; from interlock.bench.callers import _child; " + (
            f"_child(*sys.argv[1:3], {callers}, {batch}, {seconds!r}, {fd})"
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", code, str(home), token],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                pass_fds=() if theirs is None else (fd,),
            )
        )
        if host is not None and theirs is not None:
            theirs.close()
            host.serve(mine, f"load process {procs[-1].pid}")
    try:
        for p in procs:
            if p.stdout is None or p.stdout.readline().strip() != "ready":
                raise RuntimeError(f"a load process did not start: {p.communicate()[1][-2000:]}")
        if host is not None:
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            commits0, committed0 = host.ledger.commits, host.ledger.committed
        for p in procs:
            if p.stdin is not None:
                p.stdin.write("go\n")
                p.stdin.flush()
        reports = []
        for p in procs:
            out, err = p.communicate(timeout=seconds + 120)
            if p.returncode != 0 or not out.strip():
                raise RuntimeError(f"a load process failed: {err[-2000:]}")
            reports.append(json.loads(out.strip().splitlines()[-1]))
        if host is not None:
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            reports.append(
                {
                    "decisions": 0,
                    "seconds": 0.0,
                    "cpu": r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime,
                    "commits": host.ledger.commits - commits0,
                    "committed": host.ledger.committed - committed0,
                    "denied": [],
                }
            )
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if host is not None:
            host.close()
    denied = [c for r in reports for c in r["denied"]]
    if denied:
        raise RuntimeError(f"decisions denied during the benchmark: {denied[:3]}")
    decisions = sum(int(r["decisions"]) for r in reports)
    commits = sum(int(r["commits"]) for r in reports)
    wall = max(float(r["seconds"]) for r in reports)
    cpu = sum(float(r["cpu"]) for r in reports)
    return Load(
        rate=decisions / wall,
        cpu_us=cpu / decisions * 1e6 if decisions else 0.0,
        per_commit=sum(int(r["committed"]) for r in reports) / commits if commits else 0.0,
        decisions=decisions,
        commits=commits,
    )


def _host(home: Path) -> SequencerHost:
    """The home's ledger with its log key, behind a sequencer host (as the server's parent)."""
    from interlock.home import Home
    from interlock.ledger.note import NoteSigner
    from interlock.ledger.storage.sqlite import SqliteLedger
    from interlock.ledger.storage.sqlite_shared import SequencerHost

    h = Home.load(home)
    location = h.ledger_location
    if not isinstance(location, Path):
        raise RuntimeError("a shared sequencer needs a SQLite home")
    signer = NoteSigner(h.config.origin, h.private_key("log"))
    return SequencerHost(SqliteLedger(location, signer=signer, durability=h.config.durability))
