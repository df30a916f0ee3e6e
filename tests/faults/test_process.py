"""Fault matrix, processes: the gate killed with SIGKILL in the middle of its append, the
`interlock exec` supervisor killed with SIGKILL while its command runs, and the gate stopped
with SIGSTOP in the middle of a decision for longer than its deadline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.conftest import RESEARCHER, allow_code, code_forms, edit_config
from tests.faults.harness import EXE, FAST, Attempt, cli, env_for, ledger_records, record
from tests.faults.test_ledger import held


def _size(home: Path) -> int:
    return sum(len(v) for v in ledger_records(home).values())


def _waiting(pid: int, within: float = 30.0) -> bool:
    """Whether a thread of ``pid`` (the ledger's sequencer) reached a sleep in the kernel
    (the retry of ``BEGIN IMMEDIATE`` waiting for the write lock) within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            return False
        for task in tasks:
            try:
                wchan = (task / "wchan").read_text()
            except OSError:
                continue
            if "nanosleep" in wchan:
                return True
        time.sleep(0.01)
    return False


def test_gate_killed_mid_append(home: Path, token: str, tmp_path: Path) -> None:
    edit_config(home, "ledger_timeout_ms = 2000", "ledger_timeout_ms = 60000")
    before = _size(home)
    marker = tmp_path / "ran"
    attempts: list[Attempt] = []
    with held(home, "write"):
        for what in ("exec", "decide"):
            if what == "exec":
                env = env_for(home, INTERLOCK_CAPABILITY=token, INTERLOCK_PRINCIPAL=RESEARCHER)
                argv = [*EXE, "exec", *FAST, "--", "touch", str(marker)]
            else:
                env = env_for(home)
                argv = [*EXE, "decide", "--json"]
            proc = subprocess.Popen(
                argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            assert proc.stdin is not None
            if what == "decide":
                from tests.conftest import tool_request

                proc.stdin.write(json.dumps(tool_request(token)).encode())
            proc.stdin.close()
            assert _waiting(proc.pid), "the process never waited for the ledger's write lock"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            assert proc.stdout is not None and proc.stderr is not None
            out = proc.stdout.read()
            proc.stdout.close()
            proc.stderr.close()
            attempts.append(
                Attempt(
                    f"{what} (CLI), killed in its append",
                    "none" if not out else "answered",
                    executed=marker.exists(),
                    detail=f"exit {proc.returncode}",
                )
            )
    time.sleep(FAST_GRACE)  # a command that had started would have touched the marker by now
    attempts[0].executed = marker.exists()
    verify = cli(home, "ledger", "verify")
    after = _size(home)
    record(
        "process.gate-killed-mid-append",
        "process",
        "SIGKILL to `interlock exec` and `interlock decide` while each waits in its ledger"
        " append (another process holds the write lock; then released)",
        ("(none)",),
        attempts,
        recorded=f"no: killed before its commit; `ledger verify` exit {verify.returncode},"
        f" {after - before} new entries",
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert after == before


FAST_GRACE = 1.0


def test_supervisor_killed(home: Path, token: str, tmp_path: Path) -> None:
    allow_code(home, RESEARCHER, code_forms("sh", "-c", "x"))
    started, marker = tmp_path / "started", tmp_path / "ran"
    env = env_for(home, INTERLOCK_CAPABILITY=token, INTERLOCK_PRINCIPAL=RESEARCHER)
    proc = subprocess.Popen(
        [*EXE, "exec", *FAST, "--", "sh", "-c", f"touch {started}; sleep 2; touch {marker}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert started.exists(), "the command never started"
    os.kill(proc.pid, signal.SIGKILL)  # the supervisor, from outside (an OOM kill, an operator)
    proc.wait(timeout=10)
    time.sleep(3.0)  # past the command's own 2 s: had it survived, the marker would be there
    terminated = False
    deadline = time.monotonic() + 30
    while not terminated and time.monotonic() < deadline:
        recs = [r for rs in ledger_records(home).values() for r in rs]
        terminated = any(r.get("type") == "exec.terminated" for r in recs)
        time.sleep(0.2)
    attempts = [
        Attempt("exec (CLI), supervisor killed", "none", executed=marker.exists()),
    ]
    record(
        "process.supervisor-killed",
        "process",
        "SIGKILL to the `interlock exec` supervisor while its command (`sleep 2; touch"
        " MARKER`) runs: the command must die with it",
        ("(none)",),
        attempts,
        recorded="yes: exec.terminated (the watchdog's)" if terminated else "no",
    )
    assert terminated, "the killed supervisor's execution was never recorded as terminated"


_STOPPED = r"""
import json, os, signal, sys, time
from interlock.gate import Gate

armed = []


def clock():
    # the gate's clock (Gate.open(clock_ns=...)): armed, its first read — the start of a
    # decision, before the deadline check — stops this process until the test continues it
    if armed:
        armed.clear()
        os.kill(os.getpid(), signal.SIGSTOP)
    return time.time_ns()


with Gate.open(sys.argv[1], clock_ns=clock) as gate:
    raw = sys.stdin.readline()
    for line in sys.stdin:
        if line.strip() == "exit":
            break
        if line.strip() == "stop-in-decide":
            armed.append(1)
        d = gate.decide(raw)
        print(json.dumps({"effect": d.effect.value, "codes": list(d.codes),
                          "id": d.request_id, "index": d.ledger_index}), flush=True)
"""

#: longer than the deadline (1,000 ms here) and the ledger timeout (2,000 ms)
STOP_S = 2.5


def _stopped(pid: int, within: float = 30.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T":
            return True
        time.sleep(0.01)
    return False


def test_gate_stopped_past_the_deadline(home: Path, token: str) -> None:
    from tests.conftest import tool_request
    from tests.faults.harness import on_ledger

    edit_config(home, "deadline_ms = 2000", "deadline_ms = 1000")
    proc = subprocess.Popen(
        [sys.executable, "-c", _STOPPED, str(home)],
        env=env_for(home),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(tool_request(token)) + "\n")

    def once(where: str | None) -> dict[str, Any]:
        """One decision; stopped ``where`` for STOP_S: "in-decide" (by its clock's first
        read) or "in-commit" (waiting for the write lock another process holds until the
        gate is stopped)."""
        assert proc.stdin is not None and proc.stdout is not None
        if where is None:
            proc.stdin.write("decide\n")
            proc.stdin.flush()
        elif where == "in-decide":
            proc.stdin.write("stop-in-decide\n")
            proc.stdin.flush()
            assert _stopped(proc.pid), "the gate did not stop"
            time.sleep(STOP_S)
            os.kill(proc.pid, signal.SIGCONT)
        else:
            with held(home, "write"):
                proc.stdin.write("decide\n")
                proc.stdin.flush()
                assert _waiting(proc.pid), "the gate never waited for the lock"
                os.kill(proc.pid, signal.SIGSTOP)
            time.sleep(STOP_S)
            os.kill(proc.pid, signal.SIGCONT)
        answer: dict[str, Any] = json.loads(proc.stdout.readline())
        return answer

    try:
        control = once(None)
        assert control["effect"] == "allow", control  # the request is allowed when not stopped
        answers = [("in its decision", once("in-decide"))]
        answers.append(("in its ledger commit", once("in-commit")))
        proc.stdin.write("exit\n")
        proc.stdin.close()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    attempts = [
        Attempt(
            f"decide (gate process), SIGSTOP {where}",
            a["effect"],
            tuple(a["codes"]),
            request_id=a["id"],
            index=a["index"],
        )
        for where, a in answers
    ]
    record(
        "process.gate-stopped",
        "process",
        f"SIGSTOP to a gate process for {STOP_S} s (deadline 1,000 ms, ledger timeout 2,000 ms)"
        " inside a decision (from its injected clock's first read, before the deadline check), and"
        " while it waits in its commit (another process held the write lock until then)",
        ("DEADLINE_EXCEEDED", "LEDGER_UNAVAILABLE"),
        attempts,
        recorded=on_ledger(home, attempts),
    )
