"""Crash safety (DESIGN I1, I4): kill -9 a process that is deciding in a loop, then verify the
ledger and find every decision the process had reported as allowed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from interlock.audit import verify_ledger
from interlock.gate import Gate
from tests.conftest import tool_request

CHILD = r"""
import json, sys
from interlock.gate import Gate
req = json.loads(sys.argv[2])
with Gate.open(sys.argv[1]) as gate:
    while True:
        d = gate.decide(req)
        if d.allowed:
            sys.stdout.write(f"ALLOW {d.request_id} {d.ledger_index} {d.decision_hash}\n")
            sys.stdout.flush()
"""


def test_kill_9_loses_no_reported_allow(home: Path, issue: Any) -> None:
    req = tool_request(issue())
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(home), json.dumps(req)],
        stdout=subprocess.PIPE,
        text=True,
    )
    reported: list[tuple[str, int, str]] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    while len(reported) < 150 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        _, rid, idx, dh = line.split()
        reported.append((rid, int(idx), dh))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # whatever the child managed to report in the pipe buffer also counts
    for line in proc.stdout.read().splitlines():
        parts = line.split()
        if len(parts) == 4:
            reported.append((parts[1], int(parts[2]), parts[3]))
    proc.stdout.close()
    assert len(reported) >= 50, "the child reported too few allows to make the test meaningful"

    with Gate.open(home) as gate:
        assert gate.corrupt is None
        report = verify_ledger(gate.ledger, gate.vkey)
        assert report.entries == gate.ledger.size()
        import hashlib

        for rid, idx, dh in reported:
            data = gate.ledger.entry(idx)
            rec = json.loads(data)
            assert rec["id"] == rid
            assert rec["effect"] == "allow"
            assert hashlib.sha256(data).hexdigest() == dh
        # and the recovered gate keeps deciding and appending after the crash
        assert gate.decide(req).allowed
