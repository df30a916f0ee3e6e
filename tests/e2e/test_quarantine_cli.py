"""`interlock quarantine` and `interlock kill-switch` as an operator runs them: real
subprocesses, and real supervised runs they terminate (DESIGN I6)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import RESEARCHER, SUMMARIZER, allow_code, code_forms
from tests.e2e.test_exec import (
    EXE,
    GRACE,
    INTERVAL,
    SLACK,
    _env,
    _terminated_after,
    cli,
    exec_run,
    exec_start,
    records,
    running,  # noqa: F401 - the fixture
    sleeper,
    token,
)


@pytest.fixture
def home(home: Path) -> Path:
    """The shared home, with the researcher allowed `sh -c` (the supervised runs are shells)."""
    allow_code(home, RESEARCHER, code_forms("sh", "-c", "true"))
    return home


def _decide(home: Path, tok: str, principal: str = RESEARCHER) -> subprocess.CompletedProcess[str]:
    req = {
        "principal": principal,
        "action": "shell.exec",
        "resource": {"type": "Host", "id": "localhost"},
        "args": {"argv": ["true"]},
        "capability": tok,
    }
    return subprocess.run(
        [*EXE, "decide", "--json", "-"],
        input=json.dumps(req),
        capture_output=True,
        text=True,
        env=_env(home),
        timeout=60,
        check=False,
    )


def _replays_clean(home: Path) -> None:
    assert cli(home, "ledger", "verify").returncode == 0
    r = cli(home, "ledger", "replay", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads(r.stdout)
    assert rep["mismatches"] == [] and rep["unverifiable"] == []


def test_quarantine_add_list_remove(home: Path) -> None:
    r = cli(home, "quarantine", "add", RESEARCHER, "--reason", "leaked a key", "--json")
    assert r.returncode == 0, r.stderr
    added = json.loads(r.stdout)
    assert added["principal"] == RESEARCHER and added["quarantined"] is True
    rec = records(home)[added["ledger_index"]]
    assert rec["event"] == "principal.quarantined" and rec["reason"] == "leaked a key"
    assert rec["sig"] and rec["signer"]

    r = cli(home, "quarantine", "list", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [
        {"principal": RESEARCHER, "ledger_index": added["ledger_index"]}
    ]
    r = cli(home, "quarantine", "list")
    assert r.returncode == 0 and RESEARCHER in r.stdout

    r = cli(home, "quarantine", "remove", RESEARCHER, "--reason", "rotated")
    assert r.returncode == 0, r.stderr
    assert "Released" in r.stdout and "ledger index" in r.stdout
    r = cli(home, "quarantine", "list", "--json")
    assert json.loads(r.stdout) == []
    assert "No principal" in cli(home, "quarantine", "list").stdout
    _replays_clean(home)


def test_usage_errors_exit_2_and_record_nothing(home: Path) -> None:
    before = len(records(home))
    for args in (
        ("quarantine", "add", "researcher", "--reason", "x"),
        ("quarantine", "add", "https://acme.test/agent", "--reason", "x"),
        ("quarantine", "remove", "spiffe://", "--reason", "x"),
        ("quarantine", "add", RESEARCHER),  # no reason
        ("kill-switch", "on"),  # no reason
        ("kill-switch", "sideways", "--reason", "x"),
    ):
        r = cli(home, *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
    assert "SPIFFE" in cli(home, "quarantine", "add", "researcher", "--reason", "x").stderr
    assert len(records(home)) == before


def test_quarantined_principal_is_denied_others_are_not(home: Path) -> None:
    tok = token(home)
    other = cli(
        home,
        "token",
        "issue",
        "--principal",
        SUMMARIZER,
        "--ttl",
        "10m",
        "--right",
        "shell.exec:Host::*",
    ).stdout.strip()
    assert _decide(home, other, SUMMARIZER).returncode == 0
    # quarantining the sub-agent leaves its holder (and everyone else) alone
    assert cli(home, "quarantine", "add", SUMMARIZER, "--reason", "x").returncode == 0
    r = _decide(home, other, SUMMARIZER)
    assert r.returncode == 1
    assert json.loads(r.stdout)["reasons"][0]["code"] == "PRINCIPAL_QUARANTINED"
    assert _decide(home, tok).returncode == 0
    assert cli(home, "quarantine", "remove", SUMMARIZER, "--reason", "x").returncode == 0
    assert _decide(home, other, SUMMARIZER).returncode == 0
    _replays_clean(home)


def test_kill_switch_on_status_off(home: Path, tmp_path: Path) -> None:
    tok = token(home)
    r = cli(home, "kill-switch", "status", "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == {"kill_switch": False}
    r = cli(home, "kill-switch", "on", "--reason", "incident 42", "--json")
    assert r.returncode == 0, r.stderr
    on = json.loads(r.stdout)
    assert on["kill_switch"] is True
    assert records(home)[on["ledger_index"]]["event"] == "kill_switch.on"
    assert json.loads(cli(home, "kill-switch", "status", "--json").stdout)["kill_switch"] is True
    assert "ON" in cli(home, "kill-switch", "status").stdout

    r = _decide(home, tok)
    assert r.returncode == 1
    reason = json.loads(r.stdout)["reasons"][0]
    assert reason["code"] == "POLICY_FORBID" and reason["policy"] == "kill-switch"
    marker = tmp_path / "ran"
    run = exec_run(home, tok, "touch", str(marker))
    assert run.returncode == 126 and not marker.exists()

    r = cli(home, "kill-switch", "off", "--reason", "resolved")
    assert r.returncode == 0 and "ledger index" in r.stdout
    assert json.loads(cli(home, "kill-switch", "status", "--json").stdout)["kill_switch"] is False
    assert _decide(home, tok).returncode == 0
    _replays_clean(home)


def test_quarantine_terminates_a_running_exec(
    home: Path,
    tmp_path: Path,
    running: list[subprocess.Popen[bytes]],  # noqa: F811 - the fixture
) -> None:
    pidfile = tmp_path / "pid"
    proc = exec_start(home, token(home), *sleeper(pidfile))
    running.append(proc)

    def quarantine() -> None:
        assert cli(home, "quarantine", "add", RESEARCHER, "--reason", "test").returncode == 0

    # a quarantined principal gets no grace: its execution is frozen, then killed
    term = _terminated_after(
        home,
        proc,
        pidfile,
        quarantine,
        "PRINCIPAL_QUARANTINED",
        INTERVAL + GRACE + SLACK,
        signals=("FREEZE", "SIGKILL"),
    )
    assert term["reason"]["code"] == "PRINCIPAL_QUARANTINED"
    assert term["signal"] == "SIGKILL"
    _replays_clean(home)


def test_kill_switch_terminates_a_running_exec(
    home: Path,
    tmp_path: Path,
    running: list[subprocess.Popen[bytes]],  # noqa: F811 - the fixture
) -> None:
    pidfile = tmp_path / "pid"
    proc = exec_start(home, token(home), *sleeper(pidfile))
    running.append(proc)

    def kill() -> None:
        assert cli(home, "kill-switch", "on", "--reason", "test").returncode == 0

    term = _terminated_after(home, proc, pidfile, kill, "POLICY_FORBID", INTERVAL + GRACE + SLACK)
    assert term["reason"]["policy"] == "kill-switch"
    assert "kill switch" in term["reason"]["detail"]
    _replays_clean(home)
