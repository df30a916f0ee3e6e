"""The runtime on a real home: `run_command` with real subprocesses, and `gate.execution` for
in-process work. Every termination asserts its reason code on the ledger."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import interlock
from interlock.capability import revocation_ids
from interlock.core.model import ReasonCode
from interlock.gate import Gate
from interlock.runtime import EXECUTION_ENV, run_command
from tests.conftest import RESEARCHER, allow_code, code_forms, tool_request


def shell_request(token: str, *argv: str, parent: str | None = None) -> dict[str, Any]:
    req: dict[str, Any] = {
        "principal": RESEARCHER,
        "action": "shell.exec",
        "resource": {"type": "Host", "id": "localhost"},
        "args": {"argv": list(argv), "cwd": "/"},
        "capability": token,
    }
    if parent is not None:
        req["parent"] = parent
    return req


def by_id(gate: Gate, exec_id: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for _i, _h, data in gate.ledger.iter_entries(0):
        rec = json.loads(data)
        if rec.get("id") == exec_id:
            out[rec["type"]] = rec
    return out


def revoke_later(gate: Gate, token: str, delay: float) -> threading.Thread:
    def _revoke() -> None:
        time.sleep(delay)
        gate.revoke(revocation_ids(token))

    t = threading.Thread(target=_revoke, daemon=True)
    t.start()
    return t


# -- run_command ----------------------------------------------------------------------------------


def test_run_command_passes_output_through_and_records_digests(home: Path, issue: Any) -> None:
    argv = ["sh", "-c", f'printf "%s" "${EXECUTION_ENV}"; printf err >&2; exit 5']
    allow_code(home, RESEARCHER, code_forms(*argv))
    out, err = io.BytesIO(), io.BytesIO()
    with Gate.open(home) as gate:
        o = run_command(
            gate,
            shell_request(issue(RESEARCHER, "shell.exec:Host::*"), *argv),
            argv,
            stdout=out,
            stderr=err,
            handle_signals=False,
        )
        assert (o.status, o.exit_code) == ("ended", 5)
        assert out.getvalue().decode() == o.request_id  # INTERLOCK_EXECUTION_ID in the child
        assert err.getvalue() == b"err"
        recs = by_id(gate, o.request_id or "")
        assert recs["exec.start"]["decision_leaf"]
        end = recs["exec.end"]
        assert end["stdout_sha256"] == hashlib.sha256(out.getvalue()).hexdigest()
        assert end["stderr_sha256"] == hashlib.sha256(b"err").hexdigest()
        assert gate.ledger.execution(o.request_id or "").status == "ended"  # type: ignore[union-attr]


def test_run_command_denied_never_spawns(home: Path, issue: Any, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    argv = ["touch", str(marker)]
    with Gate.open(home) as gate:
        o = run_command(
            gate, shell_request(issue(), *argv), argv, handle_signals=False
        )  # tool.call token only
        assert (o.status, o.exit_code) == ("denied", 126)
        assert o.reason is not None
        assert o.reason.code is ReasonCode.CAPABILITY_INSUFFICIENT
        assert "exec.start" not in by_id(gate, o.request_id or "")
    assert not marker.exists()


def test_run_command_terminates_on_revocation(home: Path, issue: Any) -> None:
    token = issue(RESEARCHER, "shell.exec:Host::*")
    argv = ["sleep", "30"]
    with Gate.open(home) as gate:
        revoke_later(gate, token, 0.3)
        t0 = time.monotonic()
        o = run_command(
            gate, shell_request(token, *argv), argv, interval=0.2, grace=0.5, handle_signals=False
        )
        assert time.monotonic() - t0 < 0.3 + 0.2 + 0.5 + 1.0
        assert o.status == "terminated"
        assert o.exit_code == 143
        assert o.reason is not None
        assert o.reason.code is ReasonCode.CAPABILITY_REVOKED
        recs = by_id(gate, o.request_id or "")
        assert recs["exec.terminated"]["reason"]["code"] == "CAPABILITY_REVOKED"
        assert gate.ledger.execution(o.request_id or "").status == "terminated"  # type: ignore[union-attr]


# -- gate.execution -------------------------------------------------------------------------------


def test_execution_records_start_and_end(home: Path, issue: Any) -> None:
    with Gate.open(home) as gate:
        with gate.execution(tool_request(issue()), interval=0.2) as run:
            run.check()
            exec_id = run.id
            assert gate.ledger.execution(exec_id).status == "running"  # type: ignore[union-attr]
        recs = by_id(gate, exec_id)
        assert recs["exec.start"]["supervisor"] == "in-process"
        assert recs["exec.end"]["outcome"] == "ok"
        assert gate.ledger.execution(exec_id).status == "ended"  # type: ignore[union-attr]


def test_execution_denied_raises_and_never_runs_the_body(home: Path, issue: Any) -> None:
    ran = False
    with Gate.open(home) as gate:
        with (
            pytest.raises(interlock.Denied) as info,
            gate.execution(tool_request(issue(), "delete_database")),
        ):
            ran = True
        assert info.value.reason_code == "POLICY_FORBID"
        assert not info.value.decision.allowed
        assert "exec.start" not in by_id(gate, info.value.decision.request_id)
    assert not ran


def test_check_raises_revoked_and_the_run_is_terminated(home: Path, issue: Any) -> None:
    token = issue()
    ids: list[str] = []

    def body(gate: Gate) -> None:
        with gate.execution(tool_request(token), interval=0.2) as run:
            ids.append(run.id)
            revoke_later(gate, token, 0.1)
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                run.check()
                time.sleep(0.02)

    with Gate.open(home) as gate:
        with pytest.raises(interlock.Revoked) as info:
            body(gate)
        assert info.value.reason_code == "CAPABILITY_REVOKED"
        (exec_id,) = ids
        recs = by_id(gate, exec_id)
        assert recs["exec.terminated"]["reason"]["code"] == "CAPABILITY_REVOKED"
        assert gate.ledger.execution(exec_id).status == "terminated"  # type: ignore[union-attr]
        # a child of the terminated run is denied
        d = gate.decide(tool_request(issue(), parent=exec_id))
        assert d.codes == ("LINEAGE_BROKEN",)


def test_async_execution_is_cancelled_when_revoked(home: Path, issue: Any) -> None:
    token = issue()

    async def main(gate: Gate) -> str:
        async with gate.execution(tool_request(token), interval=0.2) as run:
            revoke_later(gate, token, 0.1)
            await asyncio.sleep(5)  # cancelled: never completes
        return run.id

    with Gate.open(home) as gate:
        t0 = time.monotonic()
        with pytest.raises(interlock.Revoked) as info:
            asyncio.run(main(gate))
        assert time.monotonic() - t0 < 2.0
        assert info.value.reason_code == "CAPABILITY_REVOKED"
        exec_id = info.value.execution_id or ""
        assert by_id(gate, exec_id)["exec.terminated"]["reason"]["code"] == "CAPABILITY_REVOKED"
