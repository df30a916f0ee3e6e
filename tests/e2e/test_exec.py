"""`interlock exec` as a user runs it: real supervisors, real commands, real signals.

Every termination asserts the reason code on the ledger and that the command's whole process
group is gone; every denial asserts that the command never ran.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from interlock.audit import open_for_audit
from tests.conftest import RESEARCHER, allow_code, code_forms, edit_config

EXE = [sys.executable, "-m", "interlock.cli"]
FAST = ["--interval", "0.2s", "--grace", "0.5s"]
INTERVAL, GRACE = 0.2, 0.5
#: python start-up of a supervisor that is already running is not in the budget, but the
#: gate's 100 ms trust refresh, a ledger commit or two and a loaded CI machine are
SLACK = 1.5


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTERLOCK_")}
    env["INTERLOCK_HOME"] = str(home)
    env["INTERLOCK_PRINCIPAL"] = RESEARCHER
    env.update(extra)
    return env


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EXE, *args], capture_output=True, text=True, env=_env(home), timeout=60, check=False
    )


def token(home: Path, *rights: str, ttl: str = "10m") -> str:
    args = ["token", "issue", "--principal", RESEARCHER, "--ttl", ttl]
    for r in rights or ("shell.exec:Host::*",):
        args += ["--right", r]
    res = cli(home, *args)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def exec_run(
    home: Path, tok: str, *cmd: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*EXE, "exec", *FAST, "--", *cmd],
        capture_output=True,
        env=_env(home, INTERLOCK_CAPABILITY=tok),
        cwd=cwd,
        timeout=60,
        check=False,
    )


def exec_start(home: Path, tok: str, *cmd: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*EXE, "exec", *FAST, "--", *cmd],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(home, INTERLOCK_CAPABILITY=tok),
    )


def records(home: Path) -> list[dict[str, Any]]:
    with open_for_audit(home) as view:
        return [json.loads(d) for _i, _h, d in view.ledger.iter_entries(0)]


def of(home: Path, exec_id: str) -> dict[str, dict[str, Any]]:
    """The execution's records by type (the last of each type)."""
    return {r["type"]: r for r in records(home) if r.get("id") == exec_id}


def wait_for(path: Path, timeout: float = 20.0) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.02)
    raise AssertionError(f"{path} never appeared")


def _live_members(pgid: int) -> list[str]:
    """Processes of group ``pgid`` that are not zombies (a killed process stays a zombie until
    its new parent, often a container's pid 1, reaps it)."""
    alive = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_bytes()
            except OSError:
                continue
            fields = stat[stat.rfind(b")") + 2 :].split()
            if int(fields[2]) == pgid and fields[0] != b"Z":
                alive.append(name)
    return alive


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return not _live_members(pgid)


def sleeper(pidfile: Path, *extra: str) -> list[str]:
    """A command that writes its pid (= its process group id) and sleeps in that group."""
    return ["sh", "-c", f"echo $$ > {pidfile}; sleep 30 & wait", *extra]


@pytest.fixture
def home(home: Path) -> Path:
    """The shared home, with the researcher allowed `sh -c` (policy version 2): these tests
    drive real shells; the default policy forbids code-running commands to agents not allowed
    them (no-code-unless-allowed)."""
    allow_code(home, RESEARCHER, code_forms("sh", "-c", "true"))
    return home


@pytest.fixture
def running() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.communicate(timeout=10)


# -- deny: the command never starts --------------------------------------------------------------


def test_denied_exec_never_runs_its_command(home: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    tok = token(home)
    # a recursive rm inside the shell string: the default no-recursive-delete policy forbids it
    # although the researcher may run `sh -c` (here)
    r = exec_run(home, tok, "sh", "-c", f"touch {marker}; rm -rf {tmp_path}/x")
    assert r.returncode == 126
    assert b"POLICY_FORBID" in r.stderr
    assert b"no-recursive-delete" in r.stderr
    assert not marker.exists()
    # a token without the shell.exec right
    r = exec_run(home, token(home, "tool.call:Tool::*"), "touch", str(marker))
    assert r.returncode == 126
    assert b"CAPABILITY_INSUFFICIENT" in r.stderr
    assert not marker.exists()
    types = [x["type"] for x in records(home)]
    assert "exec.start" not in types
    assert types.count("decision") == 2


def test_exec_without_principal_is_a_usage_error(home: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    env = _env(home, INTERLOCK_CAPABILITY=token(home))
    del env["INTERLOCK_PRINCIPAL"]
    r = subprocess.run(
        [*EXE, "exec", "--", "touch", str(marker)], capture_output=True, env=env, check=False
    )
    assert r.returncode == 2
    assert not marker.exists()


# -- allow: mirrored exit codes, records, digests -------------------------------------------------


@pytest.mark.parametrize(
    ("script", "code", "sig"),
    [("exit 0", 0, None), ("exit 3", 3, None), ("kill -TERM $$", 143, "SIGTERM")],
)
def test_allowed_exec_mirrors_exit_and_records_digests(
    home: Path, script: str, code: int, sig: str | None
) -> None:
    cmd = f'echo "id=$INTERLOCK_EXECUTION_ID"; echo oops >&2; {script}'
    r = exec_run(home, token(home), "sh", "-c", cmd)
    assert r.returncode == code, r.stderr
    exec_id = r.stdout.decode().strip().removeprefix("id=")
    recs = of(home, exec_id)
    assert set(recs) == {"decision", "exec.start", "exec.end"}
    assert recs["decision"]["effect"] == "allow"
    end = recs["exec.end"]
    assert end["exit_status"] == code
    assert end["signal"] == sig
    assert isinstance(end["duration_ms"], int)
    assert end["stdout_sha256"] == hashlib.sha256(r.stdout).hexdigest()
    # the supervisor's own stderr is empty when nothing went wrong: all of it is the command's
    assert r.stderr == b"oops\n"
    assert end["stderr_sha256"] == hashlib.sha256(b"oops\n").hexdigest()
    # exec.start was committed before exec.end, both after the allow
    idx = {r_["type"]: i for i, r_ in enumerate(records(home)) if r_.get("id") == exec_id}
    assert idx["decision"] < idx["exec.start"] < idx["exec.end"]


def test_missing_command_is_127_and_recorded(home: Path) -> None:
    r = exec_run(home, token(home), "/nonexistent/cmd")
    assert r.returncode == 127
    ends = [x for x in records(home) if x["type"] == "exec.end"]
    assert ends[-1]["exit_status"] == 127


# -- continuous verification: termination within interval + grace --------------------------------


def _terminated_after(
    home: Path,
    proc: subprocess.Popen[bytes],
    pidfile: Path,
    trigger: Any,
    code: str,
    budget: float,
    *,
    signals: tuple[str, ...] = ("SIGTERM",),
) -> dict[str, Any]:
    pgid = int(wait_for(pidfile))
    t0 = time.monotonic()
    trigger()
    t1 = time.monotonic()
    proc.wait(timeout=30)
    elapsed = time.monotonic() - t1
    assert elapsed < budget, f"took {elapsed:.2f}s after the trigger ({t1 - t0:.2f}s to trigger)"
    assert proc.returncode == (137 if "SIGKILL" in signals else 143)
    assert proc.stderr is not None
    assert code.encode() in proc.stderr.read()
    assert group_gone(pgid)
    term = [x for x in records(home) if x["type"] == "exec.terminated"][-1]
    assert term["reason"]["code"] == code
    assert term["signals_sent"] == list(signals)
    verify = of(home, term["id"])["exec.verify"]
    assert verify["effect"] == "deny"
    assert verify["reasons"][0]["code"] == code
    return term


def test_revoked_token_terminates_the_run(
    home: Path, tmp_path: Path, running: list[subprocess.Popen[bytes]]
) -> None:
    tok = token(home)
    pidfile = tmp_path / "pid"
    proc = exec_start(home, tok, *sleeper(pidfile))
    running.append(proc)

    def revoke() -> None:
        assert cli(home, "token", "revoke", tok, "--reason", "test").returncode == 0

    _terminated_after(home, proc, pidfile, revoke, "CAPABILITY_REVOKED", INTERVAL + GRACE + SLACK)
    # the ledger still verifies and replays (replay skips exec.* records)
    assert cli(home, "ledger", "verify").returncode == 0
    r = cli(home, "ledger", "replay", "--json")
    assert r.returncode == 0, r.stdout
    assert json.loads(r.stdout)["mismatches"] == []


def test_policy_change_that_forbids_terminates_the_run(
    home: Path, tmp_path: Path, running: list[subprocess.Popen[bytes]]
) -> None:
    pidfile = tmp_path / "pid"
    proc = exec_start(home, token(home), *sleeper(pidfile, "forbid-me"))
    running.append(proc)

    def forbid() -> None:
        with (home / "policy" / "policies.cedar").open("a", encoding="utf-8") as fh:
            fh.write(
                '\n@id("no-forbid-me")\nforbid (principal, action == Action::"shell.exec",'
                " resource)\nwhen { context.args has argv &&"
                ' context.args.argv.contains("forbid-me") };\n'
            )
        r = cli(home, "policy", "sign")
        assert r.returncode == 0, r.stderr

    term = _terminated_after(home, proc, pidfile, forbid, "POLICY_FORBID", INTERVAL + GRACE + SLACK)
    assert term["reason"]["policy"] == "no-forbid-me"
    # the reload was recorded by the supervisor's gate
    loads = [x for x in records(home) if x.get("event") == "policy.loaded"]
    assert [x["policy_version"] for x in loads] == [1, 2, 3]  # 2: `home` allowed sh -c


def test_expiring_capability_terminates_the_run(
    home: Path, tmp_path: Path, running: list[subprocess.Popen[bytes]]
) -> None:
    tok = token(home, ttl="3s")
    pidfile = tmp_path / "pid"
    proc = exec_start(home, tok, *sleeper(pidfile))
    running.append(proc)
    # the trigger is time itself: the budget counts from when the pid appeared
    _terminated_after(
        home, proc, pidfile, lambda: None, "CAPABILITY_EXPIRED", 3 + 1 + INTERVAL + GRACE + SLACK
    )


def test_command_ignoring_sigterm_is_killed_after_grace(
    home: Path, tmp_path: Path, running: list[subprocess.Popen[bytes]]
) -> None:
    tok = token(home)
    pidfile = tmp_path / "pid"
    proc = exec_start(home, tok, "sh", "-c", f"trap '' TERM; echo $$ > {pidfile}; sleep 30")
    running.append(proc)
    pgid = int(wait_for(pidfile))
    assert cli(home, "token", "revoke", tok).returncode == 0
    proc.wait(timeout=30)
    assert proc.returncode == 137
    assert group_gone(pgid)
    term = [x for x in records(home) if x["type"] == "exec.terminated"][-1]
    assert term["reason"]["code"] == "CAPABILITY_REVOKED"
    assert term["signals_sent"] == ["SIGTERM", "SIGKILL"]
    assert term["signal"] == "SIGKILL"


# -- lineage: children of a terminated execution are terminated too -------------------------------


def test_nested_exec_is_terminated_with_its_parent(
    home: Path, tmp_path: Path, running: list[subprocess.Popen[bytes]]
) -> None:
    outer_tok, inner_tok = token(home), token(home)
    inner_pid = tmp_path / "inner.pid"
    inner_ids = tmp_path / "inner.id"
    inner = " ".join(
        [
            f"INTERLOCK_CAPABILITY={inner_tok}",
            *(f"'{a}'" for a in EXE),
            "exec",
            *FAST,
            "--",
            "sh",
            "-c",
            f"'echo $INTERLOCK_EXECUTION_ID > {inner_ids}; echo $$ > {inner_pid}; sleep 30'",
        ]
    )
    # the inner supervisor inherits INTERLOCK_EXECUTION_ID: its parent is the outer run
    proc = exec_start(home, outer_tok, "sh", "-c", inner)
    running.append(proc)
    pgid = int(wait_for(inner_pid))
    inner_id = wait_for(inner_ids)
    assert cli(home, "token", "revoke", outer_tok).returncode == 0
    proc.wait(timeout=30)
    deadline = time.monotonic() + INTERVAL + GRACE + SLACK
    while not group_gone(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert group_gone(pgid)
    inner_recs = of(home, inner_id)
    outer_id = inner_recs["decision"]["parent"]
    assert outer_id is not None
    assert of(home, outer_id)["exec.terminated"]["reason"]["code"] == "CAPABILITY_REVOKED"
    assert inner_recs["exec.terminated"]["reason"]["code"] == "LINEAGE_BROKEN"
    # a new child of the terminated execution is denied outright
    marker = tmp_path / "late"
    r = subprocess.run(
        [*EXE, "exec", "--parent", outer_id, "--", "touch", str(marker)],
        capture_output=True,
        env=_env(home, INTERLOCK_CAPABILITY=inner_tok),
        check=False,
    )
    assert r.returncode == 126
    assert b"LINEAGE_BROKEN" in r.stderr
    assert not marker.exists()


def test_exec_decides_and_runs_the_resolved_executable(home: Path, tmp_path: Path) -> None:
    import shutil

    tok = token(home)
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    # a recursive delete through a wrapper and an abbreviated long option: denied, nothing ran
    r = exec_run(home, tok, "env", "nice", "rm", "--recur", str(victim))
    assert r.returncode == 126
    assert b"no-recursive-delete" in r.stderr
    assert (victim / "sub").is_dir()
    # an allowed command: the request carries argv[0] resolved (PATH, symlinks), and that
    # path is what ran
    r = exec_run(home, tok, "rm", "-f", str(victim / "nothing"))
    assert r.returncode == 0, r.stderr
    allow = [x for x in records(home) if x["type"] == "decision" and x["effect"] == "allow"][-1]
    with open_for_audit(home) as view:
        blob = view.ledger.blob(f"req:{allow['id']}")
    assert blob is not None
    args = json.loads(blob)["args"]
    assert args["argv"][0] == "rm"
    assert args["executable"] == os.path.realpath(shutil.which("rm") or "")


def test_exec_that_needs_approval_runs_only_with_it(home: Path, tmp_path: Path) -> None:
    import re

    from interlock.home import Home
    from interlock.policy.bundle import sign_bundle
    from interlock.trust import keys

    pol = home / "policy" / "policies.cedar"
    pol.write_text(
        pol.read_text().replace(
            '@id("research-shell-local")\n',
            '@id("research-shell-local")\n@obligation("approval")\n',
        )
    )
    sign_bundle(home / "policy", Home.load(home).private_key("policy"), version=3)
    approver = keys.create_key(tmp_path / "approver.key")
    edit_config(home, "keys = []", f'keys = ["{keys.public_raw(approver).hex()}"]')
    tok = token(home)
    marker = tmp_path / "ran"
    cmd = ("touch", str(marker))
    first = exec_run(home, tok, *cmd)
    assert first.returncode == 126 and b"APPROVAL_REQUIRED" in first.stderr
    assert not marker.exists()
    m = re.search(rb"request digest ([0-9a-f]{64})", first.stderr)
    assert m is not None, first.stderr
    made = cli(
        home,
        "approve",
        m.group(1).decode(),
        "--key",
        str(tmp_path / "approver.key"),
        "--ttl",
        "10m",
    )
    assert made.returncode == 0, made.stderr
    approved = subprocess.run(
        [*EXE, "exec", *FAST, "--approval", made.stdout.strip(), "--", *cmd],
        capture_output=True,
        env=_env(home, INTERLOCK_CAPABILITY=tok),
        timeout=60,
        check=False,
    )
    assert approved.returncode == 0, approved.stderr
    assert marker.exists()
