"""The storage floors the durable-ledger figures are measured beside: a raw ``write`` and
``fsync`` (P4's baseline), one SQLite WAL commit per row (the floor under P4) and SQLite WAL
records per second at one commit each (P3's baseline).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["fsync_one", "one_commit_per_record", "sqlite_one"]


@contextlib.contextmanager
def fsync_one(directory: Path) -> Iterator[Callable[[], None]]:
    """One raw append of 400 bytes and its fsync, in ``directory``: P4's baseline."""
    fd = os.open(directory / "fsync.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    payload = b"x" * 400

    def one() -> None:
        os.write(fd, payload)
        os.fsync(fd)

    try:
        yield one
    finally:
        os.close(fd)


@contextlib.contextmanager
def sqlite_one(directory: Path) -> Iterator[Callable[[], None]]:
    """One 400-byte row committed on its own to a SQLite WAL database (``synchronous=FULL``,
    as the ledger's ``full`` durability) in ``directory``: the floor under P4, since every
    durable decision is at least one such commit."""
    conn = sqlite3.connect(directory / "p4-floor.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS t (i INTEGER PRIMARY KEY, d BLOB)")
    data = b"x" * 400

    def one() -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (d) VALUES (?)", (data,))
        conn.execute("COMMIT")

    try:
        yield one
    finally:
        conn.close()


def one_commit_per_record(directory: Path, n: int) -> float:
    conn = sqlite3.connect(directory / "baseline.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (i INTEGER PRIMARY KEY, h BLOB, d BLOB)")
    data = b"x" * 400
    t0 = time.perf_counter()
    for i in range(n):
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t VALUES (?, ?, ?)", (i, hashlib.sha256(data).digest(), data))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return n / elapsed
