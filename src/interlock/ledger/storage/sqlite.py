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
transaction with its leaf hash), *integration* (persisted 256-wide tiles; the right edge of
the tree in memory) and *publishing* (signed C2SP checkpoints, at least every second while
entries arrive or every 1,000 entries).

Group commit, leader/follower: a caller that finds no commit in progress becomes the *leader*
and, on its own thread, commits everything queued — its records and those of callers that
arrived meanwhile — in one transaction: one fsync for all of them with ``full`` durability.
Callers arriving during a commit queue up; when the commit returns the leader wakes them with
their results and promotes the first newly queued caller to lead the next batch (a new leader
waits a fraction of a commit for the callers just answered to queue again, so that concurrent
callers share commits instead of alternating with a lone one). Nobody is answered before
COMMIT returned. A caller whose deadline passes withdraws its records while the
leader has not started writing them (still queued, or taken by a leader still waiting for the
SQLite write lock): those are never committed. Once written they may still commit: a committed
record whose caller was told "deny" is harmless, the reverse (an action without a record)
cannot happen (DESIGN I1). A small daemon timer commits an empty batch through the same path
when committed entries have gone a second without a checkpoint.

The right edge of the tree (the frontier) lives in memory only; on first use, or after another
process appended, the writer derives it from the tree itself: the roots of the perfect subtrees
of the size's binary decomposition, read from persisted tiles and the partial tile's entries.

Triggers abort UPDATE and DELETE on entries, tiles and checkpoints. That is defence in depth
against accidents; verification (``interlock.ledger.verify``) is the real guard.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from interlock.core.model import MAX_RECORD_BYTES
from interlock.errors import (
    LedgerCorrupt,
    LedgerError,
    LedgerUnavailable,
    UsageError,
    VerificationError,
)
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
CREATE TABLE IF NOT EXISTS executions (
    id TEXT PRIMARY KEY,
    idx INTEGER NOT NULL,
    leaf_hash BLOB NOT NULL,
    effect TEXT NOT NULL,
    status TEXT NOT NULL,
    parent TEXT,
    depth INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS executions_parent ON executions(parent);
CREATE INDEX IF NOT EXISTS executions_running ON executions(status) WHERE status = 'running';
CREATE TABLE IF NOT EXISTS revocations (
    seq INTEGER PRIMARY KEY,
    revocation_id TEXT NOT NULL UNIQUE,
    idx INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS quarantines (
    principal TEXT PRIMARY KEY,
    active INTEGER NOT NULL,
    idx INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS restrictions (
    principal TEXT NOT NULL,
    boundary TEXT NOT NULL,
    active INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    PRIMARY KEY (principal, boundary)
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
    #: ``(execution id, new status)`` pairs: a running, ended or terminated execution changes
    #: status in the same transaction as the record that says so (its decision row, index and
    #: leaf hash stay those of the decision)
    status: tuple[tuple[str, str], ...] = ()
    #: ``(principal, quarantined)`` pairs: a quarantine or release, in the same transaction as
    #: its governance record
    quarantine: tuple[tuple[str, bool], ...] = ()
    #: the kill switch's new state, in the same transaction as its governance record
    kill_switch: bool | None = None
    #: ``(principal, boundary, restricted)``: a boundary restriction or its release, in the
    #: same transaction as its governance record
    restrict: tuple[tuple[str, str, bool], ...] = ()


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
    """One caller's records on their way into a commit.

    ``state``: ``queued`` (withdrawable) -> ``taken`` (a leader holds it but waits for the write
    lock: still withdrawable) -> ``writing`` (in the transaction) -> ``done``; a withdrawn one
    becomes ``cancelled``. ``wake`` is created locked and released at most once: when the
    records are done, or when the waiter is promoted to lead (``lead``)."""

    __slots__ = ("error", "items", "lead", "results", "state", "tid", "wake")

    def __init__(self, items: Sequence[Append]) -> None:
        self.items = items
        self.wake = threading.Lock()
        self.wake.acquire()
        self.results: list[AppendResult] = []
        self.error: BaseException | None = None
        self.state = "queued"
        self.lead = False
        self.tid = threading.get_ident()


class _LockBusy(LedgerUnavailable):
    """The write lock stayed with another connection past the allowed wait; nothing was
    written."""


_DEADLINE_MESSAGE = "ledger append not durable within the deadline"


def _as_bytes(value: object) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode()


def _now_text() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def tile_levels(base: bytes) -> list[bytes]:
    """The nine levels of a tile (base hashes up to its root, RFC 6962 node hashing), each as
    concatenated 32-byte hashes; a partial tile gives the complete nodes it has."""
    levels = [base]
    sha = hashlib.sha256
    for _ in range(8):
        prev = levels[-1]
        out = bytearray()
        for i in range(0, len(prev) - 63, 64):
            out += sha(b"\x01" + prev[i : i + 64]).digest()
        levels.append(bytes(out))
    return levels


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
        self._tile_cache: OrderedDict[tuple[int, int], list[bytes]] = OrderedDict()
        self._cache_lock = threading.Lock()
        # group commit: ``_mu`` guards the queue, leadership, the pendings' states and flags
        self._mu = threading.Lock()
        self._drained = threading.Condition(self._mu)  # close() waits on it
        self._arrivals = threading.Condition(self._mu)  # a leader gathering waits on it
        self._released: set[int] = set()  # threads answered by the last commit, not back yet
        self._released_at = 0.0
        self._gather_s = 0.0
        self._queue: list[_Pending] = []
        self._leading = False
        self._started = False
        self._closed = False
        self._failed: BaseException | None = None
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None
        # the write connection and the state only its holder changes, under ``_wlock``
        self._wlock = threading.Lock()
        self._wconn: sqlite3.Connection | None = None
        self._frontier: merkle.Frontier | None = None
        self._size = 0  # committed size as of this object's last commit
        self._last_cp_size = -1
        self._last_cp_time = 0.0

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
        """Refuse new appends, let every queued one commit (up to 10 s), then stop the
        checkpoint timer and close connections."""
        with self._drained:
            self._closed = True
            end = time.monotonic() + 10
            while self._leading or self._queue:
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._drained.wait(left)
        self._stop.set()
        timer = self._timer
        if timer is not None and timer is not threading.current_thread():
            timer.join(timeout=10)
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
        pending = _Pending(items)
        self._submit(pending, timeout)
        if pending.error is not None:
            if isinstance(pending.error, LedgerError):
                raise pending.error
            raise LedgerUnavailable(f"ledger append failed: {pending.error}") from pending.error
        return pending.results

    def checkpoint(self) -> StoredCheckpoint | None:
        """Force a signed checkpoint of everything committed so far; return the latest one.

        Raises:
            LedgerUnavailable: the ledger cannot commit.
        """
        pending = _Pending(())
        try:
            self._submit(pending, 30.0)
        except LedgerError as exc:
            raise LedgerUnavailable(f"checkpoint not written: {exc.message}") from exc
        if pending.error is not None:
            raise LedgerUnavailable(f"checkpoint failed: {pending.error}") from pending.error
        return self.latest_checkpoint()

    def _submit(self, p: _Pending, timeout: float) -> None:
        """Queue ``p`` and return once it is done (its ``results`` or ``error`` set), leading
        the commit if no one else is.

        Raises:
            LedgerUnavailable: the ledger is closed or failed, or ``timeout`` passed first.
        """
        deadline = time.monotonic() + timeout
        with self._mu:
            if self._closed:
                raise LedgerUnavailable("ledger is closed")
            if self._failed is not None:
                raise LedgerUnavailable(f"ledger writer failed: {self._failed}")
            if not self._started:
                self._start_locked()
            self._queue.append(p)
            released = self._released
            if released:
                released.discard(p.tid)
                if not released:
                    self._arrivals.notify()
            if self._leading:
                batch = None
            else:
                self._leading = True
                batch = self._gather_locked(deadline)
        if batch is None:
            if not self._follow(p, deadline, timeout):
                return
            with self._mu:
                batch = self._gather_locked(deadline)
        self._lead(p, batch, deadline)

    def _start_locked(self) -> None:
        self._wconn = self._connect()
        # the leader bounds its wait for the write lock itself (see _begin)
        self._wconn.execute("PRAGMA busy_timeout=0")
        self._started = True
        if self.signer is not None:
            self._timer = threading.Thread(
                target=self._run_timer, name="interlock-ledger-checkpoints", daemon=True
            )
            self._timer.start()

    def _gather_locked(self, deadline: float) -> list[_Pending]:
        """Take the queue as the next batch. Callers the last commit answered usually append
        again at once: wait briefly (a fraction of a commit) for those to queue, so that
        concurrent callers share commits instead of alternating with a lone leader."""
        released = self._released
        if released:
            # stale once a fraction of a commit has passed since they were answered
            end = min(self._released_at + self._gather_s, deadline)
            while released:
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._arrivals.wait(left)
            released.clear()
        batch = self._queue
        self._queue = []
        for q in batch:
            q.state = "taken"
        return batch

    def _follow(self, p: _Pending, deadline: float, timeout: float) -> bool:
        """Wait until ``p`` is done (``False``) or its waiter is promoted to lead (``True``).

        Raises:
            LedgerUnavailable: ``deadline`` passed first; ``p`` was withdrawn unless a leader
                was already writing it.
        """
        woke = p.wake.acquire(timeout=max(0.0, deadline - time.monotonic()))
        if woke and p.state == "done":
            return False
        if woke and time.monotonic() < deadline:
            return True  # promoted, with time left to lead
        with self._mu:
            if p.state == "queued":  # still waiting in the queue (promoted or not)
                self._queue.remove(p)
                p.state = "cancelled"
                if p.lead:
                    self._handoff_locked()
            elif p.state == "taken":  # a leader took it but is still waiting for the lock
                p.state = "cancelled"
            if p.state != "done":
                raise LedgerUnavailable(_DEADLINE_MESSAGE, timeout_s=timeout)
        return False

    def _handoff_locked(self) -> None:
        """Promote the first queued waiter to lead the next batch, or give up leadership."""
        if self._queue:
            nxt = self._queue[0]
            nxt.lead = True
            nxt.wake.release()
            return
        self._leading = False
        if self._closed:
            self._drained.notify_all()

    def _lead(self, own: _Pending, batch: list[_Pending], deadline: float) -> None:
        """Commit ``batch`` (``own`` and whatever else was queued, all ``taken``) in one
        transaction on this thread, hand each caller its outcome, then pass leadership on."""
        started = time.monotonic()
        busy_until = started + self._busy_timeout_ms / 1000
        results: list[list[AppendResult]] | None = None
        error: BaseException | None = None
        requeue = False
        try:
            with self._wlock:
                conn = self._wconn
                if conn is None:
                    raise LedgerUnavailable("ledger is closed")
                self._begin(conn, min(deadline, busy_until))
                if len(batch) > 1:
                    with self._mu:
                        # callers that gave up while we waited for the lock are not written
                        batch = [q for q in batch if q.state == "taken"]
                        for q in batch:
                            q.state = "writing"
                results = self._commit(conn, batch)
            self._released_at = time.monotonic()
            self._gather_s = min(0.5 * (self._released_at - started), 0.002)
        except _LockBusy as exc:
            error = exc
            # only the leader's own deadline ran out: the others keep theirs and stay queued
            requeue = deadline < busy_until
        except BaseException as exc:  # noqa: BLE001 - every caller in the batch must learn of it
            error = exc
        with self._mu:
            if error is None and results is not None:
                released = self._released
                for q, res in zip(batch, results, strict=True):
                    q.results = res
                    q.state = "done"
                    if q is not own:
                        q.wake.release()
                        if q.items:  # not the timer or checkpoint(): likely to append again
                            released.add(q.tid)
            else:
                if isinstance(error, LedgerCorrupt):
                    self._failed = error
                back: list[_Pending] = []
                for q in batch:
                    if q.state == "cancelled":
                        continue
                    if requeue and q is not own:
                        q.state = "queued"
                        back.append(q)
                        continue
                    q.error = LedgerUnavailable(_DEADLINE_MESSAGE) if requeue else error
                    q.state = "done"
                    if q is not own:
                        q.wake.release()
                if back:
                    self._queue[:0] = back
            self._handoff_locked()
        if error is not None and not isinstance(error, Exception):
            raise error

    def _begin(self, conn: sqlite3.Connection, lock_until: float) -> None:
        """``BEGIN IMMEDIATE``, retrying while another connection holds the write lock, until
        ``lock_until`` (monotonic).

        Raises:
            _LockBusy: still locked at ``lock_until``; LedgerUnavailable: any other failure.
        """
        delay = 0.0001
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.Error as exc:
                message = f"cannot lock ledger for writing: {exc}"
                if getattr(exc, "sqlite_errorcode", 0) & 0xFF != sqlite3.SQLITE_BUSY:
                    raise LedgerUnavailable(message) from exc
                left = lock_until - time.monotonic()
                if left <= 0:
                    raise _LockBusy(message) from exc
                time.sleep(min(delay, left))
                delay = min(delay * 2, 0.005)

    def _run_timer(self) -> None:
        """Publish a checkpoint for committed entries that went a second without one."""
        while not self._stop.is_set():
            wait = CHECKPOINT_EVERY_SECONDS
            if self._failed is None and self._size > max(self._last_cp_size, 0):
                wait = self._last_cp_time + CHECKPOINT_EVERY_SECONDS - time.monotonic()
                if wait <= 0:
                    pending = _Pending(())
                    with contextlib.suppress(LedgerError):
                        self._submit(pending, 30.0)
                        if pending.error is None:
                            continue
                    wait = CHECKPOINT_EVERY_SECONDS  # closed, failed or locked: retry later
            self._stop.wait(wait)

    def _commit(
        self, conn: sqlite3.Connection, batch: Sequence[_Pending]
    ) -> list[list[AppendResult]]:
        """Write ``batch`` in the transaction ``_begin`` opened, sign a checkpoint if one is
        due, COMMIT. Caller holds ``_wlock``."""
        try:
            size = int(conn.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM entries").fetchone()[0])
            if size < self._size:
                raise LedgerCorrupt(
                    "entries disappeared from the log", entries=size, had=self._size
                )
            frontier = self._frontier
            if frontier is None or frontier.size != size:
                # first use, or another connection appended. Nothing is written yet in this
                # transaction, so what the write connection reads is committed state.
                try:
                    frontier = self._frontier_of(size, conn)
                except (LedgerError, UsageError) as exc:
                    raise LedgerCorrupt(
                        f"stored tree does not cover the entries: {exc.message}", entries=size
                    ) from exc
                cp = conn.execute("SELECT MAX(size) FROM checkpoints").fetchone()
                self._last_cp_size = int(cp[0]) if cp[0] is not None else -1
                if self._last_cp_size > size:
                    raise LedgerCorrupt(
                        "the log is shorter than its latest checkpoint",
                        entries=size,
                        checkpoint=self._last_cp_size,
                    )
            self._frontier = None  # until COMMIT returns: ``frontier`` is updated in place
            start = size
            out: list[list[AppendResult]] = []
            rows: list[tuple[int, bytes, bytes]] = []
            blobs: list[tuple[str, bytes]] = []
            execs: list[tuple[str, int, bytes, str, str, str | None, int]] = []
            metas: list[tuple[str, str]] = []
            revs: list[tuple[str, int]] = []
            statuses: list[tuple[str, str]] = []
            quarantines: list[tuple[str, int, int]] = []
            restricts: list[tuple[str, str, int, int]] = []
            kills: list[str] = []
            trust_events = 0
            force = False
            leaf_hash = merkle.leaf_hash
            grow = frontier.append
            for p in batch:
                if not p.items:
                    force = True  # checkpoint() or the timer
                res = []
                for it in p.items:
                    lh = leaf_hash(it.record)
                    rows.append((size, lh, it.record))
                    grow(lh)
                    res.append(AppendResult(index=size, leaf_hash=lh))
                    if it.blobs:
                        blobs.extend(it.blobs.items())
                    e = it.execution
                    if e is not None:
                        execs.append((e.id, size, lh, e.effect, e.status, e.parent, e.depth))
                    if it.meta:
                        metas.extend(it.meta.items())
                    for rid in it.revocations:
                        revs.append((rid, size))
                    statuses.extend((st, eid) for eid, st in it.status)
                    if it.quarantine or it.kill_switch is not None or it.restrict:
                        # one trust event per record: replay counts the same records
                        trust_events += 1
                        quarantines.extend((pr, int(on), size) for pr, on in it.quarantine)
                        restricts.extend((pr, b, int(on), size) for pr, b, on in it.restrict)
                        if it.kill_switch is not None:
                            kills.append("1" if it.kill_switch else "0")
                    size += 1
                out.append(res)
            if rows:
                conn.executemany("INSERT INTO entries(idx, leaf_hash, data) VALUES (?, ?, ?)", rows)
                if blobs:
                    conn.executemany(
                        "INSERT OR IGNORE INTO blobs(digest, data) VALUES (?, ?)", blobs
                    )
                if execs:
                    conn.executemany(
                        "INSERT OR REPLACE INTO executions"
                        "(id, idx, leaf_hash, effect, status, parent, depth)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)",
                        execs,
                    )
                if metas:
                    conn.executemany("INSERT OR REPLACE INTO meta(k, v) VALUES (?, ?)", metas)
                if statuses:
                    conn.executemany("UPDATE executions SET status = ? WHERE id = ?", statuses)
                if revs:
                    conn.executemany(
                        "INSERT OR IGNORE INTO revocations(seq, revocation_id, idx) VALUES ("
                        "(SELECT COALESCE(MAX(seq), 0) + 1 FROM revocations), ?, ?)",
                        revs,
                    )
                if quarantines:
                    conn.executemany(
                        "INSERT OR REPLACE INTO quarantines(principal, active, idx)"
                        " VALUES (?, ?, ?)",
                        quarantines,
                    )
                if restricts:
                    conn.executemany(
                        "INSERT OR REPLACE INTO restrictions(principal, boundary, active, idx)"
                        " VALUES (?, ?, ?, ?)",
                        restricts,
                    )
                if kills:
                    conn.execute(
                        "INSERT OR REPLACE INTO meta(k, v) VALUES ('kill_switch', ?)", (kills[-1],)
                    )
                if trust_events:
                    conn.execute(
                        "INSERT INTO meta(k, v) VALUES ('trust_events', ?) ON CONFLICT(k)"
                        " DO UPDATE SET v = CAST(CAST(v AS INTEGER) + ? AS TEXT)",
                        (str(trust_events), trust_events),
                    )
                if start // TILE != size // TILE:
                    self._integrate(conn, start, size, {r[0]: r[1] for r in rows})
            now = time.monotonic()
            last = self._last_cp_size
            due = (
                size > last
                and size > 0
                and self.signer is not None
                and (
                    force
                    or size - max(last, 0) >= CHECKPOINT_EVERY_ENTRIES
                    or now - self._last_cp_time >= CHECKPOINT_EVERY_SECONDS
                )
            )
            if due and self.signer is not None:
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
            self._frontier = None  # derive it from the tree next time
            raise
        self._frontier = frontier
        self._size = size
        if due:
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
                levels = tile_levels(b"".join(level_hashes))
                conn.execute(
                    "INSERT INTO tiles(level, n, hashes, nodes, root) VALUES (?, ?, ?, ?, ?)",
                    (level, n, levels[0], b"".join(levels[1:8]), levels[8]),
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
        for chunk in self.iter_entry_chunks(start, end):
            yield from chunk

    def iter_entry_chunks(
        self, start: int = 0, end: int | None = None, chunk: int = 4096
    ) -> Iterator[list[tuple[int, bytes, bytes]]]:
        """Like :meth:`iter_entries`, a list of up to ``chunk`` rows at a time (for verifiers
        that loop faster over lists)."""
        pos = start
        while True:
            hi = pos + chunk if end is None else min(end, pos + chunk)
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
            if all(type(r[1]) is bytes and type(r[2]) is bytes for r in rows):
                yield rows
            else:
                # an edited database may hold TEXT where BLOBs belong: read it as its bytes
                yield [(int(i), _as_bytes(lh), _as_bytes(d)) for i, lh, d in rows]
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

    def blob(self, digest: str) -> bytes | None:
        with self._reader() as c:
            row = c.execute("SELECT data FROM blobs WHERE digest = ?", (digest,)).fetchone()
        return None if row is None else bytes(row[0])

    def running_executions(self) -> list[tuple[str, int]]:
        """``(execution id, index of its decision)`` of every execution whose status is
        ``running``, oldest first."""
        with self._reader() as c:
            rows = c.execute(
                "SELECT id, idx FROM executions WHERE status = 'running' ORDER BY idx"
            ).fetchall()
        return [(str(r[0]), int(r[1])) for r in rows]

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

    def children(self, exec_id: str) -> list[ExecutionRow]:
        """Executions that name ``exec_id`` as their parent."""
        with self._reader() as c:
            rows = c.execute(
                "SELECT id, idx, leaf_hash, effect, status, parent, depth FROM executions"
                " WHERE parent = ?",
                (exec_id,),
            ).fetchall()
        return [
            ExecutionRow(
                id=r[0],
                idx=int(r[1]),
                leaf_hash=bytes(r[2]),
                effect=r[3],
                status=r[4],
                parent=r[5],
                depth=int(r[6]),
            )
            for r in rows
        ]

    def revocations(self) -> tuple[int, frozenset[str]]:
        """``(trust version, revoked ids)``: the version counts revocation records."""
        with self._reader() as c:
            rows = c.execute("SELECT seq, revocation_id FROM revocations ORDER BY seq").fetchall()
        return (len(rows), frozenset(str(r[1]) for r in rows))

    def trust_state(
        self,
    ) -> tuple[int, frozenset[str], frozenset[str], bool, frozenset[tuple[str, str]]]:
        """``(trust version, revoked ids, quarantined principals, kill switch on, active
        boundary restrictions as (principal, boundary))``, read in one transaction. The version
        counts revocation records plus quarantine, kill-switch and restriction records, so any
        trust change gives a new snapshot."""
        with self._reader() as c:
            c.execute("BEGIN")
            try:
                revs = c.execute("SELECT revocation_id FROM revocations ORDER BY seq").fetchall()
                quar = c.execute("SELECT principal FROM quarantines WHERE active = 1").fetchall()
                restr = c.execute(
                    "SELECT principal, boundary FROM restrictions WHERE active = 1"
                ).fetchall()
                meta = dict(
                    c.execute(
                        "SELECT k, v FROM meta WHERE k IN ('trust_events', 'kill_switch')"
                    ).fetchall()
                )
            finally:
                c.execute("COMMIT")
        version = len(revs) + int(meta.get("trust_events") or 0)
        return (
            version,
            frozenset(str(r[0]) for r in revs),
            frozenset(str(r[0]) for r in quar),
            meta.get("kill_switch") == "1",
            frozenset((str(p), str(b)) for p, b in restr),
        )

    def restrictions(self) -> frozenset[tuple[str, str]]:
        """Active boundary restrictions: ``(principal, boundary name)`` pairs."""
        with self._reader() as c:
            rows = c.execute(
                "SELECT principal, boundary FROM restrictions WHERE active = 1"
            ).fetchall()
        return frozenset((str(p), str(b)) for p, b in rows)

    def quarantines(self) -> list[tuple[str, bool, int]]:
        """Every principal ever quarantined: ``(principal, active, ledger index of the last
        change)``, by principal."""
        with self._reader() as c:
            rows = c.execute(
                "SELECT principal, active, idx FROM quarantines ORDER BY principal"
            ).fetchall()
        return [(str(p), bool(a), int(i)) for p, a, i in rows]

    def get_meta(self, key: str) -> str | None:
        with self._reader() as c:
            row = c.execute("SELECT v FROM meta WHERE k = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._reader() as c:
            c.execute("INSERT OR REPLACE INTO meta(k, v) VALUES (?, ?)", (key, value))

    # -- tree reads (proofs, tiles) ------------------------------------------------------------

    def _tile_level_hashes(self, c: sqlite3.Connection, level: int, n: int) -> bytes:
        """Hashes (concatenated) at Merkle level 8*level in the *partial* tile (level, n),
        derived: for level 0 only the contiguous run of entries from the tile's start."""
        if level == 0:
            lo = n * TILE
            out: list[bytes] = []
            for idx, lh in c.execute(
                "SELECT idx, leaf_hash FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx",
                (lo, lo + TILE),
            ).fetchall():
                if idx != lo + len(out):
                    break
                out.append(bytes(lh))
            return b"".join(out)
        rows = c.execute(
            "SELECT root FROM tiles WHERE level = ? AND n >= ? AND n < ? ORDER BY n",
            (level - 1, n * TILE, (n + 1) * TILE),
        ).fetchall()
        return b"".join(bytes(r[0]) for r in rows)

    def _read_tile(self, c: sqlite3.Connection, level: int, n: int) -> list[bytes]:
        row = c.execute(
            "SELECT hashes, nodes, root FROM tiles WHERE level = ? AND n = ?", (level, n)
        ).fetchone()
        if row is not None:
            # a full tile carries its eight internal levels: a proof costs no hashing
            hashes, nodes, root = bytes(row[0]), bytes(row[1]), bytes(row[2])
            if len(hashes) != TILE * 32 or len(nodes) != (TILE - 2) * 32 or len(root) != 32:
                raise LedgerCorrupt("persisted tile has the wrong size", level=level, n=n)
            levels = [hashes]
            pos = 0
            for r in range(1, 8):
                width = (TILE >> r) * 32
                levels.append(nodes[pos : pos + width])
                pos += width
            levels.append(root)
            return levels
        return tile_levels(self._tile_level_hashes(c, level, n))

    def _expanded_tile(
        self, level: int, n: int, need: int = 0, conn: sqlite3.Connection | None = None
    ) -> list[bytes]:
        """All nine levels of tile (level, n), each as concatenated 32-byte hashes. A cached
        partial tile is reused while it holds the ``need``-th base hash: complete subtrees
        never change as the log grows.

        ``conn`` (the write connection, holder of ``_wlock``) is read instead of the read
        connection; it must not have written anything in its open transaction, so that only
        committed state is read and cached."""
        key = (level, n)
        with self._cache_lock:
            cached = self._tile_cache.get(key)
            if cached is not None and len(cached[0]) > need * 32:
                self._tile_cache.move_to_end(key)
                return cached
        if conn is None:
            with self._reader() as c:
                levels = self._read_tile(c, level, n)
        else:
            levels = self._read_tile(conn, level, n)
        with self._cache_lock:
            cached = self._tile_cache.get(key)
            if cached is None or len(cached[0]) < len(levels[0]):
                self._tile_cache[key] = levels
                if len(self._tile_cache) > 4096:
                    self._tile_cache.popitem(last=False)
        return levels

    def node(self, level: int, index: int) -> bytes:
        """Hash of the complete subtree of ``2**level`` leaves starting at ``index * 2**level``
        (the :data:`interlock.ledger.merkle.NodeReader` contract).

        Raises:
            LedgerError: if that subtree is not complete in the stored log.
        """
        return self._node(level, index, None)

    def _node(self, level: int, index: int, conn: sqlite3.Connection | None) -> bytes:
        tile_level, r = divmod(level, 8)
        first = index << r  # index at Merkle level 8*tile_level
        n, pos = divmod(first, TILE)
        last = pos + (1 << r) - 1  # the last base hash this subtree needs
        row = self._expanded_tile(tile_level, n, last, conn)[r]
        j = (pos >> r) * 32
        if j + 32 > len(row):
            raise LedgerError("requested subtree is not complete", level=level, index=index)
        return row[j : j + 32]

    def _frontier_of(self, size: int, conn: sqlite3.Connection | None = None) -> merkle.Frontier:
        """The right edge of the stored tree of ``size``: one complete subtree per set bit.

        Raises:
            LedgerError: a subtree is not complete; UsageError: a stored hash is malformed.
        """
        hashes = []
        pos, remaining = 0, size
        while remaining:
            level = remaining.bit_length() - 1
            hashes.append(self._node(level, pos >> level, conn))
            pos += 1 << level
            remaining -= 1 << level
        return merkle.Frontier.from_hashes(size, hashes)

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
        checkpoint verifies and matches the stored tree, entries after it hash to their stored
        leaf hashes, and the stored tree (from which the writer derives its right edge) matches
        those entries.

        Raises:
            LedgerCorrupt: on any mismatch.
        """
        # checkpoint first, then size: a checkpoint commits with the entries it covers and the
        # log only grows, so cp.size <= size even while writers append (no false alarm)
        cp = self.latest_checkpoint()
        size = self.size()
        frontier = merkle.Frontier()
        if cp is not None:
            try:
                parsed = open_checkpoint(cp.note, verifier)
            except VerificationError as exc:
                raise LedgerCorrupt(f"latest checkpoint does not verify: {exc.message}") from exc
            if parsed.size != cp.size or parsed.size > size:
                raise LedgerCorrupt("checkpoint size disagrees with the log", checkpoint=cp.size)
            try:
                frontier = self._frontier_of(parsed.size)
            except (LedgerError, UsageError) as exc:
                raise LedgerCorrupt(f"cannot recompute checkpointed root: {exc.message}") from exc
            if frontier.root() != parsed.root_hash:
                raise LedgerCorrupt(
                    "stored tree does not match the latest checkpoint", size=cp.size
                )
        for idx, lh, data in self.iter_entries(frontier.size, size):
            if idx != frontier.size:
                raise LedgerCorrupt("entries are not contiguous", index=frontier.size)
            if merkle.leaf_hash(data) != lh:
                raise LedgerCorrupt("entry does not match its leaf hash", index=idx)
            frontier.append(lh)
        try:
            root = self.root_at(size)
        except LedgerError as exc:
            raise LedgerCorrupt(f"stored tree does not cover the entries: {exc.message}") from exc
        if frontier.size != size or frontier.root() != root:
            raise LedgerCorrupt("stored tree does not match the entries", size=size)
