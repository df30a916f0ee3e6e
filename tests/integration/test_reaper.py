"""Executions whose supervisor died are reaped: they stop being live parents (DESIGN I5/I6)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from interlock.gate import Gate
from interlock.process import process_alive, process_identity
from tests.conftest import tool_request

_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from interlock.gate import Gate
    sys.path.insert(0, {root!r})
    from tests.conftest import tool_request
    gate = Gate.open({home!r})
    with gate.execution(tool_request({token!r}), interval=60) as run:
        print(run.id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_an_execution_whose_process_died_is_reaped(home: Path, issue: Any) -> None:
    tok = issue()
    root = str(Path(__file__).resolve().parents[2])
    out = subprocess.run(
        [sys.executable, "-c", _CHILD.format(root=root, home=str(home), token=tok)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == -9, out.stderr
    dead = out.stdout.strip()
    with Gate.open(home) as gate:  # opening reaps
        row = gate.ledger.execution(dead)
        assert row is not None and row.status == "terminated"
        ends = [
            json.loads(d)
            for _, _, d in gate.ledger.iter_entries()
            if json.loads(d).get("type") == "exec.terminated"
        ]
        assert [e["id"] for e in ends] == [dead] and ends[0]["reaped"] is True
        child = gate.decide(tool_request(tok, parent=dead))
        assert child.codes == ("LINEAGE_BROKEN",)
        # a live execution (this process) is never reaped
        with gate.execution(tool_request(tok), interval=60) as run:
            with Gate.open(home) as other:
                assert other.reap_orphans() == []
            run.check()


def test_process_liveness_needs_the_same_boot_pid_and_start_time() -> None:
    me = process_identity()
    assert me is not None
    assert process_alive(me, me)
    assert not process_alive({**me, "boot_id": "another-boot"}, me)
    assert not process_alive({**me, "start": me["start"] + 1}, me)  # a reused pid
    assert not process_alive({**me, "pid": 2**22 + 7}, me)  # no such process
