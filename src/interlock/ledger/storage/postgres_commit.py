"""The PostgreSQL driver's two writers, after Tessera's split of sequencing from integration:

*Sequencing* (:meth:`Sequencer._write_batch`, one thread per ledger object): callers queue
their records; the thread takes everything queued as one batch and, in one transaction, takes
the log's single counter row (``SELECT … FOR UPDATE``: every node's appends serialize on it,
so indices are committed in order and without gaps — an aborted transaction gives its numbers
back), inserts the entries with their leaf hashes, their blobs and their state changes, moves
the counter, and COMMITs. Callers are answered only after COMMIT returned (DESIGN I1).

*Integration and publishing* (:meth:`Sequencer._integrate`): under a transaction-scoped
advisory lock (one integrator at a time across the fleet), read the latest checkpoint and the
committed size, re-hash the entries in between, persist the tiles they completed, sign a
checkpoint of the committed size and commit it with the tiles. Any node may run it: its own
thread does, at least every second while entries arrive and whenever 1,000 entries are
waiting; :meth:`checkpoint` does, at once. Appends never wait on hashing or signing.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import errors as pg_errors

from interlock.errors import LedgerCorrupt, LedgerError, LedgerUnavailable, UsageError
from interlock.ledger import merkle
from interlock.ledger.note import Checkpoint, NoteSigner
from interlock.ledger.projection import NO_CHANGE, Delta
from interlock.ledger.protocols import Append, AppendResult, Durability
from interlock.ledger.storage.postgres_state import apply_changes
from interlock.ledger.storage.postgres_tree import persist_tiles

_log = logging.getLogger(__name__)

CHECKPOINT_EVERY_ENTRIES = 1000

CHECKPOINT_EVERY_SECONDS = 1.0

#: ``pg_advisory_xact_lock`` key of the integrator (one per database): "interlock" in ASCII
INTEGRATOR_LOCK = 0x696E7465726C6F63

_DEADLINE_MESSAGE = "ledger append not durable within the deadline"


class Pending:
    """One caller's records on their way into a commit: ``queued`` (withdrawable) ->
    ``taken`` (in a batch whose transaction waits for the counter row: still withdrawable) ->
    ``writing`` -> ``done``; a withdrawn one becomes ``cancelled``."""

    __slots__ = ("deadline", "done", "error", "items", "results", "state")

    def __init__(self, items: Sequence[Append], deadline: float) -> None:
        self.items = items
        self.deadline = deadline
        self.done = threading.Event()
        self.results: list[AppendResult] = []
        self.error: BaseException | None = None
        self.state = "queued"


def _now_text() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def unavailable(what: str, exc: psycopg.Error) -> LedgerUnavailable:
    """``exc`` as the driver's error: never a raw psycopg error past the driver."""
    kind = type(exc).__name__
    return LedgerUnavailable(f"{what}: {kind}: {str(exc).strip() or 'connection lost'}")


class Sequencer:
    """The append queue, its writer thread and the integrator (mixed into
    :class:`interlock.ledger.storage.postgres.PostgresLedger`)."""

    signer: NoteSigner | None
    durability: Durability

    if TYPE_CHECKING:

        def connection(
            self, timeout: float | None = None
        ) -> contextlib.AbstractContextManager[psycopg.Connection[Any]]: ...

        def _frontier_of(
            self, size: int, conn: psycopg.Connection[Any] | None = None
        ) -> merkle.Frontier: ...

    def _init_sequencer(self) -> None:
        self._mu = threading.Lock()
        self._work = threading.Condition(self._mu)  # the writer waits on it for records
        self._queue: list[Pending] = []
        self._started = False
        self._closed = False
        self._failed: BaseException | None = None
        self._writer_thread: threading.Thread | None = None
        self._integrator_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._due = threading.Event()  # wakes the integrator early
        self._integrate_lock = threading.Lock()  # one integration per process at a time
        self._frontier: merkle.Frontier | None = None  # right edge at the last integration
        self._size = 0  # committed size as of this object's last commit
        self._cp_size = 0  # integrated size as this object last saw it
        self._last_integration = 0.0  # monotonic

    # -- the queue -------------------------------------------------------------------------

    def _submit(self, p: Pending, timeout: float) -> None:
        """Queue ``p`` for the writer and wait until it is done.

        Raises:
            LedgerUnavailable: closed or failed, or ``timeout`` passed first (``p`` withdrawn
                unless its transaction already held the counter row).
        """
        with self._mu:
            if self._closed:
                raise LedgerUnavailable("ledger is closed")
            if self._failed is not None:
                raise LedgerUnavailable(f"ledger writer failed: {self._failed}")
            if not self._started:
                self._start_locked()
            self._queue.append(p)
            self._work.notify()
        if p.done.wait(max(0.0, timeout)):
            return
        with self._mu:
            if p.state == "queued":
                self._queue.remove(p)
                p.state = "cancelled"
            elif p.state == "taken":
                p.state = "cancelled"
            if p.state != "done":
                # ``writing``: it may still commit; a committed record whose caller was told
                # "deny" is harmless, the reverse cannot happen (DESIGN I1)
                raise LedgerUnavailable(_DEADLINE_MESSAGE, timeout_s=timeout)

    def _start_locked(self) -> None:
        self._started = True
        self._writer_thread = threading.Thread(
            target=self._run_writer, name="interlock-ledger-writer", daemon=True
        )
        self._writer_thread.start()
        if self.signer is not None:
            self._integrator_thread = threading.Thread(
                target=self._run_integrator, name="interlock-ledger-integrator", daemon=True
            )
            self._integrator_thread.start()

    def _stop_threads(self, wait: float) -> None:
        """Refuse new appends, let queued ones be written (up to ``wait`` seconds), stop."""
        with self._mu:
            self._closed = True
            self._work.notify_all()
        self._stop.set()
        self._due.set()
        for t in (self._writer_thread, self._integrator_thread):
            if t is not None and t is not threading.current_thread():
                t.join(timeout=wait)

    def _run_writer(self) -> None:
        while True:
            with self._mu:
                while not self._queue and not self._closed:
                    self._work.wait()
                if not self._queue:
                    return
                batch, self._queue = self._queue, []
                for p in batch:
                    p.state = "taken"
            self._write_batch(batch)

    # -- sequencing ------------------------------------------------------------------------

    def _write_batch(self, batch: list[Pending]) -> None:
        """Commit ``batch`` in one transaction and answer each caller (never raises)."""
        results: list[list[AppendResult]] = []
        error: BaseException | None = None
        size = -1
        try:
            budget = max(p.deadline for p in batch) - time.monotonic()
            if budget <= 0:
                raise LedgerUnavailable(_DEADLINE_MESSAGE)
            with self.connection(timeout=budget) as conn:
                batch, results, size = self._sequence(conn, batch, budget)
        except pg_errors.UniqueViolation as exc:
            error = LedgerCorrupt(f"the log's counter is behind its entries: {exc}")
        except psycopg.Error as exc:
            error = unavailable("ledger append failed", exc)
        except BaseException as exc:  # noqa: BLE001 - every caller in the batch must learn of it
            error = exc
        with self._mu:
            if error is None:
                for p, res in zip(batch, results, strict=True):
                    p.results = res
                    p.state = "done"
                    p.done.set()
            else:
                if isinstance(error, LedgerCorrupt):
                    self._failed = error
                for p in batch:
                    if p.state == "cancelled":
                        continue
                    p.error = error
                    p.state = "done"
                    p.done.set()
        if error is None and size >= 0:
            now = time.monotonic()
            if (
                size - self._cp_size >= CHECKPOINT_EVERY_ENTRIES
                or now - self._last_integration >= CHECKPOINT_EVERY_SECONDS
            ):
                self._due.set()
        if error is not None and not isinstance(error, Exception):
            raise error

    def _sequence(
        self, conn: psycopg.Connection[Any], batch: list[Pending], budget: float
    ) -> tuple[list[Pending], list[list[AppendResult]], int]:
        """The append transaction. Returns the batch as written (withdrawn callers left out),
        each caller's results, and the committed size (-1: nothing was written)."""
        ms = str(max(1, int(budget * 1000)))
        out: list[list[AppendResult]] = []
        # pipeline mode: the statements go out without waiting for each answer; the only
        # round trips are the counter row (its value numbers the entries) and COMMIT
        with conn.pipeline(), conn.transaction():
            cur = conn.cursor()
            # the whole transaction, its wait for the counter row included, within the
            # latest caller's deadline; synchronous_commit is the connection's (on)
            cur.execute(
                "SELECT set_config('lock_timeout', %s, true),"
                " set_config('statement_timeout', %s, true)",
                (ms, ms),
            )
            row = cur.execute("SELECT next FROM sequence WHERE id = 1 FOR UPDATE").fetchone()
            if row is None:
                raise LedgerCorrupt("the log's sequence row is missing")
            start = int(row[0])
            if start < self._size:
                raise LedgerCorrupt(
                    "entries disappeared from the log", entries=start, had=self._size
                )
            with self._mu:
                # callers that gave up while we waited for the counter row are not written
                batch = [p for p in batch if p.state == "taken"]
                for p in batch:
                    p.state = "writing"
            if not batch:
                raise psycopg.Rollback()
            size = start
            rows: list[tuple[int, bytes, bytes]] = []
            blobs: list[tuple[str, bytes]] = []
            changes: list[tuple[int, bytes, Delta]] = []
            leaf_hash = merkle.leaf_hash
            for p in batch:
                res = []
                for it in p.items:
                    lh = leaf_hash(it.record)
                    rows.append((size, lh, it.record))
                    res.append(AppendResult(index=size, leaf_hash=lh))
                    if it.blobs:
                        blobs.extend(it.blobs.items())
                    if it.state is not NO_CHANGE:
                        changes.append((size, lh, it.state))
                    size += 1
                out.append(res)
            cur.executemany("INSERT INTO entries (idx, leaf_hash, data) VALUES (%s, %s, %s)", rows)
            if blobs:
                cur.executemany(
                    "INSERT INTO blobs(digest, data) VALUES (%s, %s)"
                    " ON CONFLICT (digest) DO NOTHING",
                    blobs,
                )
            if changes:
                apply_changes(cur, changes)
            cur.execute("UPDATE sequence SET next = %s WHERE id = 1", (size,))
            # the fleet's doorbell (postgres_fleet): delivered at COMMIT, never before
            cur.execute("SELECT pg_notify('interlock_log', %s)", (str(size),))
        if not batch:
            return batch, out, -1
        self._size = size
        return batch, out, size

    # -- integration and publishing ------------------------------------------------------

    def _run_integrator(self) -> None:
        """Integrate and sign what is committed: when the writer says enough is waiting, and
        every second in case another node left entries behind (a crash between its append and
        its integration)."""
        while not self._stop.is_set():
            self._due.wait(CHECKPOINT_EVERY_SECONDS)
            self._due.clear()
            if self._stop.is_set():
                return
            try:
                self._integrate(force=False)
            except LedgerCorrupt as exc:
                with self._mu:
                    self._failed = exc
                _log.error("ledger integration found corruption: %s", exc.message)
            except LedgerError as exc:
                _log.warning("ledger integration failed (retrying): %s", exc.message)

    def _integrate(self, *, force: bool, timeout: float = 30.0) -> None:
        """Extend the stored tree from the latest checkpoint to the committed size and sign a
        checkpoint of it, in one transaction under the integrator lock. ``force``: wait for
        another integrator (``checkpoint()``); otherwise leave the work to it.

        Raises:
            LedgerCorrupt: the stored tree or an entry disagrees with the hashes.
            LedgerUnavailable: storage failed.
        """
        signer = self.signer
        if signer is None:
            return
        with self._integrate_lock:
            self._last_integration = time.monotonic()
            try:
                with self.connection(timeout=timeout) as conn:
                    done = self._integrate_in(conn, signer, force=force, timeout=timeout)
            except psycopg.Error as exc:
                self._frontier = None
                raise unavailable("ledger integration failed", exc) from exc
            except BaseException:
                self._frontier = None
                raise
            if done is not None:
                self._frontier, self._cp_size = done, done.size

    def _integrate_in(
        self, conn: psycopg.Connection[Any], signer: NoteSigner, *, force: bool, timeout: float
    ) -> merkle.Frontier | None:
        ms = str(max(1, int(timeout * 1000)))
        with conn.transaction():
            cur = conn.cursor()
            cur.execute(
                "SELECT set_config('lock_timeout', %s, true),"
                " set_config('statement_timeout', %s, true)",
                (ms, ms),
            )
            if force:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (INTEGRATOR_LOCK,))
            else:
                got = cur.execute(
                    "SELECT pg_try_advisory_xact_lock(%s)", (INTEGRATOR_LOCK,)
                ).fetchone()
                if not got or not got[0]:
                    return None  # another node is integrating
            row = cur.execute(
                "SELECT size, root FROM checkpoints ORDER BY size DESC LIMIT 1"
            ).fetchone()
            cp_size, cp_root = (int(row[0]), bytes(row[1])) if row else (0, merkle.EMPTY_ROOT)
            got = cur.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM entries").fetchone()
            size = int(got[0]) if got else 0
            if size < cp_size:
                raise LedgerCorrupt(
                    "the log is shorter than its latest checkpoint",
                    entries=size,
                    checkpoint=cp_size,
                )
            if size == cp_size:
                self._cp_size = size
                return self._frontier if self._frontier and self._frontier.size == size else None
            frontier = self._frontier
            if frontier is None or frontier.size != cp_size or frontier.root() != cp_root:
                try:
                    frontier = self._frontier_of(cp_size, conn)
                except LedgerUnavailable:
                    raise
                except (LedgerError, UsageError) as exc:
                    raise LedgerCorrupt(
                        f"stored tree does not cover the checkpoint: {exc.message}",
                        checkpoint=cp_size,
                    ) from exc
                if frontier.root() != cp_root:
                    raise LedgerCorrupt(
                        "stored tree does not match the latest checkpoint", size=cp_size
                    )
            frontier = frontier.copy()  # the cached one stays as it was if this fails
            fresh: dict[int, bytes] = {}
            leaf_hash = merkle.leaf_hash
            pos = cp_size
            while pos < size:
                rows = cur.execute(
                    "SELECT idx, leaf_hash, data FROM entries WHERE idx >= %s AND idx < %s"
                    " ORDER BY idx",
                    (pos, min(size, pos + 4096)),
                ).fetchall()
                for idx, lh, data in rows:
                    if idx != pos:
                        raise LedgerCorrupt("entries are not contiguous", index=pos)
                    lh = bytes(lh)
                    # the signature below vouches for these: check them, do not trust them
                    if leaf_hash(bytes(data)) != lh:
                        raise LedgerCorrupt("entry does not match its leaf hash", index=idx)
                    frontier.append(lh)
                    fresh[idx] = lh
                    pos += 1
                if not rows:
                    raise LedgerCorrupt("entries are not contiguous", index=pos)
            persist_tiles(cur, cp_size, size, fresh)
            root = frontier.root()
            note = signer.sign(
                Checkpoint(
                    origin=signer.name,
                    size=size,
                    root_hash=root,
                    extensions=(f"durability {self.durability.value}",),
                ).body()
            )
            cur.execute(
                "INSERT INTO checkpoints(size, root, note, created) VALUES (%s, %s, %s, %s)",
                (size, root, note, _now_text()),
            )
        return frontier
