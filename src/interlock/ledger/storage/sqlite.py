"""The embedded ledger: an RFC 6962 log in SQLite (WAL) with group commit.

    >>> from pathlib import Path
    >>> import tempfile
    >>> from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    >>> from interlock.ledger.note import NoteSigner
    >>> signer = NoteSigner("interlock.local/doc", Ed25519PrivateKey.generate())
    >>> led = SqliteLedger(Path(tempfile.mkdtemp()) / "ledger.db", signer=signer)
    >>> [r.index for r in led.append([Append(record=b'{"a":1}')])]
    [0]
    >>> led.close()

Three concerns kept apart, as in Tessera: *sequencing* (a durable index for each record, in one
transaction with its leaf hash), *integration* (the right edge of the tree, persisted 256-wide
tiles) and *publishing* (signed C2SP checkpoints, at least every second while entries arrive
or every 1,000 entries).

Group commit: callers hand records to one writer thread; it commits everything queued in one
transaction — one fsync for all of them with ``full`` durability — and only then wakes the
callers. A caller that stops waiting (its deadline passed) withdraws its record if the writer
has not taken it yet; if the writer already took it, it may still commit: a committed record
whose caller was told "deny" is harmless, the reverse (an action without a record) cannot
happen (DESIGN I1).

Triggers abort UPDATE and DELETE on entries, tiles and checkpoints. That is defence in depth
against accidents; verification (``interlock.ledger.verify``) is the real guard.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from interlock.core.model import MAX_RECORD_BYTES
from interlock.errors import LedgerCorrupt, LedgerError, LedgerUnavailable, VerificationError
from interlock.ledger import merkle
from interlock.ledger.note import Checkpoint, NoteSigner, NoteVerifier, open_checkpoint

__all__ = [
    "Append",
    "AppendResult",
    "Durability",
    "ExecutionRow",
    "SqliteLedger",
    "StoredCheckpoint",
]

TILE = 256
SCHEMA_VERSION = 1
CHECKPOINT_EVERY_ENTRIES = 1000
CHECKPOINT_EVERY_SECONDS = 1.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    idx INTEGER PRIMARY KEY,
    leaf_hash BLOB NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS tiles (
    level INTEGER NOT NULL,
    n INTEGER NOT NULL,
    hashes BLOB NOT NULL,
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
CREATE TABLE IF NOT EXISTS executions (
    id TEXT PRIMARY KEY,
    idx INTEGER NOT NULL,
    leaf_hash BLOB NOT NULL,
    effect TEXT NOT NULL,
    status TEXT NOT NULL,
    parent TEXT,
    depth INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS revocations (
    seq INTEGER PRIMARY KEY,
    revocation_id TEXT NOT NULL UNIQUE,
    idx INTEGER NOT NULL
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


class Durability(StrEnum):
    """``full``: each commit is fsync'ed before the caller is answered (survives power loss).
    ``process``: committed to the WAL without fsync (survives a process crash only)."""

    FULL = "full"
    PROCESS = "process"


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionRow:
    """Derived lineage state, written in the same transaction as its decision record."""

    id: str
    effect: str
    status: str
    parent: str | None
    depth: int
    idx: int = -1
    leaf_hash: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class Append:
    """One record to append, with what must become durable in the same transaction."""

    record: bytes
    blobs: dict[str, bytes] = field(default_factory=dict)
    execution: ExecutionRow | None = None
    revocations: tuple[str, ...] = ()
    meta: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendResult:
    index: int
    leaf_hash: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredCheckpoint:
    size: int
    root: bytes
    note: str
    created: str


class _Pending:
    __slots__ = ("error", "event", "items", "results", "state")

    def __init__(self, items: Sequence[Append]) -> None:
        self.items = items
        self.event = threading.Event()
        self.results: list[AppendResult] = []
        self.error: BaseException | None = None
        self.state = "queued"  # queued -> taken -> done | cancelled


def _as_bytes(value: object) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode()


def _now_text() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class SqliteLedger:
    """An append-only, verifiable log in one SQLite file.

    Args:
        path: the database file (created if missing).
        signer: signs checkpoints; ``None`` opens the ledger read-only for appends.
        durability: ``full`` (default) or ``process``.
        busy_timeout_ms: how long SQLite waits for another process's write lock.
    """

    def __init__(
        self,
        path: Path,
        *,
        signer: NoteSigner | None = None,
        durability: Durability | str = Durability.FULL,
        busy_timeout_ms: int = 5000,
    ) -> None:
        self.path = Path(path)
        self.signer = signer
        self.durability = Durability(durability)
        self._busy_timeout_ms = busy_timeout_ms
        self._read = self._connect()
        self._read_lock = threading.Lock()
        with self._read_lock:
            self._read.executescript(_SCHEMA)
            self._read.execute(
                "INSERT OR IGNORE INTO meta(k, v) VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
            )
            self._read.commit()
        self._tile_cache: OrderedDict[tuple[int, int], list[list[bytes]]] = OrderedDict()
        self._queue: list[_Pending] = []
        self._cond = threading.Condition()
        self._closed = False
        self._writer: threading.Thread | None = None
        self._wconn: sqlite3.Connection | None = None
        self._frontier: merkle.Frontier | None = None
        self._last_cp_size = -1
        self._last_cp_time = 0.0
        self._failed: BaseException | None = None

    # -- connections ---------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout_ms / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute("PRAGMA journal_mode=WAL")
            sync = "FULL" if self.durability is Durability.FULL else "NORMAL"
            conn.execute(f"PRAGMA synchronous={sync}")
            conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"cannot open ledger {self.path}: {exc}") from exc
        return conn

    def close(self) -> None:
        """Stop the writer (after it drains its queue) and close connections."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._writer is not None:
            self._writer.join(timeout=10)
        with self._read_lock:
            self._read.close()

    # -- appending -----------------------------------------------------------------------------

    def append(self, items: Sequence[Append], *, timeout: float = 5.0) -> list[AppendResult]:
        """Append records durably; return their indices once committed.

        Raises:
            LedgerUnavailable: the commit failed, or did not happen within ``timeout`` seconds
                (then the records were withdrawn if the writer had not taken them yet).
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
        pending = _Pending(items)
        with self._cond:
            if self._closed:
                raise LedgerUnavailable("ledger is closed")
            if self._failed is not None:
                raise LedgerUnavailable(f"ledger writer failed: {self._failed}")
            self._ensure_writer()
            self._queue.append(pending)
            self._cond.notify_all()
        if not pending.event.wait(timeout):
            with self._cond:
                if pending.state == "queued":
                    pending.state = "cancelled"
                    with contextlib.suppress(ValueError):
                        self._queue.remove(pending)
            if not pending.event.is_set():
                raise LedgerUnavailable(
                    "ledger append not durable within the deadline", timeout_s=timeout
                )
        if pending.error is not None:
            if isinstance(pending.error, LedgerError):
                raise pending.error
            raise LedgerUnavailable(f"ledger append failed: {pending.error}") from pending.error
        return pending.results

    def checkpoint(self) -> StoredCheckpoint | None:
        """Force a signed checkpoint of everything committed so far; return the latest one.

        Raises:
            LedgerUnavailable: the writer cannot commit.
        """
        pending = _Pending(())
        with self._cond:
            self._ensure_writer()
            self._queue.append(pending)
            self._cond.notify_all()
        if not pending.event.wait(30):
            raise LedgerUnavailable("checkpoint not written within 30 s")
        if pending.error is not None:
            raise LedgerUnavailable(f"checkpoint failed: {pending.error}") from pending.error
        return self.latest_checkpoint()

    def _ensure_writer(self) -> None:
        if self._writer is None:
            self._wconn = self._connect()
            self._writer = threading.Thread(
                target=self._run_writer, name="interlock-ledger-writer", daemon=True
            )
            self._writer.start()

    def _run_writer(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    # wake at least every second to publish a checkpoint for idle tails
                    self._cond.wait(timeout=CHECKPOINT_EVERY_SECONDS)
                    if (
                        not self._queue
                        and self._frontier is not None
                        and (self._frontier.size > self._last_cp_size)
                    ):
                        break
                if self._closed and not self._queue:
                    batch: list[_Pending] = []
                else:
                    batch = [p for p in self._queue if p.state == "queued"]
                    self._queue.clear()
                    for p in batch:
                        p.state = "taken"
            force_cp = any(not p.items for p in batch) if batch else True
            try:
                results = self._commit(batch, force_checkpoint=force_cp)
            except BaseException as exc:  # noqa: BLE001 - every caller must learn of it
                for p in batch:
                    p.error = exc
                    p.state = "done"
                    p.event.set()
                if isinstance(exc, LedgerCorrupt):
                    with self._cond:
                        self._failed = exc
            else:
                for p, res in zip(batch, results, strict=True):
                    p.results = res
                    p.state = "done"
                    p.event.set()
            with self._cond:
                if self._closed and not self._queue:
                    if self._wconn is not None:
                        self._wconn.close()
                    return

    def _load_frontier(self, conn: sqlite3.Connection) -> merkle.Frontier:
        row = conn.execute("SELECT v FROM meta WHERE k = 'frontier'").fetchone()
        if row is None:
            return merkle.Frontier()
        data = json.loads(row[0])
        return merkle.Frontier.from_hashes(
            int(data["size"]), [bytes.fromhex(h) for h in data["hashes"]]
        )

    def _commit(
        self, batch: Sequence[_Pending], *, force_checkpoint: bool
    ) -> list[list[AppendResult]]:
        conn = self._wconn
        if conn is None:
            raise LedgerUnavailable("writer connection missing")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"cannot lock ledger for writing: {exc}") from exc
        try:
            count_row = conn.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM entries").fetchone()
            size = int(count_row[0])
            frontier = self._frontier
            if frontier is None or frontier.size != size:
                # another process appended (or first use): reload the persisted right edge
                frontier = self._load_frontier(conn)
                if frontier.size != size:
                    raise LedgerCorrupt(
                        "persisted tree edge does not match the entry count",
                        frontier_size=frontier.size,
                        entries=size,
                    )
                cp = conn.execute("SELECT MAX(size) FROM checkpoints").fetchone()
                self._last_cp_size = int(cp[0]) if cp[0] is not None else -1
            frontier = frontier.copy()
            start = size
            out: list[list[AppendResult]] = []
            rows = []
            for p in batch:
                res = []
                for it in p.items:
                    lh = merkle.leaf_hash(it.record)
                    rows.append((size, lh, it.record))
                    frontier.append(lh)
                    res.append(AppendResult(index=size, leaf_hash=lh))
                    if it.blobs:
                        conn.executemany(
                            "INSERT OR IGNORE INTO blobs(digest, data) VALUES (?, ?)",
                            list(it.blobs.items()),
                        )
                    if it.execution is not None:
                        e = it.execution
                        conn.execute(
                            "INSERT OR REPLACE INTO executions"
                            "(id, idx, leaf_hash, effect, status, parent, depth)"
                            " VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (e.id, size, lh, e.effect, e.status, e.parent, e.depth),
                        )
                    for mk, mv in it.meta.items():
                        conn.execute("INSERT OR REPLACE INTO meta(k, v) VALUES (?, ?)", (mk, mv))
                    for rid in it.revocations:
                        conn.execute(
                            "INSERT OR IGNORE INTO revocations(seq, revocation_id, idx) VALUES ("
                            "(SELECT COALESCE(MAX(seq), 0) + 1 FROM revocations), ?, ?)",
                            (rid, size),
                        )
                    size += 1
                out.append(res)
            if rows:
                conn.executemany("INSERT INTO entries(idx, leaf_hash, data) VALUES (?, ?, ?)", rows)
                self._integrate(conn, start, size, {r[0]: r[1] for r in rows})
                conn.execute(
                    "INSERT OR REPLACE INTO meta(k, v) VALUES ('frontier', ?)",
                    (
                        json.dumps(
                            {"size": frontier.size, "hashes": [h.hex() for h in frontier.hashes]}
                        ),
                    ),
                )
            now = time.monotonic()
            due = size > self._last_cp_size and (
                force_checkpoint
                or size - max(self._last_cp_size, 0) >= CHECKPOINT_EVERY_ENTRIES
                or now - self._last_cp_time >= CHECKPOINT_EVERY_SECONDS
            )
            if due and size > 0 and self.signer is not None:
                root = frontier.root()
                cpt = Checkpoint(
                    origin=self.signer.name,
                    size=size,
                    root_hash=root,
                    extensions=(f"durability {self.durability.value}",),
                )
                note = self.signer.sign(cpt.body())
                conn.execute(
                    "INSERT INTO checkpoints(size, root, note, created) VALUES (?, ?, ?, ?)",
                    (size, root, note, _now_text()),
                )
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            self._frontier = None  # reload from disk next time
            raise
        self._frontier = frontier
        if due and size > 0:
            self._last_cp_size = size
            self._last_cp_time = now
        return out

    def _integrate(
        self, conn: sqlite3.Connection, old: int, new: int, fresh: dict[int, bytes]
    ) -> None:
        """Persist every tile that became full between sizes ``old`` and ``new``."""
        level = 0
        while True:
            width = TILE ** (level + 1)
            first, last = old // width, new // width
            if first == last:
                return
            for n in range(first, last):
                if level == 0:
                    lo = n * TILE
                    hashes = [fresh.get(i) for i in range(lo, lo + TILE)]
                    if any(h is None for h in hashes):
                        stored = dict(
                            conn.execute(
                                "SELECT idx, leaf_hash FROM entries WHERE idx >= ? AND idx < ?",
                                (lo, lo + TILE),
                            ).fetchall()
                        )
                        hashes = [fresh.get(i) or stored[i] for i in range(lo, lo + TILE)]
                    level_hashes = [bytes(h) for h in hashes if h is not None]
                else:
                    level_hashes = [
                        bytes(r[0])
                        for r in conn.execute(
                            "SELECT root FROM tiles WHERE level = ? AND n >= ? AND n < ?"
                            " ORDER BY n",
                            (level - 1, n * TILE, (n + 1) * TILE),
                        )
                    ]
                if len(level_hashes) != TILE:
                    raise LedgerCorrupt("tile is missing hashes", level=level, n=n)
                conn.execute(
                    "INSERT INTO tiles(level, n, hashes, root) VALUES (?, ?, ?, ?)",
                    (level, n, b"".join(level_hashes), merkle.root_of(level_hashes)),
                )
            level += 1

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
        pos = start
        while True:
            hi = pos + 4096 if end is None else min(end, pos + 4096)
            if hi <= pos:
                return
            with self._reader() as c:
                rows = c.execute(
                    "SELECT idx, leaf_hash, data FROM entries WHERE idx >= ? AND idx < ?"
                    " ORDER BY idx",
                    (pos, hi),
                ).fetchall()
            if not rows:
                return
            for idx, lh, data in rows:
                # an edited database may hold TEXT where BLOBs belong: read it as its bytes
                yield int(idx), _as_bytes(lh), _as_bytes(data)
            pos = int(rows[-1][0]) + 1

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

    def checkpoint_at(self, size: int) -> StoredCheckpoint | None:
        with self._reader() as c:
            row = c.execute(
                "SELECT size, root, note, created FROM checkpoints WHERE size = ?", (size,)
            ).fetchone()
        if row is None:
            return None
        return StoredCheckpoint(size=int(row[0]), root=bytes(row[1]), note=row[2], created=row[3])

    def blob(self, digest: str) -> bytes | None:
        with self._reader() as c:
            row = c.execute("SELECT data FROM blobs WHERE digest = ?", (digest,)).fetchone()
        return None if row is None else bytes(row[0])

    def execution(self, exec_id: str) -> ExecutionRow | None:
        with self._reader() as c:
            row = c.execute(
                "SELECT id, idx, leaf_hash, effect, status, parent, depth FROM executions"
                " WHERE id = ?",
                (exec_id,),
            ).fetchone()
        if row is None:
            return None
        return ExecutionRow(
            id=row[0],
            idx=int(row[1]),
            leaf_hash=bytes(row[2]),
            effect=row[3],
            status=row[4],
            parent=row[5],
            depth=int(row[6]),
        )

    def revocations(self) -> tuple[int, frozenset[str]]:
        """``(trust version, revoked ids)``: the version counts revocation records."""
        with self._reader() as c:
            rows = c.execute("SELECT seq, revocation_id FROM revocations ORDER BY seq").fetchall()
        return (len(rows), frozenset(str(r[1]) for r in rows))

    def get_meta(self, key: str) -> str | None:
        with self._reader() as c:
            row = c.execute("SELECT v FROM meta WHERE k = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._reader() as c:
            c.execute("INSERT OR REPLACE INTO meta(k, v) VALUES (?, ?)", (key, value))

    # -- tree reads (proofs, tiles) ------------------------------------------------------------

    def _tile_level_hashes(self, c: sqlite3.Connection, level: int, n: int) -> list[bytes]:
        """Hashes at Merkle level 8*level in tile (level, n): stored if full, else derived."""
        row = c.execute("SELECT hashes FROM tiles WHERE level = ? AND n = ?", (level, n)).fetchone()
        if row is not None:
            data = bytes(row[0])
            return [data[i : i + 32] for i in range(0, len(data), 32)]
        if level == 0:
            rows = c.execute(
                "SELECT leaf_hash FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx",
                (n * TILE, (n + 1) * TILE),
            ).fetchall()
        else:
            rows = c.execute(
                "SELECT root FROM tiles WHERE level = ? AND n >= ? AND n < ? ORDER BY n",
                (level - 1, n * TILE, (n + 1) * TILE),
            ).fetchall()
        return [bytes(r[0]) for r in rows]

    def _expanded_tile(self, level: int, n: int, need: int = 0) -> list[list[bytes]]:
        """All eight internal levels of tile (level, n). A cached partial tile is reused while it
        holds the ``need``-th base hash: complete subtrees never change as the log grows."""
        key = (level, n)
        cached = self._tile_cache.get(key)
        if cached is not None and len(cached[0]) > need:
            self._tile_cache.move_to_end(key)
            return cached
        with self._reader() as c:
            base = self._tile_level_hashes(c, level, n)
        levels = [base]
        for _ in range(8):
            prev = levels[-1]
            levels.append(
                [merkle.node_hash(prev[i], prev[i + 1]) for i in range(0, len(prev) - 1, 2)]
            )
        self._tile_cache[key] = levels
        if len(self._tile_cache) > 1024:
            self._tile_cache.popitem(last=False)
        return levels

    def node(self, level: int, index: int) -> bytes:
        """Hash of the complete subtree of ``2**level`` leaves starting at ``index * 2**level``
        (the :data:`interlock.ledger.merkle.NodeReader` contract).

        Raises:
            LedgerError: if that subtree is not complete in the stored log.
        """
        tile_level, r = divmod(level, 8)
        first = index << r  # index at Merkle level 8*tile_level
        n, pos = divmod(first, TILE)
        last = pos + (1 << r) - 1  # the last base hash this subtree needs
        levels = self._expanded_tile(tile_level, n, last)
        row = levels[r]
        if (pos >> r) >= len(row):
            raise LedgerError("requested subtree is not complete", level=level, index=index)
        return row[pos >> r]

    def root_at(self, size: int) -> bytes:
        """MTH of the first ``size`` entries."""
        if size == 0:
            return merkle.EMPTY_ROOT
        return merkle.subtree_hash(self.node, 0, size)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """RFC 9162 §2.1.3.1 inclusion proof of ``index`` in the tree of ``size``."""
        if not 0 <= index < size <= self.size():
            raise LedgerError("index/size out of range", index=index, size=size)
        return merkle.inclusion_proof(index, size, self.node)

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        """RFC 9162 §2.1.4.1 consistency proof from ``old`` to ``new``."""
        if not 0 <= old <= new <= self.size():
            raise LedgerError("sizes out of range", old=old, new=new)
        return merkle.consistency_proof(old, new, self.node)

    # -- self check ------------------------------------------------------------------------------

    def self_check(self, verifier: NoteVerifier) -> None:
        """Cheap start-up check that this node may keep allowing (DESIGN I4): the latest signed
        checkpoint verifies and matches the stored tree, the persisted edge matches the entry
        count, and entries after the checkpoint hash to their stored leaf hashes.

        Raises:
            LedgerCorrupt: on any mismatch.
        """
        size = self.size()
        with self._reader() as c:
            frontier = self._load_frontier(c)
        if frontier.size != size:
            raise LedgerCorrupt(
                "persisted tree edge does not match the entry count",
                frontier_size=frontier.size,
                entries=size,
            )
        cp = self.latest_checkpoint()
        if cp is None:
            return
        try:
            parsed = open_checkpoint(cp.note, verifier)
        except VerificationError as exc:
            raise LedgerCorrupt(f"latest checkpoint does not verify: {exc.message}") from exc
        if parsed.size != cp.size or parsed.size > size:
            raise LedgerCorrupt("checkpoint size disagrees with the log", checkpoint=cp.size)
        try:
            root = self.root_at(parsed.size)
        except LedgerError as exc:
            raise LedgerCorrupt(f"cannot recompute checkpointed root: {exc.message}") from exc
        if root != parsed.root_hash:
            raise LedgerCorrupt("stored tree does not match the latest checkpoint", size=cp.size)
        for idx, lh, data in self.iter_entries(parsed.size):
            if merkle.leaf_hash(data) != lh:
                raise LedgerCorrupt("entry does not match its leaf hash", index=idx)
        if frontier.root() != self.root_at(size):
            raise LedgerCorrupt("persisted tree edge does not match the entries")
