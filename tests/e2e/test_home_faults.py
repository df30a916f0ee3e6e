"""Issue 9: storage and home failures are coded denials, never tracebacks or hangs.

A second *process* holds the ledger's SQLite lock exclusively (as a governed process could);
the configuration is binary; a FIFO replaces the checkpoint anchor under a running gate. Each
test asserts the reason code, the exit code, that the command did not run, and that nothing
hangs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import interlock
from interlock.gate import Gate
from tests.conftest import RESEARCHER, edit_config, tool_request

EXE = [sys.executable, "-m", "interlock.cli"]

_HOLD = """
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("PRAGMA busy_timeout=10000")
if sys.argv[2] == "exclusive":  # no other connection may even read
    c.execute("PRAGMA locking_mode=EXCLUSIVE")
    c.execute("BEGIN EXCLUSIVE")
else:  # the write lock: readers go on (WAL), writers wait
    c.execute("BEGIN IMMEDIATE")
c.execute("INSERT INTO meta(k, v) VALUES ('lock-holder', '1')")
print("locked", flush=True)
time.sleep(60)
"""


@contextmanager
def locked(home: Path, how: str = "exclusive") -> Iterator[None]:
    """Another process holds the ledger database's lock (``exclusive`` or ``write``)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(home / "ledger.db"), how],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def cli(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "INTERLOCK_HOME": str(home)}
    return subprocess.run(
        [*EXE, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def _denied_json(r: subprocess.CompletedProcess[str], code: str) -> None:
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    out = json.loads(r.stdout)
    assert out["effect"] == "deny"
    assert out["reasons"][0]["code"] == code


def test_a_ledger_locked_at_open_denies_decide_exec_and_verify(
    home: Path, issue: Any, tmp_path: Path
) -> None:
    token = issue(RESEARCHER, "shell.exec:Host::*")
    marker = tmp_path / "ran"
    with locked(home):
        started = time.monotonic()
        _denied_json(
            cli(home, "decide", "--json", stdin=json.dumps(tool_request(token))),
            "LEDGER_UNAVAILABLE",
        )
        assert time.monotonic() - started < 30  # bounded by the ledger timeout, not forever
        r = cli(
            home,
            "exec",
            "--principal",
            RESEARCHER,
            "--capability",
            token,
            "--",
            "touch",
            str(marker),
        )
        assert r.returncode == 126, r.stdout + r.stderr
        assert "LEDGER_UNAVAILABLE" in r.stderr and "Traceback" not in r.stderr
        assert not marker.exists()
        r = cli(home, "ledger", "verify")
        assert r.returncode == 1, r.stdout + r.stderr
        assert "Traceback" not in r.stderr
    # once the lock is gone, the same home works
    r = cli(home, "decide", "--json", stdin=json.dumps(tool_request(issue())))
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_ledger_locked_mid_run_denies_and_runs_nothing(home: Path, issue: Any) -> None:
    token = issue()
    with Gate.open(home) as gate:
        assert gate.decide(tool_request(token)).allowed
        with locked(home, "write"):
            time.sleep(0.15)  # past the trust refresh: the snapshot is re-read too
            ran = []
            d = gate.decide(tool_request(token))
            assert d.codes == ("LEDGER_UNAVAILABLE",), d.reasons
            assert not d.allowed and d.ledger_index is None
            with (
                pytest.raises(interlock.Denied, match="LEDGER_UNAVAILABLE"),
                gate.execution(tool_request(token)),
            ):
                ran.append(1)
            assert ran == []
        assert gate.decide(tool_request(token)).allowed


def test_a_binary_config_is_a_coded_deny(home: Path, issue: Any) -> None:
    token = issue()
    (home / "interlock.toml").write_bytes(b"\xff\xfe\x00garbage\x00")
    _denied_json(
        cli(home, "decide", "--json", stdin=json.dumps(tool_request(token))),
        "ENVIRONMENT_UNTRUSTED",
    )


def test_a_fifo_in_place_of_the_anchor_under_a_running_gate_denies(home: Path, issue: Any) -> None:
    edit_config(home, "ledger_check_interval_ms = 5000", "ledger_check_interval_ms = 100")
    token = issue()
    with Gate.open(home) as gate:
        assert gate.decide(tool_request(token)).allowed
        anchor = home / "checkpoint"
        anchor.unlink(missing_ok=True)
        os.mkfifo(anchor, 0o600)
        deadline = time.monotonic() + 5
        while gate.corrupt is None and time.monotonic() < deadline:
            time.sleep(0.02)
        d = gate.decide(tool_request(token))
        assert d.codes == ("LEDGER_CORRUPT",), d.reasons
        assert "anchor" in (gate.corrupt or "")
        anchor.unlink()  # so that closing can write a real one back


def test_a_running_check_that_cannot_run_denies_until_it_runs_again(
    home: Path, issue: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from interlock import watchers as gate_module
    from interlock.errors import LedgerUnavailable

    edit_config(home, "ledger_check_interval_ms = 5000", "ledger_check_interval_ms = 100")
    token = issue()
    real = gate_module.check_log

    def broken(*_a: Any, **_k: Any) -> Any:
        raise LedgerUnavailable("injected: the check could not read the ledger")

    with Gate.open(home) as gate:
        assert gate.decide(tool_request(token)).allowed
        monkeypatch.setattr(gate_module, "check_log", broken)
        deadline = time.monotonic() + 5
        while gate.ledger_check_problem() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        d = gate.decide(tool_request(token))
        assert d.codes == ("LEDGER_UNAVAILABLE",) and d.ledger_index is None
        ran: list[int] = []
        with (
            pytest.raises(interlock.Denied, match="LEDGER_UNAVAILABLE"),
            gate.execution(tool_request(token)),
        ):
            ran.append(1)
        assert ran == []
        monkeypatch.setattr(gate_module, "check_log", real)
        deadline = time.monotonic() + 5
        while gate.ledger_check_problem() is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert gate.decide(tool_request(token)).allowed


def test_a_check_that_hangs_denies_once_it_is_late(
    home: Path, issue: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from interlock import watchers as gate_module

    edit_config(home, "ledger_check_interval_ms = 5000", "ledger_check_interval_ms = 100")
    token = issue()
    release = threading.Event()

    def hangs(*_a: Any, **_k: Any) -> Any:
        release.wait(30)
        raise RuntimeError("released")

    with Gate.open(home) as gate:
        monkeypatch.setattr(gate_module, "check_log", hangs)
        deadline = time.monotonic() + 5
        while gate.ledger_check_problem() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        d = gate.decide(tool_request(token))
        assert d.codes == ("LEDGER_UNAVAILABLE",)
        assert "no ledger check completed" in d.reasons[0].detail
        release.set()


def test_read_only_commands_never_wait_on_a_writers_lock(home: Path) -> None:
    # a reader that waited on the lock would fail after the ledger timeout: these succeed
    # while another process holds the write lock for the whole time
    with locked(home, "write"):
        for args in (("ledger", "verify"), ("ledger", "tail"), ("trust", "show")):
            r = cli(home, *args)
            assert r.returncode == 0, (args, r.stdout, r.stderr)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs (root mounts it: the suite runs as root, as CI does)."""
    where = tmp_path / "disk"
    where.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _home_on(disk: Path) -> tuple[Path, str]:
    from tests.conftest import trust_config

    r = cli(disk / "home", "init", "--origin", "interlock.test/disk")
    assert r.returncode == 0, r.stderr
    home = disk / "home"
    cfg = home / "interlock.toml"
    cfg.write_text(cfg.read_text().replace("deadline_ms = 50", "deadline_ms = 2000"))
    trust_config(home)
    r = cli(home, "token", "issue", "--principal", RESEARCHER, "--right", "tool.call:Tool::*")
    assert r.returncode == 0, r.stderr
    return home, r.stdout.strip()


def test_a_full_disk_is_a_coded_deny(small_disk: Path) -> None:
    home, token = _home_on(small_disk)
    request = json.dumps(tool_request(token))
    r = cli(home, "decide", "--json", stdin=request)
    assert r.returncode == 0, r.stdout + r.stderr
    size_before = _size(home)
    filler = small_disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:  # fill the disk to the last block
        for block in (1 << 20, 4096, 512):
            while True:
                try:
                    os.write(fd, b"\0" * block)
                except OSError:
                    break
    finally:
        os.close(fd)
    for _ in range(3):  # at open and during decisions: never a traceback, never an allow
        r = cli(home, "decide", "--json", stdin=request)
        assert "Traceback" not in r.stderr, r.stderr
        assert r.returncode == 1, r.stdout + r.stderr
        out = json.loads(r.stdout)
        assert out["effect"] == "deny"
        assert out["reasons"][-1]["code"] == "LEDGER_UNAVAILABLE", out
    filler.unlink()
    after = _allows_after(home, size_before)
    assert after == [], "an allow was recorded while the disk was full"
    r = cli(home, "decide", "--json", stdin=request)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_read_only_home_is_a_coded_deny(small_disk: Path) -> None:
    home, token = _home_on(small_disk)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    r = cli(home, "decide", "--json", stdin=json.dumps(tool_request(token)))
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == 1, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["effect"] == "deny"
    assert out["reasons"][-1]["code"] == "LEDGER_UNAVAILABLE"


def _allows_after(home: Path, start: int) -> list[int]:
    import sqlite3

    conn = sqlite3.connect(f"file:{home / 'ledger.db'}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT idx, data FROM entries WHERE idx >= ?", (start,)).fetchall()
    finally:
        conn.close()
    return [i for i, d in rows if json.loads(d).get("effect") == "allow"]


def _size(home: Path) -> int:
    import sqlite3

    conn = sqlite3.connect(f"file:{home / 'ledger.db'}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0])
    finally:
        conn.close()
