"""`interlock exec` under attestation, break-glass and a dying supervisor; `attest` and
`boundary` as an operator runs them. Real subprocesses, real homes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from interlock.trust import keys
from tests.conftest import RESEARCHER, allow_code, code_forms, edit_config
from tests.e2e.test_exec import (
    EXE,
    FAST,
    GRACE,
    INTERVAL,
    SLACK,
    _env,
    _terminated_after,
    cli,
    exec_run,
    exec_start,
    records,
    running,  # noqa: F401 - the fixture, used by name
    sleeper,
    token,
    wait_for,
)


@pytest.fixture
def home(home: Path) -> Path:
    """The shared home, with the researcher allowed `sh -c` (these tests drive real shells)."""
    allow_code(home, RESEARCHER, code_forms("sh", "-c", "true"))
    return home


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] != b"Z"


def test_a_measured_file_change_terminates_the_run(
    home: Path,
    tmp_path: Path,
    running: list[subprocess.Popen[bytes]],  # noqa: F811 - the imported fixture
) -> None:
    edit_config(home, "\ninterval_ms = 5000", "\ninterval_ms = 100")
    tok = token(home)
    pidfile = tmp_path / "pid"
    proc = exec_start(home, tok, *sleeper(pidfile))
    running.append(proc)

    def change_config() -> None:
        cfg = home / "interlock.toml"
        cfg.write_text(cfg.read_text().replace("max_lineage_depth = 16", "max_lineage_depth = 9"))

    term = _terminated_after(
        home, proc, pidfile, change_config, "ENVIRONMENT_UNTRUSTED", 0.1 + INTERVAL + GRACE + SLACK
    )
    assert "config changed" in term["reason"]["detail"]
    problems = [r for r in records(home) if r.get("event") == "node.attested" and r["problem"]]
    assert problems, "the drift is recorded as a node-signed attestation"
    # and a new exec on the changed node never starts
    marker = tmp_path / "ran"
    res = exec_run(home, tok, "touch", str(marker))
    assert res.returncode == 126 and b"ENVIRONMENT_UNTRUSTED" in res.stderr
    assert not marker.exists()


def test_a_sigkilled_supervisor_takes_its_command_with_it(home: Path, tmp_path: Path) -> None:
    tok = token(home)
    pidfile = tmp_path / "pid"
    proc = subprocess.Popen(
        [*EXE, "exec", *FAST, "--", "sh", "-c", f"echo $$ > {pidfile}; exec sleep 60"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(home, INTERLOCK_CAPABILITY=tok),
    )
    try:
        pid = int(wait_for(pidfile))
        assert _alive(pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        end = time.monotonic() + 5
        while _alive(pid) and time.monotonic() < end:
            time.sleep(0.02)
        assert not _alive(pid), "the command outlived its SIGKILLed supervisor"
        # the ledger still says running; the next gate to open reaps it, so it is no longer a
        # live parent (a child naming it is refused) and its end is on the ledger
        (start,) = [r for r in records(home) if r["type"] == "exec.start"]
        assert start["process"]["pid"] == proc.pid
        child = {
            "principal": RESEARCHER,
            "action": "shell.exec",
            "resource": {"type": "Host", "id": "localhost"},
            "args": {"argv": ["true"]},
            "capability": tok,
            "parent": start["id"],
        }
        r = subprocess.run(
            [*EXE, "decide", "-", "--json"],
            input=json.dumps(child),
            capture_output=True,
            text=True,
            env=_env(home),
            timeout=60,
            check=False,
        )
        assert r.returncode == 1 and json.loads(r.stdout)["reasons"][0]["code"] == "LINEAGE_BROKEN"
        (term,) = [x for x in records(home) if x["type"] == "exec.terminated"]
        assert term["id"] == start["id"] and term["reaped"] is True
        assert term["reason"]["code"] == "INTERNAL_ERROR"
    finally:
        if proc.poll() is None:
            proc.kill()
        with_pid = pidfile.read_text().strip() if pidfile.exists() else ""
        if with_pid and _alive(int(with_pid)):
            os.kill(int(with_pid), signal.SIGKILL)


def test_exec_with_break_glass_runs_loudly_and_only_in_scope(home: Path, tmp_path: Path) -> None:
    glass_key = tmp_path / "glass.key"
    key = keys.create_key(glass_key)
    cfg = home / "interlock.toml"
    text = cfg.read_text()
    at = text.index("keys = []", text.index("[break_glass]"))
    cfg.write_text(text[:at] + f'keys = ["{keys.public_raw(key).hex()}"]' + text[at + 9 :])
    edit_config(home, "[break_glass]", "[break_glass]")  # re-trust the changed config
    tok = token(home)
    marker = tmp_path / "ran"
    # research-shell-local permits Host::localhost only: db-1 is POLICY_NO_PERMIT
    cmd = [*EXE, "exec", *FAST, "--resource", "Host::db-1", "--", "touch", str(marker)]
    env = _env(home, INTERLOCK_CAPABILITY=tok)
    denied = subprocess.run(cmd, capture_output=True, env=env, timeout=60, check=False)
    assert denied.returncode == 126 and b"POLICY_NO_PERMIT" in denied.stderr
    assert not marker.exists()

    r = cli(
        home,
        "break-glass",
        "--scope",
        "shell.exec:Host::db-1",
        "--reason",
        "db on fire",
        "--ttl",
        "5m",
        "--key",
        str(glass_key),
    )
    assert r.returncode == 0, r.stderr
    assert "BREAK-GLASS" in r.stderr
    glass = r.stdout.strip()
    ok = subprocess.run(
        [*cmd[:4], "--break-glass", glass, *cmd[4:]],
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert marker.exists()
    assert b"BREAK-GLASS" in ok.stderr
    flagged = [x for x in records(home) if x.get("break_glass")]
    assert len(flagged) == 1 and flagged[0]["break_glass"]["reason"] == "db on fire"

    # out of scope: another host is still refused, and nothing runs
    other = tmp_path / "other"
    argv = [*EXE, "exec", *FAST, "--resource", "Host::db-2", "--break-glass", glass]
    refused = subprocess.run(
        [*argv, "--", "touch", str(other)],
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 126 and b"scoped to" in refused.stderr
    assert not other.exists()
    # an override longer than 24 h is refused at signing (and at use: see the integration tests)
    long = cli(
        home,
        "break-glass",
        "--scope",
        "*:*",
        "--reason",
        "x",
        "--ttl",
        "2d",
        "--key",
        str(glass_key),
    )
    assert long.returncode == 2 and "24h" in long.stderr


def test_attest_show_verify_and_trust(home: Path) -> None:
    shown = cli(home, "attest", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    view = json.loads(shown.stdout)
    assert view["trusted"] is True and len(view["platform"]) == 64
    # the fixture changed the config after init: the attestation on the ledger is older
    before = cli(home, "attest", "verify", "--json")
    assert before.returncode == 1
    assert any("differs from the one attested" in p for p in json.loads(before.stdout)["problems"])
    # any gate that opens attests the current platform (decide opens one)
    req = {"principal": RESEARCHER, "action": "tool.call", "resource": {"type": "Tool", "id": "x"}}
    subprocess.run(
        [*EXE, "decide", "-"],
        input=json.dumps(req),
        text=True,
        env=_env(home),
        check=False,
        capture_output=True,
    )
    ok = cli(home, "attest", "verify")
    assert ok.returncode == 0, ok.stdout + ok.stderr

    cfg = home / "interlock.toml"
    cfg.write_text(cfg.read_text().replace("max_lineage_depth = 16", "max_lineage_depth = 7"))
    bad = cli(home, "attest", "verify", "--json")
    assert bad.returncode == 1
    problems = json.loads(bad.stdout)["problems"]
    assert any("not in [attestation] trusted" in p for p in problems)
    assert cli(home, "attest", "trust").returncode == 0
    assert json.loads(cli(home, "attest", "show", "--json").stdout)["trusted"] is True


def test_boundary_list_shows_configuration(home: Path) -> None:
    cfg = home / "interlock.toml"
    cfg.write_text(
        cfg.read_text() + f'\n[[boundaries]]\nname = "lab"\nprincipals = ["{RESEARCHER}"]\n'
        'actions = ["tool.call"]\nresources = ["Tool::*"]\non_violation = "isolate"\n'
    )
    r = cli(home, "boundary", "list", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["boundaries"][0]["name"] == "lab" and doc["restricted"] == []
    broken = cfg.read_text().replace('on_violation = "isolate"', 'on_violation = "explode"')
    cfg.write_text(broken)
    bad = cli(home, "boundary", "list")
    assert bad.returncode == 2 and "on_violation" in bad.stderr
