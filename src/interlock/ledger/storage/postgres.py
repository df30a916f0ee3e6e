"""The shared ledger: one RFC 6962 log in PostgreSQL for a fleet of nodes (processes).

An example (it needs a server, so it is not run as a doctest)::

    from interlock.ledger.storage.postgres import PostgresLedger
    led = PostgresLedger("postgresql://127.0.0.1/interlock", signer=signer, create=True)
    [r.index for r in led.append([Append(record=b'{"a":1}')])]   # [0]
    led.close()

The same three concerns as the SQLite driver, but split across transactions so that appends
from many nodes never serialize on hashing (after Tessera's ``storage/mysql``):

* **Sequencing** — one gap-free sequence for the whole fleet: a single counter row
  (``sequence``), taken ``FOR UPDATE`` in each append transaction and moved by the batch's
  size, in the transaction that inserts the entries with their leaf hashes, their blobs and
  their governance-state changes (the state is the projection of the log, DESIGN I8). Appends
  serialize only on that row, for the time of one INSERT batch and its COMMIT; an aborted
  transaction returns its numbers. Within a process, callers share transactions: a writer
  thread commits everything queued at once (:mod:`.postgres_commit`).
* **Integration and publishing** — in batches, under ``pg_advisory_xact_lock``: extend the
  stored tree (256-wide tiles) from the latest checkpoint to the committed size, re-hashing
  those entries, and sign a C2SP checkpoint in the same transaction. Every node runs it at
  least every second while entries arrive (and at 1,000 waiting entries); ``checkpoint()``
  runs it at once. The integrated size is the latest checkpoint's.
* **Reading** — proofs, roots and tiles work for every *committed* size: tiles the integrator
  has not persisted yet are derived from the entries (at most about a second of them).

Durability: an append is answered only after COMMIT returned, with ``synchronous_commit = on``
forced on every connection (a server default of ``off`` is overridden). PostgreSQL commits are
therefore always durable: ``durability = "process"`` is accepted and has no effect here; the
checkpoints say ``durability full``. Replication (synchronous standbys) is the server's
business.

Errors: every psycopg error (a refused or lost connection, a statement or lock timeout, a
serialization failure) leaves the driver as ``LedgerUnavailable``; stored data that disagrees
with its hashes as ``LedgerCorrupt``. A transaction cut by a broken connection is rolled back
by the server: nothing is half-written. A failed COMMIT may still have committed — its caller
was told "deny", which is harmless (DESIGN I1).

Triggers refuse UPDATE, DELETE and TRUNCATE on entries, tiles and checkpoints, and any move
of the counter backwards: defence in depth; verification is the real guard.

The location is a ``postgresql://`` URL (libpq's, so ``PGPASSWORD`` and ``~/.pgpass`` work);
its password never appears in a message (:func:`redact`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg_pool import ConnectionPool

from interlock.core.model import MAX_RECORD_BYTES
from interlock.errors import LedgerCorrupt, LedgerError, LedgerUnavailable
from interlock.ledger.note import NoteSigner
from interlock.ledger.protocols import Append, AppendResult, Durability, StoredCheckpoint
from interlock.ledger.storage.postgres_commit import Pending, Sequencer, unavailable
from interlock.ledger.storage.postgres_fleet import FleetTables
from interlock.ledger.storage.postgres_state import (
    _SELECT_ENTRIES,
    SCHEMA_VERSION,
    STATE_SCHEMA,
    STATE_TRIGGERS,
    StateTables,
    entry_chunks,
)
from interlock.ledger.storage.postgres_tree import TreeCheck

__all__ = ["PostgresLedger", "is_postgres_url", "redact"]

_LOG_SCHEMA: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS meta (k text PRIMARY KEY, v text NOT NULL)",
    # the one counter of the log: the next index (gap-free, see the module docstring)
    "CREATE TABLE IF NOT EXISTS sequence (id integer PRIMARY KEY CHECK (id = 1),"
    " next bigint NOT NULL CHECK (next >= 0))",
    "INSERT INTO sequence(id, next) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
    "CREATE TABLE IF NOT EXISTS entries (idx bigint PRIMARY KEY, leaf_hash bytea NOT NULL,"
    " data bytea NOT NULL)",
    "CREATE TABLE IF NOT EXISTS tiles (level integer NOT NULL, n bigint NOT NULL,"
    " hashes bytea NOT NULL, nodes bytea NOT NULL, root bytea NOT NULL,"
    " PRIMARY KEY (level, n))",
    "CREATE TABLE IF NOT EXISTS checkpoints (size bigint PRIMARY KEY, root bytea NOT NULL,"
    " note text NOT NULL, created text NOT NULL)",
    "CREATE TABLE IF NOT EXISTS blobs (digest text PRIMARY KEY, data bytea NOT NULL)",
    """CREATE OR REPLACE FUNCTION interlock_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$ BEGIN
        RAISE EXCEPTION '% are append-only', TG_ARGV[0] USING ERRCODE = 'restrict_violation';
    END $$""",
    """CREATE OR REPLACE FUNCTION interlock_sequence_forward() RETURNS trigger
    LANGUAGE plpgsql AS $$ BEGIN
        IF TG_OP = 'DELETE' OR NEW.next < OLD.next OR NEW.id <> OLD.id THEN
            RAISE EXCEPTION 'the ledger sequence only moves forward'
                USING ERRCODE = 'restrict_violation';
        END IF;
        RETURN NEW;
    END $$""",
    "CREATE OR REPLACE TRIGGER sequence_forward BEFORE UPDATE OR DELETE ON sequence"
    " FOR EACH ROW EXECUTE FUNCTION interlock_sequence_forward()",
    *(
        statement
        for table, what in (
            ("entries", "ledger entries"),
            ("tiles", "ledger tiles"),
            ("checkpoints", "checkpoints"),
        )
        for statement in (
            f"CREATE OR REPLACE TRIGGER {table}_no_update BEFORE UPDATE ON {table}"
            f" FOR EACH ROW EXECUTE FUNCTION interlock_append_only('{what}')",
            f"CREATE OR REPLACE TRIGGER {table}_no_delete BEFORE DELETE ON {table}"
            f" FOR EACH ROW EXECUTE FUNCTION interlock_append_only('{what}')",
            f"CREATE OR REPLACE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}"
            f" FOR EACH STATEMENT EXECUTE FUNCTION interlock_append_only('{what}')",
        )
    ),
)

#: ``pg_advisory_xact_lock`` key held while a schema is created (two nodes may init at once)
_SCHEMA_LOCK = 0x696E7465726C6F64

#: every read's bound on the server; the gate's own deadline is shorter (``ledger_timeout_ms``
#: bounds appends and waits for a connection)
_READ_TIMEOUT_MS = 30_000


def is_postgres_url(location: object) -> bool:
    """Whether ``location`` names a PostgreSQL database (``postgresql://`` or ``postgres://``)."""
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


def redact(url: str) -> str:
    """``url`` without its password (for messages and logs)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "postgresql://(unparsable URL)"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:***@{host}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    query = "&".join(
        "password=***" if q.lower().startswith("password=") else q
        for q in parts.query.split("&")
        if q
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


#: how long the pool keeps retrying one lost connection before it gives up on that attempt;
#: the next caller starts a fresh one (psycopg_pool backs off 1, 2, 4 … s within an attempt,
#: so a short attempt keeps a node's recovery after an outage within seconds)
_RECONNECT_S = 5.0


class PostgresLedger(Sequencer, StateTables, TreeCheck, FleetTables):
    """An append-only, verifiable log in a PostgreSQL database, shared by many nodes.

    Args:
        url: ``postgresql://user@host:port/database`` (the database must exist).
        signer: signs checkpoints; ``None`` opens the ledger read-only for appends. Every
            node appending to one log MUST hold the same log key and origin.
        durability: accepted for symmetry with SQLite; PostgreSQL commits are always durable
            here (see the module docstring), so this is always ``full``.
        busy_timeout_ms: how long a call waits for a pooled connection (and a connection
            attempt at open).
        create: create the schema if it is missing (``interlock init`` and tests only).
        lazy: open even when the server cannot be reached now (a node that must start and
            deny until PostgreSQL is back): the pool keeps connecting in the background,
            every call raises ``LedgerUnavailable`` until it can, and the schema is checked
            on the first connection that succeeds.
        upgrade: open a ledger of another schema version, only to :meth:`replace_state` it.
        pool_size: most connections this object holds (the writer, the integrator, readers).

    Raises:
        LedgerCorrupt: the database has no ledger schema (without ``create``).
        LedgerUnavailable: the server cannot be reached or read, or the schema's version is
            another (run ``interlock ledger rebuild-state``).
    """

    def __init__(
        self,
        url: str,
        *,
        signer: NoteSigner | None = None,
        durability: Durability | str = Durability.FULL,
        busy_timeout_ms: int = 5000,
        create: bool = False,
        upgrade: bool = False,
        pool_size: int = 8,
        lazy: bool = False,
    ) -> None:
        Durability(durability)  # refuse a value that is no mode at all
        self.url = url
        self.location = redact(url)
        self.signer = signer
        # PostgreSQL commits are always durable (synchronous_commit = on): never weaker
        self.durability = Durability.FULL
        self._timeout_s = max(busy_timeout_ms, 1) / 1000
        self._tile_cache: OrderedDict[tuple[int, int], list[bytes]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._init_sequencer()
        self._upgrade = upgrade
        #: None once the schema was found right; else why it was not (yet) checked
        self._schema_problem: LedgerError | None = LedgerUnavailable(
            f"ledger {self.location} has not been reached yet"
        )
        connect_s, kwargs = self._connect_kwargs()
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            url,
            kwargs={"autocommit": True, **kwargs},
            min_size=1,
            max_size=max(2, pool_size),
            open=False,
            name="interlock-ledger",
            configure=_configure,
            timeout=self._timeout_s,
            reconnect_timeout=_RECONNECT_S,
        )
        try:
            if lazy:
                self._pool.open(wait=False)
            else:
                self._pool.open(wait=True, timeout=connect_s)
            with self._pool.connection(timeout=connect_s) as conn:
                if create:
                    _create_schema(conn)
                self._check_schema(conn)
        except psycopg.Error as exc:
            if not lazy:
                self._pool.close()
                raise unavailable(f"cannot open ledger {self.location}", exc) from exc
            self._schema_problem = unavailable(f"cannot reach ledger {self.location}", exc)
        except BaseException:
            self._pool.close()
            raise

    def _connect_kwargs(self) -> tuple[int, dict[str, Any]]:
        """``(connect timeout in s, libpq keyword arguments)`` of every connection."""
        connect_s = max(2, min(30, int(self._timeout_s + 0.999)))
        return connect_s, {
            "connect_timeout": connect_s,
            "application_name": "interlock",
            # a peer that vanished without a word (dropped traffic) is noticed in seconds
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 3,
            "tcp_user_timeout": 10_000,
        }

    def _check_schema(self, conn: psycopg.Connection[Any]) -> None:
        """Hold the database to a ledger of this schema version (once per object).

        Raises:
            LedgerCorrupt: no ledger schema. LedgerUnavailable: another version.
        """
        row = _schema_version(conn)
        if row is None:
            self._schema_problem = LedgerCorrupt(
                f"{self.location} is not an Interlock ledger (no schema): only `interlock init`"
                " creates one"
            )
        elif not self._upgrade and row != str(SCHEMA_VERSION):
            self._schema_problem = LedgerUnavailable(
                f"ledger {self.location} has schema {row}, this version uses {SCHEMA_VERSION}:"
                " run `interlock ledger rebuild-state` to rebuild its state from the log"
            )
        else:
            self._schema_problem = None
            return
        raise self._schema_problem

    # -- connections ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection (autocommit; psycopg errors pass through). A broken one goes
        back to the pool, which drops it, so the next caller gets a fresh one.

        Raises:
            LedgerCorrupt, LedgerUnavailable: a lazily opened ledger whose schema turned out
                wrong on its first connection (:meth:`_check_schema`).
        """
        with self._pool.connection(timeout=self._timeout_s if timeout is None else timeout) as c:
            if self._schema_problem is not None:
                self._check_schema(c)
            yield c

    @contextlib.contextmanager
    def _reader(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self.connection() as c:
                yield c
        except psycopg.Error as exc:
            raise unavailable("ledger read failed", exc) from exc

    @contextlib.contextmanager
    def _writer(self, what: str) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self.connection() as c:
                yield c
        except psycopg.Error as exc:
            raise unavailable(what, exc) from exc

    def close(self) -> None:
        """Refuse new appends, let queued ones commit (up to 10 s), stop the threads, sign a
        checkpoint of what this object appended (best effort: any node's integrator, or the
        next ``checkpoint()``, does it otherwise), close the pool."""
        self._stop_threads(10.0)
        if self._size > self._cp_size and self._failed is None:
            with contextlib.suppress(LedgerError):
                self._integrate(force=True, timeout=min(10.0, self._timeout_s * 5))
        self._pool.close(timeout=10.0)

    # -- appending -----------------------------------------------------------------------------

    def append(self, items: Sequence[Append], *, timeout: float = 5.0) -> list[AppendResult]:
        """Append records durably; return their indices once committed.

        Raises:
            LedgerUnavailable: the commit failed, or did not happen within ``timeout`` seconds
                (then the records were withdrawn unless their transaction held the counter).
            LedgerCorrupt: the counter disagrees with the entries (the ledger then refuses
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
        pending = Pending(items, time.monotonic() + timeout)
        self._submit(pending, timeout)
        if pending.error is not None:
            if isinstance(pending.error, LedgerError):
                raise pending.error
            raise LedgerUnavailable(f"ledger append failed: {pending.error}") from pending.error
        return pending.results

    def checkpoint(self) -> StoredCheckpoint | None:
        """Integrate everything committed, sign a checkpoint of it, and return the latest one
        (waits for another node's integrator if one is running).

        Raises:
            LedgerUnavailable: the ledger cannot integrate or be read.
            LedgerCorrupt: the stored tree or an entry disagrees with the hashes.
        """
        if self.signer is not None:
            with self._mu:
                if self._closed:
                    raise LedgerUnavailable("checkpoint not written: ledger is closed")
                if not self._started:
                    self._start_locked()
            self._integrate(force=True)
        return self.latest_checkpoint()

    # -- reading -------------------------------------------------------------------------------

    def size(self) -> int:
        """Number of committed entries."""
        with self._reader() as c:
            row = c.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM entries").fetchone()
        return int(row[0]) if row else 0

    def entry(self, index: int) -> bytes:
        """The record bytes at ``index``.

        Raises:
            LedgerError: if there is no such entry.
        """
        with self._reader() as c:
            row = c.execute("SELECT data FROM entries WHERE idx = %s", (index,)).fetchone()
        if row is None:
            raise LedgerError(f"no entry at index {index}", index=index)
        return bytes(row[0])

    def leaf_hash_at(self, index: int) -> bytes:
        with self._reader() as c:
            row = c.execute("SELECT leaf_hash FROM entries WHERE idx = %s", (index,)).fetchone()
        if row is None:
            raise LedgerError(f"no entry at index {index}", index=index)
        return bytes(row[0])

    def iter_entries(
        self, start: int = 0, end: int | None = None
    ) -> Iterator[tuple[int, bytes, bytes]]:
        """Yield ``(index, stored leaf hash, data)`` in index order, a connection per chunk."""
        for chunk in self.iter_entry_chunks(start, end):
            yield from chunk

    def iter_entry_chunks(
        self, start: int = 0, end: int | None = None, chunk: int = 4096
    ) -> Iterator[list[tuple[int, bytes, bytes]]]:
        """Like :meth:`iter_entries`, a list of up to ``chunk`` rows at a time."""

        def read(lo: int, hi: int) -> list[Any]:
            with self._reader() as c:
                return c.execute(_SELECT_ENTRIES, (lo, hi)).fetchall()

        return entry_chunks(read, start, end, chunk)

    def checkpoints(self) -> list[StoredCheckpoint]:
        with self._reader() as c:
            rows = c.execute(
                "SELECT size, root, note, created FROM checkpoints ORDER BY size"
            ).fetchall()
        return [
            StoredCheckpoint(size=int(s), root=bytes(r), note=str(n), created=str(t))
            for s, r, n, t in rows
        ]

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        with self._reader() as c:
            row = c.execute(
                "SELECT size, root, note, created FROM checkpoints ORDER BY size DESC LIMIT 1"
            ).fetchone()
        if row is None:
            return None
        return StoredCheckpoint(
            size=int(row[0]), root=bytes(row[1]), note=str(row[2]), created=str(row[3])
        )

    def blob(self, digest: str) -> bytes | None:
        with self._reader() as c:
            row = c.execute("SELECT data FROM blobs WHERE digest = %s", (digest,)).fetchone()
        return None if row is None else bytes(row[0])


def _configure(conn: psycopg.Connection[Any]) -> None:
    """Every pooled connection: durable commits whatever the server's default, bounded reads,
    and no transaction left idle holding the counter row."""
    conn.execute("SET synchronous_commit = on")
    conn.execute(f"SET statement_timeout = {_READ_TIMEOUT_MS}")
    conn.execute("SET idle_in_transaction_session_timeout = 60000")


def _create_schema(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        # two nodes initialising one database at once: one creates, the other finds it made
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        for statement in (*_LOG_SCHEMA, *STATE_SCHEMA, *STATE_TRIGGERS):
            conn.execute(statement)
        conn.execute(
            "INSERT INTO meta(k, v) VALUES ('schema', %s) ON CONFLICT (k) DO NOTHING",
            (str(SCHEMA_VERSION),),
        )


def _schema_version(conn: psycopg.Connection[Any]) -> str | None:
    """The ``meta`` schema version, or None when the database holds no ledger."""
    got = conn.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()
    if not got or not got[0]:
        return None
    row = conn.execute("SELECT v FROM meta WHERE k = 'schema'").fetchone()
    return None if row is None else str(row[0])
