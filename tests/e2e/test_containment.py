"""Containment (issue 11, DESIGN I9) tried as a hostile command would: real supervisors, real
cgroups, real Landlock, real signals. "Gone" is checked by scanning ``/proc``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import RESEARCHER, allow_code, code_forms, edit_config
from tests.e2e.test_exec import (
    EXE,
    _env,
    cli,
    exec_run,
    exec_start,
    of,
    records,
    running,  # noqa: F401 - the fixture
    token,
    wait_for,
)

CGROUP2 = Path("/sys/fs/cgroup/unified")


@pytest.fixture
def home(home: Path) -> Path:
    """The shared home, with the researcher allowed the shells and Python these tests drive as
    a hostile command would (the default policy forbids code-running commands otherwise)."""
    allow_code(
        home,
        RESEARCHER,
        sorted(
            {
                *code_forms("sh", "-c", "true"),
                *code_forms(sys.executable, "probe.py"),
                *code_forms("/usr/bin/python3", "probe.py"),
            }
        ),
    )
    return home


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] != b"Z"


def _eventually(check: object, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return bool(check())  # type: ignore[operator]


def _start_record(home: Path, exec_id: str) -> dict[str, object]:
    return of(home, exec_id)["exec.start"]


def _last_exec_id(home: Path) -> str:
    return [r for r in records(home) if r["type"] == "exec.start"][-1]["id"]


# -- one cgroup per execution: nothing escapes it ------------------------------------------------


def test_setsid_grandchild_and_double_forked_daemon_die_with_a_revoked_run(
    home: Path,
    tmp_path: Path,
    running: list[subprocess.Popen[bytes]],  # noqa: F811 - the fixture
) -> None:
    tok = token(home)
    gc, daemon = tmp_path / "grandchild.pid", tmp_path / "daemon.pid"
    # a setsid grandchild, and a classic double-forked daemon (fork, setsid, fork, parent exits)
    daemonize = (
        "import os,time\n"
        "if os.fork(): os._exit(0)\n"
        "os.setsid()\n"
        "if os.fork(): os._exit(0)\n"
        f"open({str(daemon)!r},'w').write(str(os.getpid()))\n"
        "time.sleep(300)\n"
    )
    script = tmp_path / "daemonize.py"
    script.write_text(daemonize)
    cmd = f"setsid sleep 300 & echo $! > {gc}; {sys.executable} {script}; sleep 300"
    proc = exec_start(home, tok, "sh", "-c", cmd)
    running.append(proc)
    pids = [int(wait_for(gc)), int(wait_for(daemon))]
    # neither shares the command's session or process group any more
    assert all(os.getsid(p) != os.getsid(proc.pid) for p in pids)
    exec_id = _last_exec_id(home)
    cgroup = Path(str(_start_record(home, exec_id)["containment"]["cgroup"]))  # type: ignore[index]
    assert cgroup.is_dir() and set(pids) <= {
        int(x) for x in (cgroup / "cgroup.procs").read_text().split()
    }

    assert cli(home, "token", "revoke", tok).returncode == 0
    proc.wait(timeout=30)
    assert _eventually(lambda: not any(_alive(p) for p in pids), 5.0), "a descendant survived"
    assert not cgroup.exists()
    term = of(home, exec_id)["exec.terminated"]
    assert term["reason"]["code"] == "CAPABILITY_REVOKED"


def test_a_run_lasts_until_its_cgroup_is_empty_and_leaves_nothing_behind(
    home: Path, tmp_path: Path
) -> None:
    done = tmp_path / "done"
    # the first process exits at once; a setsid descendant works on for a second
    cmd = f"setsid sh -c 'sleep 1; echo finished > {done}' > /dev/null 2>&1 &"
    t0 = time.monotonic()
    r = exec_run(home, token(home), "sh", "-c", cmd)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert done.read_text().strip() == "finished"  # it was not killed: the run waited for it
    assert took >= 1.0
    exec_id = _last_exec_id(home)
    end = of(home, exec_id)["exec.end"]
    assert end["duration_ms"] >= 1000
    cgroup = Path(str(_start_record(home, exec_id)["containment"]["cgroup"]))  # type: ignore[index]
    assert not cgroup.exists()


def test_a_command_cannot_signal_its_supervisor_or_anything_outside(
    home: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    bystander = subprocess.Popen(["sleep", "60"])  # a process outside, of the same user
    try:
        # kill -9 $PPID (the supervisor), then every process it may signal (kill -1: all but
        # itself and init). Landlock scopes its signals to its own sandbox: the first fails
        # with EPERM, the second reaches nobody (kill(2) still answers 0 when every target
        # refused, so the proof is who is alive afterwards)
        cmd = f"kill -9 $PPID; echo supervisor=$? > {out}; kill -9 -1"
        r = exec_run(home, token(home), "sh", "-c", cmd)
        assert r.returncode == 0, r.stderr
        assert out.read_text().split() == ["supervisor=1"]
        assert bystander.poll() is None, "kill -1 from the sandbox reached a process outside it"
    finally:
        bystander.kill()
        bystander.wait()
    # the supervisor survived and recorded the end
    end = of(home, _last_exec_id(home))["exec.end"]
    assert end["exit_status"] == 0


def test_a_killed_supervisor_leaves_no_survivor_and_the_termination_is_recorded(
    home: Path,
    tmp_path: Path,
    running: list[subprocess.Popen[bytes]],  # noqa: F811 - the fixture
) -> None:
    gc = tmp_path / "grandchild.pid"
    proc = exec_start(
        home, token(home), "sh", "-c", f"setsid sleep 300 & echo $! > {gc}; sleep 300"
    )
    running.append(proc)
    grandchild = int(wait_for(gc))
    exec_id = _last_exec_id(home)
    cgroup = Path(str(_start_record(home, exec_id)["containment"]["cgroup"]))  # type: ignore[index]
    os.kill(proc.pid, signal.SIGKILL)  # the supervisor, from outside (an OOM kill, an operator)
    proc.wait(timeout=10)
    # the watchdog kills the cgroup and a gate on the home records the termination
    assert _eventually(lambda: not _alive(grandchild), 10.0), "the grandchild survived"
    assert _eventually(lambda: not cgroup.exists(), 10.0)
    assert _eventually(lambda: "exec.terminated" in of(home, exec_id), 20.0)
    term = of(home, exec_id)["exec.terminated"]
    # the watchdog killed the cgroup before its gate's reaper recorded the termination
    assert term["reaped"] is True and "cgroup_killed" not in term
    assert "supervisor" in term["reason"]["detail"]


# -- key custody ---------------------------------------------------------------------------------

_PROBE = """
import errno, json, sys
home = sys.argv[1]
out = {}
for name in ("log", "policy", "biscuit-root", "node"):
    try:
        open(f"{home}/keys/{name}.key", "rb").read()
        out[f"read {name}.key"] = "read"
    except OSError as exc:
        out[f"read {name}.key"] = errno.errorcode[exc.errno]
for name in ("ledger.db", "interlock.toml", "policy/manifest.json", "policy/policies.cedar"):
    try:
        open(f"{home}/{name}", "r+b")
        out[f"write {name}"] = "opened"
    except OSError as exc:
        out[f"write {name}"] = errno.errorcode[exc.errno]
try:
    open(f"{home}/planted", "wb")
    out["create"] = "created"
except OSError as exc:
    out["create"] = errno.errorcode[exc.errno]
print(json.dumps(out))
"""


def test_the_command_can_read_no_key_and_write_no_state_of_the_home(
    home: Path, tmp_path: Path
) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(_PROBE)
    r = exec_run(home, token(home), sys.executable, str(probe), str(home))
    assert r.returncode == 0, r.stderr
    found = json.loads(r.stdout)
    assert len(found) == 9
    assert all(v == "EACCES" for v in found.values()), found
    assert not (home / "planted").exists()


def test_read_key_re_sign_policy_mint_token_fails_at_its_first_step(
    home: Path, tmp_path: Path
) -> None:
    minted = tmp_path / "minted"
    # what an agent with a shell would try: mint itself a capability with the root key
    cmd = (
        f"{' '.join(EXE)} token issue --home {home} --principal {RESEARCHER}"
        f" --right '*:*' --ttl 365d > {minted} 2> {tmp_path / 'err'}; echo $? > {tmp_path / 'rc'}"
    )
    r = exec_run(home, token(home), "sh", "-c", cmd)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "rc").read_text().strip() != "0"
    assert minted.read_text() == ""
    err = (tmp_path / "err").read_text()
    assert "--home" in err and "readable" in err, err  # the home itself is out of reach


def test_run_as_runs_the_command_as_that_user(home: Path) -> None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="i11-run-as-") as scratch:
        Path(scratch).chmod(0o755)  # where `nobody` may read the probe
        probe = Path(scratch) / "probe.py"
        probe.write_text(_PROBE)
        probe.chmod(0o644)
        r = subprocess.run(
            [
                *EXE,
                *("exec", "--run-as", "nobody", "--", "sh", "-c"),
                f"id -u; /usr/bin/python3 {probe} {home}",  # not pyenv's: /root is 0700
            ],
            capture_output=True,
            env=_env(home, INTERLOCK_CAPABILITY=token(home)),
            cwd=scratch,
            timeout=60,
            check=False,
        )
    assert r.returncode == 0, r.stderr
    uid, found = r.stdout.decode().split("\n", 1)
    assert uid == "65534"
    assert all(v == "EACCES" for v in json.loads(found).values())
    start = _start_record(home, _last_exec_id(home))
    assert start["containment"]["run_as"] == 65534  # type: ignore[index]


# -- fail closed without containment; weaker modes only when chosen -----------------------------


@pytest.mark.parametrize(
    ("setting", "detail"),
    [
        ('cgroup_root = "/tmp"', "not a writable cgroup v2 directory"),
        ('run_as = "no-such-user-i11"', "no such user"),
    ],
)
def test_without_containment_exec_denies_and_nothing_runs(
    home: Path, tmp_path: Path, setting: str, detail: str
) -> None:
    edit_config(home, 'containment = "full"', f'containment = "full"\n{setting}')
    marker = tmp_path / "ran"
    r = exec_run(home, token(home), "touch", str(marker))
    assert r.returncode == 126
    assert b"CONTAINMENT_UNAVAILABLE" in r.stderr and detail.encode() in r.stderr
    assert not marker.exists()
    denied = [x for x in records(home) if x["type"] == "decision"][-1]
    assert denied["effect"] == "deny"
    assert denied["reasons"][0]["code"] == "CONTAINMENT_UNAVAILABLE"
    assert not [x for x in records(home) if x["type"] == "exec.start"]


def test_a_working_directory_inside_the_home_is_refused(home: Path) -> None:
    r = exec_run(home, token(home), "cat", "keys/node.key", cwd=home)
    assert r.returncode == 126
    assert b"CONTAINMENT_UNAVAILABLE" in r.stderr and b"inside the governance home" in r.stderr
    assert b"PRIVATE KEY" not in r.stdout


def test_a_weaker_mode_runs_only_when_chosen_and_is_attested(home: Path, tmp_path: Path) -> None:
    edit_config(home, 'containment = "full"', 'containment = "unsafe-process-group"')
    marker = tmp_path / "ran"
    r = exec_run(home, token(home), "touch", str(marker))
    assert r.returncode == 0, r.stderr
    assert marker.exists()
    start = _start_record(home, _last_exec_id(home))
    assert start["containment"] == {  # type: ignore[comparison-overlap]
        "mode": "unsafe-process-group",
        "home": "uid",
        "capabilities_dropped": False,
    }
    shown = json.loads(cli(home, "attest", "show", "--json").stdout)
    assert shown["measurement"]["containment"]["mode"] == "unsafe-process-group"
    attested = [x for x in records(home) if x.get("event") == "node.attested"][-1]
    assert attested["measurement"]["containment"]["mode"] == "unsafe-process-group"


def test_the_default_mode_is_full_and_attested(home: Path) -> None:
    shown = json.loads(cli(home, "attest", "show", "--json").stdout)
    c = shown["measurement"]["containment"]
    assert c["mode"] == "full" and c["available"] is True
    assert c["landlock_abi"] >= 6 and c["cgroup"].startswith(str(CGROUP2))


# -- nested executions go through their supervisor ----------------------------------------------


def test_a_nested_exec_is_relayed_contained_in_its_parent_and_cannot_forge_its_parent(
    home: Path, tmp_path: Path
) -> None:
    outer_tok, inner_tok = token(home), token(home)
    inner_id = tmp_path / "inner.id"
    inner = " ".join(
        [
            f"INTERLOCK_CAPABILITY={inner_tok}",
            *EXE,
            "exec",
            "--parent",
            "0190b3f6-7a1c-7000-8000-000000000000",  # a forged parent: the relay ignores it
            "--",
            "sh",
            "-c",
            f"'echo $INTERLOCK_EXECUTION_ID > {inner_id}; cat /proc/self/cgroup'",
        ]
    )
    r = exec_run(home, outer_tok, "sh", "-c", inner)
    assert r.returncode == 0, r.stderr
    nested = inner_id.read_text().strip()
    outer = of(home, nested)["decision"]["parent"]
    assert outer != "0190b3f6-7a1c-7000-8000-000000000000"
    assert of(home, outer)["decision"]["effect"] == "allow"
    outer_cg = _start_record(home, outer)["containment"]["cgroup"]  # type: ignore[index]
    inner_cg = _start_record(home, nested)["containment"]["cgroup"]  # type: ignore[index]
    assert str(inner_cg).startswith(str(outer_cg) + "/interlock/")
    assert "exec.end" in of(home, nested) and "exec.end" in of(home, outer)
