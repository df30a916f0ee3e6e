"""A witness's durable state: per log origin, the latest checkpoint it cosigned, and the
evidence of what it refused. One SQLite file in the witness's own folder.

    >>> # with WitnessState(Path("w/witness.db")) as st:
    >>> #     with st.transaction() as tx:
    >>> #         tx.latest("example.com/log")

The check of the old size and the write of the new checkpoint happen in one ``BEGIN
IMMEDIATE`` transaction (c2sp.org/tlog-witness: they MUST be atomic, or two racing requests
could roll the witness back), committed with ``synchronous=FULL`` before the witness answers.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from interlock.errors import Error

__all__ = ["Evidence", "Latest", "StateError", "Transaction", "WitnessState"]

#: refusals kept per origin at most: enough to prove a split view, bounded against a log that
#: floods the witness with signed stale checkpoints
MAX_EVIDENCE_PER_ORIGIN = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS latest (
  origin TEXT PRIMARY KEY,
  size INTEGER NOT NULL,
  root BLOB NOT NULL,
  note TEXT NOT NULL,
  cosigned INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS evidence (
  id INTEGER PRIMARY KEY,
  origin TEXT NOT NULL,
  kind TEXT NOT NULL,
  size INTEGER NOT NULL,
  root BLOB NOT NULL,
  note TEXT NOT NULL,
  held_size INTEGER NOT NULL,
  held_root BLOB NOT NULL,
  held_note TEXT NOT NULL,
  received INTEGER NOT NULL,
  UNIQUE (origin, kind, size, root)
);
"""


class StateError(Error):
    """The witness's state file could not be read or written: it cosigns nothing."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Latest:
    """The latest checkpoint cosigned for an origin: its size, root and cosigned note."""

    origin: str
    size: int
    root: bytes
    note: str
    cosigned: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Evidence:
    """A refused checkpoint, validly signed by its log, beside the one the witness held:
    ``fork`` (same size, another root), ``smaller`` (a size below the held one) or
    ``inconsistent`` (its consistency proof from the held checkpoint failed)."""

    origin: str
    kind: str
    size: int
    root: bytes
    note: str
    held_size: int
    held_root: bytes
    held_note: str
    received: int


class Transaction:
    """Reads and writes inside one ``BEGIN IMMEDIATE`` transaction."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def latest(self, origin: str) -> Latest | None:
        """The latest cosigned checkpoint for ``origin``, or None."""
        row = self._db.execute(
            "SELECT origin, size, root, note, cosigned FROM latest WHERE origin = ?", (origin,)
        ).fetchone()
        if row is None:
            return None
        return Latest(origin=row[0], size=row[1], root=row[2], note=row[3], cosigned=row[4])

    def set_latest(self, latest: Latest) -> None:
        """Record ``latest`` as the checkpoint cosigned for its origin."""
        self._db.execute(
            "INSERT INTO latest(origin, size, root, note, cosigned) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT(origin) DO UPDATE SET size = excluded.size, root = excluded.root,"
            " note = excluded.note, cosigned = excluded.cosigned",
            (latest.origin, latest.size, latest.root, latest.note, latest.cosigned),
        )

    def add_evidence(self, ev: Evidence) -> None:
        """Keep ``ev`` (once per origin, kind, size and root; at most
        :data:`MAX_EVIDENCE_PER_ORIGIN` per origin)."""
        (count,) = self._db.execute(
            "SELECT count(*) FROM evidence WHERE origin = ?", (ev.origin,)
        ).fetchone()
        if count >= MAX_EVIDENCE_PER_ORIGIN:
            return
        self._db.execute(
            "INSERT OR IGNORE INTO evidence(origin, kind, size, root, note, held_size,"
            " held_root, held_note, received) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                ev.origin,
                ev.kind,
                ev.size,
                ev.root,
                ev.note,
                ev.held_size,
                ev.held_root,
                ev.held_note,
                ev.received,
            ),
        )


class WitnessState:
    """The witness's SQLite file (created with mode 0600 when ``create``).

    Raises (constructor):
        StateError: the file is missing (without ``create``) or cannot be opened.
    """

    def __init__(self, path: Path, *, create: bool = False) -> None:
        self.path = Path(path)
        if create and not self.path.exists():
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except OSError as exc:
                raise StateError(f"cannot create {self.path}: {exc.strerror}") from exc
            os.close(fd)
        if not self.path.exists():
            raise StateError(f"the witness state {self.path} is missing")
        try:
            self._db = sqlite3.connect(
                f"file:{quote(str(self.path.absolute()))}?mode=rw",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
                timeout=5.0,
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            # every cosignature's state is on disk before the answer (tlog-witness: MUST persist)
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StateError(f"cannot open the witness state {self.path}: {exc}") from exc
        self._lock = threading.Lock()

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One atomic read-check-write: committed when the block ends, rolled back if it
        raises. Serialised within the process and, by SQLite's write lock, across processes.

        Raises:
            StateError: SQLite failed (nothing is committed).
        """
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StateError(f"cannot lock the witness state: {exc}") from exc
            try:
                yield Transaction(self._db)
            except sqlite3.Error as exc:
                self._db.execute("ROLLBACK")
                raise StateError(f"cannot update the witness state: {exc}") from exc
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            # a refusal is decided inside the block but raised after it, so its evidence
            # commits (see interlock.witness.core)
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._db.execute("ROLLBACK")
                raise StateError(f"cannot commit the witness state: {exc}") from exc

    def all_latest(self) -> list[Latest]:
        """Every origin's latest cosigned checkpoint, by origin.

        Raises:
            StateError: SQLite failed.
        """
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT origin, size, root, note, cosigned FROM latest ORDER BY origin"
                ).fetchall()
            except sqlite3.Error as exc:
                raise StateError(f"cannot read the witness state: {exc}") from exc
        return [Latest(origin=r[0], size=r[1], root=r[2], note=r[3], cosigned=r[4]) for r in rows]

    def evidence(self) -> list[Evidence]:
        """Every refusal kept, oldest first.

        Raises:
            StateError: SQLite failed.
        """
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT origin, kind, size, root, note, held_size, held_root, held_note,"
                    " received FROM evidence ORDER BY id"
                ).fetchall()
            except sqlite3.Error as exc:
                raise StateError(f"cannot read the witness state: {exc}") from exc
        return [
            Evidence(
                origin=r[0],
                kind=r[1],
                size=r[2],
                root=r[3],
                note=r[4],
                held_size=r[5],
                held_root=r[6],
                held_note=r[7],
                received=r[8],
            )
            for r in rows
        ]

    def close(self) -> None:
        """Close the file. Never raises."""
        with self._lock, suppress(sqlite3.Error):
            self._db.close()

    def __enter__(self) -> WitnessState:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
