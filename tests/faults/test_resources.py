"""Fault matrix, resources: `interlock decide` and `interlock exec` started under a tight
RLIMIT_NOFILE, and a running gate's process out of memory (RLIMIT_AS, exhausted after the gate
opened)."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import tool_request
from tests.faults.harness import Attempt, decide_cli, env_for, exec_cli, on_ledger, record

_STARVED = r"""
import json, os, resource, sys
from interlock.errors import Denied
from interlock.gate import Gate

what, home, raw = sys.argv[1], sys.argv[2], sys.argv[3]
out = []


def attempt(gate):
    d = gate.decide(raw)
    out.append({"action": "decide (gate process)", "effect": d.effect.value,
                "codes": list(d.codes), "id": d.request_id})
    ran = []
    try:
        with gate.execution(raw):
            ran.append(1)
        out.append({"action": "execution (gate process)", "effect": "allow", "codes": [],
                    "executed": bool(ran)})
    except Denied as exc:
        out.append({"action": "execution (gate process)", "effect": "deny",
                    "codes": list(exc.decision.codes), "id": exc.decision.request_id,
                    "executed": bool(ran)})


gate = Gate.open(home)
assert gate.decide(raw).allowed
report = os.dup(1)  # the answer's way out, kept before the limit bites
if what == "memory":
    ballast = []
    size = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (size + (64 << 20), resource.RLIM_INFINITY))
    try:
        while True:
            ballast.append(bytearray(1 << 20))
    except MemoryError:
        pass
    try:
        while True:
            ballast.append(bytearray(1 << 10))
    except MemoryError:
        pass
    attempt(gate)
    del ballast
os.write(report, (json.dumps(out) + "\n").encode())
gate.close()
"""


def _starved(home: Path, what: str, request: dict[str, Any]) -> list[Attempt]:
    r = subprocess.run(
        [sys.executable, "-c", _STARVED, what, str(home), json.dumps(request)],
        capture_output=True,
        env=env_for(home),
        timeout=120,
        check=False,
    )
    err = r.stderr.decode(errors="replace")
    lines = r.stdout.decode().strip().splitlines()
    assert lines, f"the starved gate gave no answer (exit {r.returncode}): {err[-2000:]}"
    return [
        Attempt(
            a["action"],
            a["effect"],
            tuple(a["codes"]),
            request_id=a.get("id"),
            executed=a.get("executed", False),
            traceback="Traceback" in err,
            detail=err[-300:],
        )
        for a in json.loads(lines[-1])
    ]


def _fds(n: int) -> Any:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))

    return limit


def test_too_many_open_files(home: Path, token: str, tmp_path: Path) -> None:
    # below 9 descriptors `interlock decide` cannot open everything a decision needs here;
    # with 12, `exec` decides (allowed, recorded) but cannot start the command
    attempts = [
        decide_cli(home, tool_request(token), preexec_fn=_fds(n), label=f"decide (CLI, {n} fds)")
        for n in (5, 6, 7, 8)
    ]
    attempts.append(exec_cli(home, token, tmp_path / "ran", preexec_fn=_fds(12)))
    record(
        "resource.open-files",
        "resource",
        "`interlock decide` started with RLIMIT_NOFILE 5 to 8, `interlock exec` with 12",
        ("LEDGER_UNAVAILABLE", "INTERNAL_ERROR", "ENVIRONMENT_UNTRUSTED"),
        attempts,
        recorded=on_ledger(
            home, attempts, why_not="without a descriptor the ledger cannot be opened"
        ),
        note="a gate already running keeps deciding with the descriptors it holds (allowed and"
        " recorded: not a fault for it)",
    )


def test_memory_limit(home: Path, token: str) -> None:
    attempts = _starved(home, "memory", tool_request(token))
    record(
        "resource.memory",
        "resource",
        "a running gate's process at its RLIMIT_AS (address space filled to the last KiB)",
        ("INTERNAL_ERROR", "LEDGER_UNAVAILABLE"),
        attempts,
        recorded=on_ledger(home, attempts, why_not="no memory to build the record"),
    )
