"""Fault matrix, the ledger: locks, a busy writer, a read-only or full disk, a database deleted
or its WAL removed under a running gate, a corrupt page, an edited entry, an edited state row.

Every fault is made from outside Interlock: another process holding SQLite's locks, a real
tmpfs mounted by the test (the suite runs as root, as CI does), files unlinked or overwritten,
rows edited with the sqlite3 module as an attacker with the home's permissions would.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from interlock.capability import revocation_ids
from interlock.gate import Gate
from interlock.ledger import merkle
from tests.conftest import RESEARCHER, edit_config, tool_request, trust_config
from tests.faults.harness import (
    decide_cli,
    decide_in,
    exec_cli,
    governed,
    on_ledger,
    record,
)

UNAVAILABLE = ("LEDGER_UNAVAILABLE",)
BROKEN = ("LEDGER_CORRUPT", "LEDGER_UNAVAILABLE")

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
time.sleep(120)
"""


@contextmanager
def held(home: Path, how: str) -> Iterator[None]:
    """Another process holds the ledger's lock (``exclusive`` or ``write``)."""
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


def sql(home: Path, *statements: str) -> None:
    conn = sqlite3.connect(home / "ledger.db", isolation_level=None)
    try:
        for s in statements:
            conn.execute(s)
    finally:
        conn.close()


@pytest.fixture
def watched(home: Path) -> Path:
    """A home whose running gates re-check the ledger every 200 ms."""
    edit_config(home, "ledger_check_interval_ms = 5000", "ledger_check_interval_ms = 200")
    return home


def _noticed(gate: Gate, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while gate.fail_closed_state() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gate.fail_closed_state() is not None, "the running gate did not notice the fault"


def test_locked(home: Path, token: str, request_of: dict[str, Any], tmp_path: Path) -> None:
    with held(home, "exclusive"):
        attempts = [decide_cli(home, request_of), exec_cli(home, token, tmp_path / "ran")]
    record(
        "ledger.locked",
        "ledger",
        "another process holds the SQLite database's exclusive lock (locking_mode=EXCLUSIVE)",
        UNAVAILABLE,
        attempts,
        recorded=on_ledger(home, attempts, why_not="no connection can even read the database"),
    )


def test_busy_past_the_deadline(
    home: Path, token: str, request_of: dict[str, Any], tmp_path: Path
) -> None:
    edit_config(home, "ledger_timeout_ms = 2000", "ledger_timeout_ms = 300")
    with Gate.open(home) as gate:
        assert gate.decide(request_of).allowed
        with held(home, "write"):
            time.sleep(0.1)  # past the trust refresh: the snapshot is re-read under the lock
            attempts = [
                decide_in(gate, request_of),
                governed(gate, request_of),
                exec_cli(home, token, tmp_path / "ran"),
            ]
    record(
        "ledger.busy",
        "ledger",
        "another process holds SQLite's write lock (BEGIN IMMEDIATE) past the 300 ms ledger"
        " timeout, under a running gate and a new `exec`",
        UNAVAILABLE,
        attempts,
        recorded=on_ledger(home, attempts, why_not="the write lock is what the record needs"),
    )


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs of the test's own (root mounts it: the suite runs as root, as CI does)."""
    where = tmp_path / "disk"
    where.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _home_on(disk: Path, issue: Callable[..., str]) -> tuple[Path, str]:
    from interlock.bootstrap import init_home

    home = init_home(disk / "home", origin="interlock.test/disk").path
    cfg = home / "interlock.toml"
    cfg.write_text(cfg.read_text().replace("deadline_ms = 50", "deadline_ms = 2000"))
    trust_config(home)
    # the token is signed with this home's root key (the fixture's home is another one)
    from datetime import UTC, datetime, timedelta

    from interlock.capability import CapabilityIssuer, Right
    from interlock.home import Home
    from interlock.trust import keys

    h = Home.load(home)
    issuer = CapabilityIssuer(keys.private_raw(h.private_key("biscuit-root")))
    tok = issuer.issue(
        principal=RESEARCHER,
        rights=[Right.parse("tool.call:Tool::*"), Right.parse("shell.exec:Host::*")],
        expires_at=datetime.now(UTC) + timedelta(minutes=15),
    )
    return home, tok


def test_read_only(small_disk: Path, issue: Any, tmp_path: Path) -> None:
    home, tok = _home_on(small_disk, issue)
    assert decide_cli(home, tool_request(tok)).effect == "allow"
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        attempts = [decide_cli(home, tool_request(tok)), exec_cli(home, tok, tmp_path / "ran")]
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    record(
        "ledger.read-only",
        "ledger",
        "the home's filesystem (a tmpfs of the test's own) remounted read-only",
        UNAVAILABLE,
        attempts,
        recorded=on_ledger(home, attempts, why_not="the filesystem is read-only"),
    )


def test_disk_full(small_disk: Path, issue: Any, tmp_path: Path) -> None:
    home, tok = _home_on(small_disk, issue)
    assert decide_cli(home, tool_request(tok)).effect == "allow"
    filler = small_disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:  # to the last block
        for block in (1 << 20, 4096, 512, 1):
            while True:
                try:
                    os.write(fd, b"\0" * block)
                except OSError:
                    break
    finally:
        os.close(fd)
    attempts = [
        decide_cli(home, tool_request(tok)),
        decide_cli(home, tool_request(tok)),
        exec_cli(home, tok, tmp_path / "ran"),
    ]
    filler.unlink()
    record(
        "ledger.disk-full",
        "ledger",
        "the home on a 24 MiB tmpfs of the test's own, filled to the last byte by another file",
        UNAVAILABLE,
        attempts,
        recorded=on_ledger(home, attempts, why_not="no space left for the record"),
    )


def _unlink_ledger(home: Path, *suffixes: str) -> None:
    for suffix in suffixes:
        Path(f"{home / 'ledger.db'}{suffix}").unlink(missing_ok=True)


def test_deleted_while_open(
    watched: Path, token: str, request_of: dict[str, Any], tmp_path: Path
) -> None:
    with Gate.open(watched) as gate:
        assert gate.decide(request_of).allowed
        _unlink_ledger(watched, "", "-wal", "-shm")
        # at once: an allow now would be written to the unlinked file, recorded nowhere
        attempts = [decide_in(gate, request_of, "decide (running gate, at once)")]
        attempts.append(exec_cli(watched, token, tmp_path / "ran"))
        _noticed(gate)
        attempts.append(decide_in(gate, request_of, "decide (running gate, after its check)"))
        attempts.append(governed(gate, request_of))
    record(
        "ledger.deleted-while-open",
        "ledger",
        "ledger.db and its -wal/-shm unlinked under a running gate (check every 200 ms); a new"
        " `exec` on the home",
        BROKEN,
        attempts,
        recorded=on_ledger(watched, attempts, why_not="the ledger is gone (never recreated)"),
    )


def test_wal_removed(watched: Path, token: str, request_of: dict[str, Any], tmp_path: Path) -> None:
    with Gate.open(watched) as gate:
        for _ in range(3):
            assert gate.decide(request_of).allowed
        assert Path(f"{watched / 'ledger.db'}-wal").stat().st_size > 0
        _unlink_ledger(watched, "-wal")
        attempts = [decide_in(gate, request_of, "decide (running gate, at once)")]
        attempts.append(exec_cli(watched, token, tmp_path / "ran"))
        _noticed(gate)
        attempts.append(decide_in(gate, request_of, "decide (running gate, after its check)"))
        attempts.append(governed(gate, request_of))
    record(
        "ledger.wal-removed",
        "ledger",
        "ledger.db-wal (holding committed, not yet checkpointed entries) unlinked under a"
        " running gate; a new `exec` on the home",
        BROKEN,
        attempts,
        recorded=on_ledger(watched, attempts, why_not="the committed tail went with the WAL"),
    )


def test_corrupt_page(home: Path, token: str, request_of: dict[str, Any], tmp_path: Path) -> None:
    with Gate.open(home) as gate:
        for _ in range(40):
            gate.decide(request_of)
    with open(home / "ledger.db", "r+b") as db:  # page 4 of the closed (checkpointed) file
        db.seek(3 * 4096)
        db.write(bytes(range(256)) * 16)
    attempts = [decide_cli(home, request_of), exec_cli(home, token, tmp_path / "ran")]
    record(
        "ledger.corrupt-page",
        "ledger",
        "a 4 KiB page of ledger.db overwritten with other bytes while no gate runs",
        ("LEDGER_CORRUPT",),
        attempts,
        recorded=on_ledger(home, attempts, why_not="a corrupt ledger is never written to"),
    )


def test_edited_entry(watched: Path, token: str, tmp_path: Path) -> None:
    import json

    with Gate.open(watched) as gate:
        denied = gate.decide(tool_request(token, "delete_database"))
        assert not denied.allowed and denied.ledger_index is not None
        for _ in range(3):
            assert gate.decide(tool_request(token)).allowed
        gate.ledger.checkpoint()
        rec = json.loads(gate.ledger.entry(denied.ledger_index))
        rec["effect"], rec["reasons"] = "allow", []  # the deny rewritten as an allow
        data = json.dumps(rec, sort_keys=True, separators=(",", ":")).encode()
        sql(
            watched,
            "DROP TRIGGER entries_no_update",
            f"UPDATE entries SET data = x'{data.hex()}',"
            f" leaf_hash = x'{merkle.leaf_hash(data).hex()}' WHERE idx = {denied.ledger_index}",
        )
        _noticed(gate)
        attempts = [decide_in(gate, tool_request(token)), governed(gate, tool_request(token))]
    attempts += [decide_cli(watched, tool_request(token)), exec_cli(watched, token, tmp_path / "r")]
    record(
        "ledger.edited-entry",
        "ledger",
        "a deny entry rewritten as an allow, its leaf hash recomputed (update trigger dropped),"
        " under a running gate (attempted after its 200 ms check) and in new processes",
        ("LEDGER_CORRUPT",),
        attempts,
        recorded=on_ledger(watched, attempts, why_not="a corrupt ledger is never written to"),
    )


def test_edited_state(watched: Path, token: str, issue: Any, tmp_path: Path) -> None:
    revoked = issue(RESEARCHER, "tool.call:Tool::*", "shell.exec:Host::*")
    with Gate.open(watched) as gate:
        gate.revoke(tuple(revocation_ids(revoked)))
        assert gate.decide(tool_request(revoked)).codes == ("CAPABILITY_REVOKED",)
        sql(watched, "DELETE FROM revocations")  # the revocation undone in the state table
        _noticed(gate)
        attempts = [decide_in(gate, tool_request(revoked)), governed(gate, tool_request(token))]
    attempts += [
        decide_cli(watched, tool_request(revoked)),
        exec_cli(watched, revoked, tmp_path / "ran"),
    ]
    record(
        "ledger.edited-state",
        "ledger",
        "the revocations table emptied (a revocation undone) under a running gate (attempted"
        " after its 200 ms check) and in new processes, with the revoked and a valid token",
        ("LEDGER_CORRUPT",),
        attempts,
        recorded=on_ledger(watched, attempts, why_not="a corrupt ledger is never written to"),
    )
