"""The SQLite driver's sequencer (DESIGN I1): callers queue their records; one writer thread
per ledger object takes everything queued as one batch, writes it in one transaction with its
tree nodes, state changes and, when due, a signed checkpoint, makes it durable (one fsync for
the batch), and answers every caller in it. Batches grow with load: while one commits, the
next gathers. Under load a caller only queues and waits; a lone caller (nothing queued, no
batch being written) commits its own records on its own thread, which spares it two thread
hand-offs, and whoever arrives meanwhile queues for the sequencer. One batch at a time."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from interlock.errors import (
    LedgerCorrupt,
    LedgerError,
    LedgerUnavailable,
    UsageError,
)
from interlock.ledger import merkle
from interlock.ledger.note import Checkpoint, NoteSigner
from interlock.ledger.projection import NO_CHANGE, Delta
from interlock.ledger.protocols import Append, AppendResult, Durability
from interlock.ledger.storage.sqlite_state import _apply_changes
from interlock.ledger.storage.sqlite_tree import TILE
from interlock.ledger.tiles import tile_levels

if TYPE_CHECKING:
    from interlock.ledger.note import NoteSigner
    from interlock.ledger.storage.sqlite_shared import SequencerLink


_log = logging.getLogger("interlock")

CHECKPOINT_EVERY_ENTRIES = 1000


CHECKPOINT_EVERY_SECONDS = 1.0


class _Pending:
    """One caller's records on their way into a commit.

    ``state``: ``queued`` (withdrawable) -> ``taken`` (in a batch whose transaction waits for
    the write lock: still withdrawable) -> ``writing`` (in the transaction) -> ``done``; a
    withdrawn one becomes ``cancelled``. ``wake`` is created locked and released once, when
    the records are done (a lock: cheaper to wait on than an Event). ``notify``, when set (the
    records of another process, :mod:`~interlock.ledger.storage.sqlite_shared`), is called
    instead of releasing ``wake``: it sends the answer back, without a thread waiting here."""

    __slots__ = ("deadline", "error", "items", "notify", "results", "state", "wake")

    def __init__(
        self,
        items: Sequence[Append],
        deadline: float,
        notify: Callable[[_Pending], None] | None = None,
    ) -> None:
        self.items = items
        self.deadline = deadline
        self.notify = notify
        self.wake = threading.Lock()
        self.wake.acquire()
        self.results: list[AppendResult] = []
        self.error: BaseException | None = None
        self.state = "queued"

    def finish(self) -> None:
        """Mark done and answer the caller (its ``results`` or ``error`` are set)."""
        self.state = "done"
        if self.notify is not None:
            self.notify(self)
        else:
            self.wake.release()


class _LockBusy(LedgerUnavailable):
    """The write lock stayed with another connection past the allowed wait; nothing was
    written."""


_DEADLINE_MESSAGE = "ledger append not durable within the deadline"


def _now_text() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class GroupCommit:
    """The append queue and its sequencer thread (mixed into
    :class:`interlock.ledger.storage.sqlite.SqliteLedger`)."""

    signer: NoteSigner | None
    durability: Durability
    path: Path
    _busy_timeout_ms: int

    if TYPE_CHECKING:

        def _connect(self, *, create: bool = False) -> sqlite3.Connection: ...

        def _frontier_of(
            self, size: int, conn: sqlite3.Connection | None = None
        ) -> merkle.Frontier: ...

    def _init_group_commit(self) -> None:
        # ``_mu`` guards the queue, the pendings' states and the flags
        self._mu = threading.Lock()
        self._work = threading.Condition(self._mu)  # the sequencer waits on it for records
        self._queue: list[_Pending] = []
        self._started = False
        self._closed = False
        self._failed: BaseException | None = None
        self._writer: threading.Thread | None = None
        self._pid = os.getpid()
        # gathering: callers the last commit answered usually append again at once; the
        # sequencer waits a fraction of a commit for as many to queue (see _run_writer)
        self._expect = 1
        self._gather_until = 0.0
        #: a batch is being written (by the sequencer, or inline by a lone caller)
        self._writing = False
        self._behind = False  # the sequencer waits for an inline commit to end
        #: batches committed and entries in them (``interlock bench``: decisions per fsync)
        self.commits = 0
        self.committed = 0
        # the write connection and the state only its holder changes, under ``_wlock``
        self._wlock = threading.Lock()
        self._wconn: sqlite3.Connection | None = None
        self._frontier: merkle.Frontier | None = None
        self._size = 0  # committed size as of this object's last commit
        self._last_cp_size = -1
        self._last_cp_time = float("-inf")  # the first commit is due one, whatever the uptime
        self._cp_retry_at = 0.0  # a timer checkpoint that failed is retried after this
        #: (st_dev, st_ino) of the database and its WAL as this writer first committed to them
        self._file_ids: dict[str, tuple[int, int]] = {}
        #: set in a worker process whose appends another process's sequencer commits
        #: (:meth:`attach_sequencer`): this object then never writes
        self._remote: SequencerLink | None = None

    def attach_sequencer(self, link: SequencerLink) -> None:
        """Send this ledger object's appends (and forced checkpoints) to the sequencer at the
        other end of ``link`` instead of committing them here (``interlock serve --workers``:
        one sequencer for every worker). Reads are unchanged. This object's own sequencer, if
        it ran, stops once what is queued for it has committed: from now on it never writes."""
        with self._mu:
            self._remote = link
            started = self._started
        if started:
            self._stop_writer(10.0)
            with self._wlock:
                if self._wconn is not None:
                    self._wconn.close()
                    self._wconn = None

    @property
    def sequencer_pid(self) -> int | None:
        """The process whose sequencer commits this object's appends, when it is another
        process's (:meth:`attach_sequencer`); None when this object commits its own."""
        remote = self._remote
        return None if remote is None else remote.peer_pid

    def _enqueue(self, p: _Pending) -> None:
        """Queue ``p`` (its ``notify`` set) for this process's sequencer and return at once:
        its answer goes to ``notify`` once it is done, or now if the ledger refuses appends."""
        with self._mu:
            if self._closed:
                p.error = LedgerUnavailable("ledger is closed")
            elif self._failed is not None:
                p.error = LedgerUnavailable(f"ledger writer failed: {self._failed}")
            elif self._pid != os.getpid():
                p.error = LedgerUnavailable("this ledger was opened in another process")
            else:
                if not self._started:
                    self._start_locked()
                queue = self._queue
                queue.append(p)
                if len(queue) == 1 or len(queue) >= self._expect:
                    self._work.notify()
                return
        p.finish()

    def _submit(self, p: _Pending, timeout: float) -> None:
        """Queue ``p`` for the sequencer and return once it is done (its ``results`` or
        ``error`` set).

        Raises:
            LedgerUnavailable: the ledger is closed or failed, used from a forked process, or
                ``timeout`` passed first (``p`` withdrawn unless it was already being written).
        """
        remote = self._remote
        if remote is not None:
            remote.submit(p, timeout)
            return
        with self._mu:
            if self._closed:
                raise LedgerUnavailable("ledger is closed")
            if self._failed is not None:
                raise LedgerUnavailable(f"ledger writer failed: {self._failed}")
            if not self._started:
                self._start_locked()
            elif self._pid != os.getpid():
                # a fork copied this object but not its sequencer thread or its connection
                raise LedgerUnavailable(
                    "this ledger was opened in another process (before a fork): open it again"
                )
            queue = self._queue
            inline = not queue and not self._writing
            if inline:
                # nothing queued and no batch being written: a lone caller commits on its own
                # thread, sparing two thread hand-offs; callers arriving meanwhile queue for
                # the sequencer, which batches them once this commit is done
                self._writing = True
                p.state = "taken"
            else:
                queue.append(p)
                if len(queue) == 1 or len(queue) >= self._expect:
                    self._work.notify()
        if inline:
            try:
                self._write_batch([p])
            finally:
                with self._mu:
                    self._writing = False
                    if self._queue or self._behind:  # the sequencer waits for this end
                        self._work.notify()
            if p.state != "done":
                # dropped after the lock was obtained: its deadline had passed (a stopped
                # process); nothing of it was written
                raise LedgerUnavailable(_DEADLINE_MESSAGE, timeout_s=timeout)
            return
        if p.wake.acquire(timeout=max(0.0, timeout)):
            return
        with self._mu:
            if p.state == "queued":
                self._queue.remove(p)
                p.state = "cancelled"
            elif p.state == "taken":  # its batch still waits for the write lock
                p.state = "cancelled"
            if p.state != "done":
                # ``writing``: it may still commit; a committed record whose caller was told
                # "deny" is harmless, the reverse cannot happen (DESIGN I1)
                raise LedgerUnavailable(_DEADLINE_MESSAGE, timeout_s=timeout)

    def _start_locked(self) -> None:
        self._wconn = self._connect()
        # the sequencer bounds its wait for the write lock itself (see _begin)
        self._wconn.execute("PRAGMA busy_timeout=0")
        self._pid = os.getpid()
        self._started = True
        self._writer = threading.Thread(
            target=self._run_writer, name="interlock-ledger-sequencer", daemon=True
        )
        self._writer.start()

    def _stop_writer(self, wait: float) -> None:
        """Refuse new appends, let the queued ones commit (up to ``wait`` seconds), stop."""
        with self._mu:
            self._closed = True
            self._work.notify_all()
        writer = self._writer
        if writer is not None and writer is not threading.current_thread():
            writer.join(timeout=wait)

    def _checkpoint_wait(self) -> float | None:
        """Seconds until the committed entries without a checkpoint are a second old (the
        sequencer then signs one), or None: nothing to publish."""
        if self.signer is None or self._failed is not None:
            return None
        if self._size <= max(self._last_cp_size, 0):
            return None
        due = max(self._last_cp_time + CHECKPOINT_EVERY_SECONDS, self._cp_retry_at)
        return due - time.monotonic()

    def _run_writer(self) -> None:
        batch: list[_Pending] = []
        try:
            while True:
                with self._mu:
                    while not self._closed:
                        if self._writing:
                            # a lone caller's inline commit: its end wakes this thread
                            self._behind = True
                            self._work.wait()
                            self._behind = False
                            continue
                        if self._queue:
                            # a batch as large as the last one, unless that takes longer than
                            # a fraction of a commit: concurrent callers then share commits
                            # instead of alternating in two half-size groups
                            left = self._gather_until - time.monotonic()
                            if len(self._queue) >= self._expect or left <= 0:
                                break
                            self._work.wait(left)
                            continue
                        wait = self._checkpoint_wait()
                        if wait is not None and wait <= 0:
                            break
                        self._work.wait(wait)
                    while self._writing:  # closing while a lone caller commits
                        self._behind = True
                        self._work.wait()
                        self._behind = False
                    if not self._queue:
                        if self._closed:
                            return
                        timer = _Pending((), time.monotonic() + 30.0)
                        timer.state = "taken"
                        batch = [timer]
                    else:
                        batch, self._queue = self._queue, []
                        for q in batch:
                            q.state = "taken"
                        timer = None
                    self._writing = True
                started = time.monotonic()
                try:
                    self._write_batch(batch)
                finally:
                    with self._mu:
                        self._writing = False
                if timer is None:
                    ended = time.monotonic()
                    self._expect = sum(1 for q in batch if q.state == "done" and q.error is None)
                    self._gather_until = ended + min(0.5 * (ended - started), 0.002)
                if timer is not None and timer.error is not None:
                    # closed, failed or locked: try again in a second
                    self._cp_retry_at = time.monotonic() + CHECKPOINT_EVERY_SECONDS
        except BaseException as exc:  # noqa: BLE001 - the thread ends here; its callers are told
            # the sequencer must never die silently: every later append is refused
            with self._mu:
                if self._failed is None:
                    self._failed = LedgerUnavailable(f"the ledger's sequencer stopped: {exc!r}")
                # the batch it held (unless answered) and everything queued behind it
                for q in [*batch, *self._queue]:
                    if q.state in ("done", "cancelled"):
                        continue
                    q.error = self._failed
                    q.finish()
                self._queue = []
            _log.critical("the ledger's sequencer stopped; appends are refused", exc_info=exc)

    def _write_batch(self, batch: list[_Pending]) -> None:
        """Commit ``batch`` (all ``taken``) in one transaction and answer each caller."""
        started = time.monotonic()
        busy_until = started + self._busy_timeout_ms / 1000
        lock_until = min(max(q.deadline for q in batch), busy_until)
        results: list[list[AppendResult]] | None = None
        error: BaseException | None = None
        try:
            with self._wlock:
                conn = self._wconn
                if conn is None:
                    raise LedgerUnavailable("ledger is closed")
                self._begin(conn, lock_until)
                with self._mu:
                    # callers that gave up, or whose deadline passed while the lock was held
                    # elsewhere (or this process was stopped), are not written
                    now = time.monotonic()
                    live = []
                    for q in batch:
                        if q.state != "taken":
                            continue
                        if q.deadline < now:
                            q.state = "cancelled"
                            continue
                        q.state = "writing"
                        live.append(q)
                    batch = live
                if not batch:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    return
                results = self._commit(conn, batch)
        except BaseException as exc:  # noqa: BLE001 - every caller in the batch must learn of it
            error = exc
        with self._mu:
            if error is None and results is not None:
                # counted before anyone is answered: an answered caller sees its commit counted
                self.commits += 1
                self.committed += sum(len(r) for r in results)
                for q, res in zip(batch, results, strict=True):
                    q.results = res
                    q.finish()
            else:
                if isinstance(error, LedgerCorrupt):
                    self._failed = error
                now = time.monotonic()
                for q in batch:
                    if q.state == "cancelled":
                        continue
                    late = isinstance(error, _LockBusy) and q.deadline <= now
                    q.error = LedgerUnavailable(_DEADLINE_MESSAGE) if late else error
                    q.finish()
        if error is not None and not isinstance(error, Exception):
            raise error

    def _begin(self, conn: sqlite3.Connection, lock_until: float) -> None:
        """``BEGIN IMMEDIATE``, retrying while another connection holds the write lock, until
        ``lock_until`` (monotonic).

        Raises:
            _LockBusy: still locked at ``lock_until``, or obtained only after it (the process
                was stopped or starved meanwhile); LedgerUnavailable: any other failure.
        """
        delay = 0.0001
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                message = f"cannot lock ledger for writing: {exc}"
                if getattr(exc, "sqlite_errorcode", 0) & 0xFF != sqlite3.SQLITE_BUSY:
                    raise LedgerUnavailable(message) from exc
                left = lock_until - time.monotonic()
                if left <= 0:
                    raise _LockBusy(message) from exc
                time.sleep(min(delay, left))
                delay = min(delay * 2, 0.005)
                continue
            if time.monotonic() > lock_until:
                # obtained, but too late: the process was stopped or starved past the deadline
                # (SIGSTOP while it waited, found by the fault matrix); its callers were due an
                # answer already, and what they were decided under may have changed meanwhile
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise _LockBusy("ledger write lock obtained only after the deadline")
            return

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
            changes: list[tuple[int, bytes, Delta]] = []
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
                    if it.state is not NO_CHANGE:
                        changes.append((size, lh, it.state))
                    size += 1
                out.append(res)
            if rows:
                conn.executemany("INSERT INTO entries(idx, leaf_hash, data) VALUES (?, ?, ?)", rows)
                if blobs:
                    conn.executemany(
                        "INSERT OR IGNORE INTO blobs(digest, data) VALUES (?, ?)", blobs
                    )
                if changes:
                    _apply_changes(conn, changes)
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
            self._check_files()
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

    def _check_files(self) -> None:
        """After a COMMIT: the database and its WAL are still the files this writer committed
        to. Unlinked or replaced under a running writer, SQLite goes on writing into the open,
        unlinked file: a commit that "succeeds" into a file no one will read again. The WAL
        cannot legitimately go while this writer's connection is open (SQLite removes it only
        with the last connection), so a missing or different file is LedgerCorrupt: the
        commit's callers are denied, and so is every later append of this ledger object.

        Raises:
            LedgerCorrupt: a file is gone or is another file now.
        """
        path: Path = self.path
        for name in (str(path), f"{path}-wal"):
            try:
                st = os.stat(name)
            except FileNotFoundError:
                raise LedgerCorrupt(
                    "the ledger's files were removed under a running writer", file=name
                ) from None
            except OSError as exc:
                raise LedgerUnavailable(f"cannot check the ledger's files: {exc}") from exc
            now = (st.st_dev, st.st_ino)
            first = self._file_ids.setdefault(name, now)
            if first != now:
                raise LedgerCorrupt(
                    "the ledger's files were replaced under a running writer", file=name
                )

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
