"""The embedded ledger: an RFC 6962 log in SQLite (WAL) with group commit.

    >>> from pathlib import Path
    >>> import tempfile
    >>> from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    >>> from interlock.ledger.note import NoteSigner
    >>> signer = NoteSigner("interlock.local/doc", Ed25519PrivateKey.generate())
    >>> led = SqliteLedger(Path(tempfile.mkdtemp()) / "ledger.db", signer=signer, create=True)
    >>> [r.index for r in led.append([Append(record=b'{"a":1}')])]
    [0]
    >>> led.close()

Three concerns kept apart, as in Tessera: *sequencing* (a durable index for each record, in one
transaction with its leaf hash), *integration* (persisted 256-wide tiles; the right edge of
the tree in memory) and *publishing* (signed C2SP checkpoints, at least every second while
entries arrive or every 1,000 entries).

Group commit through one *sequencer* per ledger object: callers queue their records and wait;
a writer thread takes everything queued as one batch and commits it in one transaction — one
fsync for all of them with ``full`` durability — then answers each caller. While a batch
commits the next one gathers, so batches grow with load. A lone caller (nothing queued, no
batch being written) commits on its own thread, sparing two thread hand-offs; callers arriving
meanwhile queue for the sequencer.
Nobody is answered before COMMIT returned. A caller whose deadline passes withdraws its
records while the sequencer has not started writing them (still queued, or in a batch still
waiting for the SQLite write lock; the sequencer also drops those whose deadline passed while
it waited): those are never committed. Once written they may still commit: a committed record
whose caller was told "deny" is harmless, the reverse (an action without a record) cannot
happen (DESIGN I1). When committed entries have gone a second without a checkpoint, the idle
sequencer commits an empty batch that signs one. Several processes on one home each have
their sequencer; SQLite's write lock orders their batches.

The right edge of the tree (the frontier) lives in memory only; on first use, or after another
process appended, the writer derives it from the tree itself: the roots of the perfect subtrees
of the size's binary decomposition, read from persisted tiles and the partial tile's entries.

Triggers abort UPDATE and DELETE on entries, tiles and checkpoints. That is defence in depth
against accidents; verification (``interlock.ledger.verify``) is the real guard.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from interlock.core.model import MAX_RECORD_BYTES
from interlock.errors import (
    LedgerCorrupt,
    LedgerError,
    LedgerUnavailable,
)
from interlock.ledger.note import NoteSigner
from interlock.ledger.protocols import Append, AppendResult, Durability, StoredCheckpoint
from interlock.ledger.storage.sqlite_commit import (
    GroupCommit,
    _Pending,
)
from interlock.ledger.storage.sqlite_common import _SELECT_ENTRIES, _as_bytes, _entry_chunks
from interlock.ledger.storage.sqlite_state import (
    _STATE_SCHEMA,
    _STATE_TRIGGERS,
    SCHEMA_VERSION,
    StateTables,
)
from interlock.ledger.storage.sqlite_tree import TreeCheck

__all__ = [
    "Append",
    "AppendResult",
    "Durability",
    "SqliteLedger",
    "StoredCheckpoint",
]

_LOG_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    idx INTEGER PRIMARY KEY,
    leaf_hash BLOB NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS tiles (
    level INTEGER NOT NULL,
    n INTEGER NOT NULL,
    hashes BLOB NOT NULL,
    nodes BLOB NOT NULL,
    root BLOB NOT NULL,
    PRIMARY KEY (level, n)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    size INTEGER PRIMARY KEY,
    root BLOB NOT NULL,
    note TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS blobs (
    digest TEXT PRIMARY KEY,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    k TEXT PRIMARY KEY,
    v TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS entries_no_update BEFORE UPDATE ON entries
BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
CREATE TRIGGER IF NOT EXISTS entries_no_delete BEFORE DELETE ON entries
BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
CREATE TRIGGER IF NOT EXISTS tiles_no_update BEFORE UPDATE ON tiles
BEGIN SELECT RAISE(ABORT, 'ledger tiles are append-only'); END;
CREATE TRIGGER IF NOT EXISTS tiles_no_delete BEFORE DELETE ON tiles
BEGIN SELECT RAISE(ABORT, 'ledger tiles are append-only'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_no_update BEFORE UPDATE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_no_delete BEFORE DELETE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;
"""
_SCHEMA = _LOG_SCHEMA + _STATE_SCHEMA + "".join(f"{t};\n" for t in _STATE_TRIGGERS)


class SqliteLedger(GroupCommit, StateTables, TreeCheck):
    """An append-only, verifiable log in one SQLite file.

    Args:
        path: the database file. It must exist unless ``create`` is true: a gate never
            creates a ledger, only ``interlock init`` does (a missing ledger in an initialised
            home is LEDGER_CORRUPT, not a fresh start).
        signer: signs checkpoints; ``None`` opens the ledger read-only for appends.
        durability: ``full`` (default) or ``process``.
        busy_timeout_ms: how long a write waits for another process's write lock, and a
            read for a lock held exclusively (readers never wait on a writer in WAL mode).
        create: create the file and its schema (``interlock init`` and tests only).
        upgrade: open a ledger of an older schema, only to :meth:`replace_state` it.

    Raises:
        LedgerCorrupt: the file is missing (without ``create``), or is not an Interlock ledger.
        LedgerUnavailable: the file cannot be opened or read (locked, unreadable, not SQLite),
            or its schema predates this version (run ``interlock ledger rebuild-state``).
    """

    def __init__(
        self,
        path: Path,
        *,
        signer: NoteSigner | None = None,
        durability: Durability | str = Durability.FULL,
        busy_timeout_ms: int = 5000,
        create: bool = False,
        upgrade: bool = False,
    ) -> None:
        self.path = Path(path)
        self.signer = signer
        self.durability = Durability(durability)
        self._busy_timeout_ms = busy_timeout_ms
        if not create and not self.path.exists():
            raise LedgerCorrupt(
                f"the ledger {self.path} is missing: only `interlock init` creates one; restore"
                " it from a backup"
            )
        self._read = self._connect(create=create)
        self._read_lock = threading.Lock()
        with self._read_lock:
            try:
                if create:
                    self._read.execute("PRAGMA journal_mode=WAL")
                    self._read.executescript(_SCHEMA)
                    self._read.execute(
                        "INSERT OR IGNORE INTO meta(k, v) VALUES ('schema', ?)",
                        (str(SCHEMA_VERSION),),
                    )
                    self._read.commit()
                row = self._read.execute("SELECT v FROM meta WHERE k = 'schema'").fetchone()
            except sqlite3.DatabaseError as exc:
                self._read.close()
                if "no such table" in str(exc):
                    raise LedgerCorrupt(
                        f"{self.path} is not an Interlock ledger (no schema): it was replaced"
                    ) from exc
                raise LedgerUnavailable(f"cannot read ledger {self.path}: {exc}") from exc
        if not upgrade and (row is None or row[0] != str(SCHEMA_VERSION)):
            self._read.close()
            raise LedgerUnavailable(
                f"ledger {self.path} has schema {row[0] if row else None}, this version uses"
                f" {SCHEMA_VERSION}: run `interlock ledger rebuild-state` to rebuild its state"
                " from the log"
            )
        self._tile_cache: OrderedDict[tuple[int, int], list[bytes]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._init_group_commit()

    # -- connections ---------------------------------------------------------------------------

    def _connect(self, *, create: bool = False) -> sqlite3.Connection:
        """A connection; ``mode=rw`` unless creating, so opening never makes a new file."""
        uri = f"file:{quote(str(self.path.absolute()))}?mode={'rwc' if create else 'rw'}"
        try:
            conn = sqlite3.connect(
                uri,
                uri=True,
                timeout=self._busy_timeout_ms / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            sync = "FULL" if self.durability is Durability.FULL else "NORMAL"
            conn.execute(f"PRAGMA synchronous={sync}")
            conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"cannot open ledger {self.path}: {exc}") from exc
        return conn

    def close(self) -> None:
        """Refuse new appends, let every queued one commit (up to 10 s), then stop the
        sequencer and close connections (a worker's link to another process's sequencer
        too)."""
        remote = self._remote
        if remote is not None:
            remote.close()
        self._stop_writer(10.0)
        if self._wlock.acquire(timeout=10):
            try:
                if self._wconn is not None:
                    self._wconn.close()
                    self._wconn = None
            finally:
                self._wlock.release()
        with self._read_lock:
            self._read.close()

    # -- appending -----------------------------------------------------------------------------

    def append(self, items: Sequence[Append], *, timeout: float = 5.0) -> list[AppendResult]:
        """Append records durably; return their indices once committed.

        Raises:
            LedgerUnavailable: the commit failed, or did not happen within ``timeout`` seconds
                (then the records were withdrawn unless they were already being written).
            LedgerCorrupt: the stored tree does not match the entries (the ledger then refuses
                further appends).
        """
        if self.signer is None:
            raise LedgerUnavailable("ledger opened without a log key: cannot append")
        if not items:
            return []
        for it in items:
            if len(it.record) > MAX_RECORD_BYTES:
                raise LedgerUnavailable(
                    f"record exceeds {MAX_RECORD_BYTES} bytes (64 KiB - 1)", size=len(it.record)
                )
        pending = _Pending(items, time.monotonic() + timeout)
        self._submit(pending, timeout)
        if pending.error is not None:
            if isinstance(pending.error, LedgerError):
                raise pending.error
            raise LedgerUnavailable(f"ledger append failed: {pending.error}") from pending.error
        if len(pending.results) != len(items):  # never an answer for records not written
            raise LedgerUnavailable("ledger append not confirmed for every record")
        return pending.results

    def checkpoint(self) -> StoredCheckpoint | None:
        """Force a signed checkpoint of everything committed so far; return the latest one.

        Raises:
            LedgerUnavailable: the ledger cannot commit.
        """
        pending = _Pending((), time.monotonic() + 30.0)
        try:
            self._submit(pending, 30.0)
        except LedgerError as exc:
            raise LedgerUnavailable(f"checkpoint not written: {exc.message}") from exc
        if pending.error is not None:
            raise LedgerUnavailable(f"checkpoint failed: {pending.error}") from pending.error
        return self.latest_checkpoint()

    # -- reading -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        with self._read_lock:
            try:
                yield self._read
            except sqlite3.Error as exc:
                raise LedgerUnavailable(f"ledger read failed: {exc}") from exc

    def size(self) -> int:
        """Number of committed entries."""
        with self._reader() as c:
            return int(c.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM entries").fetchone()[0])

    def entry(self, index: int) -> bytes:
        """The record bytes at ``index``.

        Raises:
            LedgerError: if there is no such entry.
        """
        with self._reader() as c:
            row = c.execute("SELECT data FROM entries WHERE idx = ?", (index,)).fetchone()
        if row is None:
            raise LedgerError(f"no entry at index {index}", index=index)
        return _as_bytes(row[0])

    def leaf_hash_at(self, index: int) -> bytes:
        with self._reader() as c:
            row = c.execute("SELECT leaf_hash FROM entries WHERE idx = ?", (index,)).fetchone()
        if row is None:
            raise LedgerError(f"no entry at index {index}", index=index)
        return bytes(row[0])

    def iter_entries(
        self, start: int = 0, end: int | None = None
    ) -> Iterator[tuple[int, bytes, bytes]]:
        """Yield ``(index, stored leaf hash, data)`` in index order, without holding the
        read lock between chunks."""
        for chunk in self.iter_entry_chunks(start, end):
            yield from chunk

    def iter_entry_chunks(
        self, start: int = 0, end: int | None = None, chunk: int = 4096
    ) -> Iterator[list[tuple[int, bytes, bytes]]]:
        """Like :meth:`iter_entries`, a list of up to ``chunk`` rows at a time (for verifiers
        that loop faster over lists), without holding the read lock between chunks."""

        def read(lo: int, hi: int) -> list[Any]:
            with self._reader() as c:
                return c.execute(_SELECT_ENTRIES, (lo, hi)).fetchall()

        return _entry_chunks(read, start, end, chunk)

    def checkpoints(self) -> list[StoredCheckpoint]:
        with self._reader() as c:
            rows = c.execute("SELECT size, root, note, created FROM checkpoints ORDER BY size")
            return [
                StoredCheckpoint(size=int(s), root=bytes(r), note=str(n), created=str(t))
                for s, r, n, t in rows.fetchall()
            ]

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        with self._reader() as c:
            row = c.execute(
                "SELECT size, root, note, created FROM checkpoints ORDER BY size DESC LIMIT 1"
            ).fetchone()
        if row is None:
            return None
        return StoredCheckpoint(size=int(row[0]), root=bytes(row[1]), note=row[2], created=row[3])

    def blob(self, digest: str) -> bytes | None:
        with self._reader() as c:
            row = c.execute("SELECT data FROM blobs WHERE digest = ?", (digest,)).fetchone()
        return None if row is None else bytes(row[0])

    # -- governance state: the projection of the log (interlock.ledger.projection) ----------

    # -- tree reads (proofs, tiles) ------------------------------------------------------------

    # -- self check ------------------------------------------------------------------------------
