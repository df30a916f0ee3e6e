"""The SQLite driver's governance-state tables: the projection of the log (DESIGN I8), written
with the entries that change it, read by the gate, dumped and replaced by a rebuild, and the
undo rows a state checkpoint uses."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

from interlock.errors import (
    LedgerError,
    LedgerUnavailable,
)
from interlock.ledger import merkle
from interlock.ledger.projection import STATUS_FROM, Delta, Execution, StateRows, row_key
from interlock.ledger.storage.sqlite_common import _SELECT_ENTRIES, _as_bytes, _entry_chunks

if TYPE_CHECKING:
    from interlock.ledger.storage.sqlite import SqliteLedger

SCHEMA_VERSION = 3


#: the governance-state tables: the projection of the log (each row names its index)
_STATE_SCHEMA = """
CREATE TABLE IF NOT EXISTS executions (
    id TEXT PRIMARY KEY,
    idx INTEGER NOT NULL,
    leaf_hash BLOB NOT NULL,
    effect TEXT NOT NULL,
    status TEXT NOT NULL,
    status_idx INTEGER NOT NULL,
    parent TEXT,
    depth INTEGER NOT NULL,
    principal TEXT
);
CREATE INDEX IF NOT EXISTS executions_running ON executions(status) WHERE status = 'running';
CREATE TABLE IF NOT EXISTS revocations (
    revocation_id TEXT PRIMARY KEY,
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
CREATE TABLE IF NOT EXISTS state (
    k TEXT PRIMARY KEY,
    v TEXT NOT NULL,
    idx INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS state_undo (
    tbl TEXT NOT NULL,
    k1 TEXT NOT NULL,
    k2 TEXT NOT NULL,
    at INTEGER NOT NULL,
    a,
    b
);
CREATE INDEX IF NOT EXISTS state_undo_at ON state_undo(at);
"""


#: what a row held before the record at ``at`` changed it, kept until the next state
#: checkpoint (:mod:`interlock.ledger.state_checkpoint`): with it a start-up check recovers the
#: state as of the checkpoint without replaying the log. An accelerator only: the checkpoint's
#: signed digest decides whether what it recovers is right (``last_ts`` is in the checkpoint).
_STATE_TRIGGERS = (
    "CREATE TRIGGER IF NOT EXISTS executions_undo BEFORE UPDATE OF status, status_idx"
    " ON executions BEGIN INSERT INTO state_undo VALUES"
    " ('executions', OLD.id, '', NEW.status_idx, OLD.status, OLD.status_idx); END",
    "CREATE TRIGGER IF NOT EXISTS quarantines_undo BEFORE INSERT ON quarantines"
    " BEGIN INSERT INTO state_undo SELECT 'quarantines', principal, '', NEW.idx, active, idx"
    " FROM quarantines WHERE principal = NEW.principal; END",
    "CREATE TRIGGER IF NOT EXISTS restrictions_undo BEFORE INSERT ON restrictions"
    " BEGIN INSERT INTO state_undo SELECT 'restrictions', principal, boundary, NEW.idx, active,"
    " idx FROM restrictions WHERE principal = NEW.principal AND boundary = NEW.boundary; END",
    "CREATE TRIGGER IF NOT EXISTS state_undo_state BEFORE INSERT ON state WHEN NEW.k <> 'last_ts'"
    " BEGIN INSERT INTO state_undo SELECT 'state', k, '', NEW.idx, v, idx FROM state"
    " WHERE k = NEW.k; END",
)


def _apply_changes(conn: sqlite3.Connection, changes: Sequence[tuple[int, bytes, Delta]]) -> None:
    """Write records' state changes into the projection tables, in ledger order, with exactly
    the semantics of :meth:`interlock.ledger.projection.Projection.apply_delta` (the state
    machine test holds the two equal)."""
    execs: list[tuple[Any, ...]] = []
    last_ts: tuple[int, int] | None = None

    def flush() -> None:
        if execs:
            # the first decision for an id is the one (Projection.apply_delta)
            conn.executemany(_INSERT_EXECUTION.replace("INSERT", "INSERT OR IGNORE", 1), execs)
            execs.clear()

    for idx, lh, d in changes:
        if d.ts is not None and (last_ts is None or d.ts > last_ts[0]):
            last_ts = (d.ts, idx)
        if d.execution is not None:
            eid, effect, parent, depth, principal = d.execution
            status = "allowed" if effect == "allow" else "denied"
            execs.append((eid, idx, lh, effect, status, idx, parent, depth, principal))
        if d.execution is not None and d == Delta(execution=d.execution, ts=d.ts):
            continue  # the common case, a decision: batched
        flush()
        if d.status is not None:
            eid, status = d.status
            conn.execute(_UPDATE_STATUS[status], (status, idx, eid, *STATUS_FROM[status]))
        for rid in d.revoked:
            conn.execute(
                "INSERT OR IGNORE INTO revocations(revocation_id, idx) VALUES (?, ?)", (rid, idx)
            )
        if d.quarantine is not None:
            principal, on = d.quarantine
            conn.execute(
                "INSERT OR REPLACE INTO quarantines(principal, active, idx) VALUES (?, ?, ?)",
                (principal, int(on), idx),
            )
        if d.restrict is not None:
            principal, boundary, on = d.restrict
            conn.execute(
                "INSERT OR REPLACE INTO restrictions(principal, boundary, active, idx)"
                " VALUES (?, ?, ?, ?)",
                (principal, boundary, int(on), idx),
            )
        if d.kill_switch is not None:
            _set_state(conn, "kill_switch", "true" if d.kill_switch else "false", idx)
        if d.trust_event:
            conn.execute(
                "INSERT INTO state(k, v, idx) VALUES ('trust_events', '1', ?) ON CONFLICT(k)"
                " DO UPDATE SET v = CAST(CAST(v AS INTEGER) + 1 AS TEXT), idx = excluded.idx",
                (idx,),
            )
        if d.policy is not None:
            version, pd = d.policy
            row = conn.execute("SELECT v FROM state WHERE k = 'policy_version'").fetchone()
            if row is None or version >= int(row[0]):
                _set_state(conn, "policy_version", str(version), idx)
                _set_state(conn, "policy_digest", json.dumps(pd), idx)
        if d.attestation is not None:
            _set_state(conn, "attestation", json.dumps(d.attestation), idx)
        if d.setting is not None:
            name, value = d.setting
            _set_state(conn, f"trust.{name}", value, idx)
        if d.checked is not None:
            _set_state(conn, "state_checked", str(d.checked), idx)
    flush()
    if last_ts is not None:
        conn.execute(
            "INSERT INTO state(k, v, idx) VALUES ('last_ts', ?, ?) ON CONFLICT(k) DO UPDATE"
            " SET v = excluded.v, idx = excluded.idx"
            " WHERE CAST(excluded.v AS INTEGER) > CAST(v AS INTEGER)",
            (str(last_ts[0]), last_ts[1]),
        )


def _set_state(conn: sqlite3.Connection, key: str, value: str, idx: int) -> None:
    conn.execute("INSERT OR REPLACE INTO state(k, v, idx) VALUES (?, ?, ?)", (key, value, idx))


_INSERT_EXECUTION = (
    "INSERT INTO executions(id, idx, leaf_hash, effect, status, status_idx, parent, depth,"
    " principal) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


_SELECT_EXECUTIONS = (
    "SELECT id, idx, leaf_hash, effect, status, status_idx, parent, depth, principal"
    " FROM executions"
)


_STATE_TABLES = ("executions", "revocations", "quarantines", "restrictions", "state", "state_undo")


#: per projection table (as :class:`StateRows` names it): the SQL table, its columns, its key
#: columns and the column naming the ledger index that last changed a row
_TABLE_SQL: dict[str, tuple[str, str, tuple[str, ...], str]] = {
    "executions": (
        "executions",
        "id, idx, leaf_hash, effect, status, status_idx, parent, depth, principal",
        ("id",),
        "status_idx",
    ),
    "revocations": ("revocations", "revocation_id, idx", ("revocation_id",), "idx"),
    "quarantines": ("quarantines", "principal, active, idx", ("principal",), "idx"),
    "restrictions": (
        "restrictions",
        "principal, boundary, active, idx",
        ("principal", "boundary"),
        "idx",
    ),
    "settings": ("state", "k, v, idx", ("k",), "idx"),
}


_UNDO_TABLE = {
    "executions": "executions",
    "quarantines": "quarantines",
    "restrictions": "restrictions",
    "state": "settings",
}


#: a status moves only forward (STATUS_FROM): the statement per new status
_UPDATE_STATUS = {
    # only placeholders are joined in: no value reaches the SQL text
    new: "UPDATE executions SET status = ?, status_idx = ? WHERE id = ? AND status IN ("  # noqa: S608
    + ", ".join("?" * len(old))
    + ")"
    for new, old in STATUS_FROM.items()
}


def _typed(row: Sequence[Any]) -> tuple[Any, ...]:
    """An executions row with its declared types (an edited database may hold others)."""
    return (
        str(row[0]),
        int(row[1]),
        _as_bytes(row[2]),
        str(row[3]),
        str(row[4]),
        int(row[5]),
        None if row[6] is None else str(row[6]),
        int(row[7]),
        None if row[8] is None else str(row[8]),
    )


class _Frozen:
    """A read transaction on a connection of its own (see :meth:`SqliteLedger.frozen`)."""

    def __init__(self, conn: sqlite3.Connection, ledger: SqliteLedger) -> None:
        self._conn = conn
        self._ledger = ledger

    @classmethod
    @contextlib.contextmanager
    def open(cls, ledger: SqliteLedger) -> Iterator[_Frozen]:
        conn = ledger._connect()
        try:
            conn.execute("BEGIN")
            conn.execute("SELECT 1 FROM meta LIMIT 1").fetchall()  # the snapshot starts here
            yield cls(conn, ledger)
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"ledger read failed: {exc}") from exc
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("COMMIT")
            conn.close()

    def size(self) -> int:
        return int(
            self._conn.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM entries").fetchone()[0]
        )

    def iter_entry_chunks(
        self, start: int = 0, end: int | None = None, chunk: int = 4096
    ) -> Iterator[list[tuple[int, bytes, bytes]]]:
        conn = self._conn
        return _entry_chunks(
            lambda lo, hi: conn.execute(_SELECT_ENTRIES, (lo, hi)).fetchall(), start, end, chunk
        )

    def dump_state(self) -> StateRows:
        return _dump(self._conn)

    def entry(self, index: int) -> bytes:
        row = self._conn.execute("SELECT data FROM entries WHERE idx = ?", (index,)).fetchone()
        if row is None:
            raise LedgerError("no such entry", index=index)
        return _as_bytes(row[0])

    def frontier(self, size: int) -> merkle.Frontier:
        return self._ledger._frontier_of(size, self._conn)

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        conn = self._conn
        return merkle.consistency_proof(
            old, new, lambda level, index: self._ledger._node(level, index, conn)
        )

    def ordered_rows(self, table: str, before: int) -> Iterator[list[tuple[Any, ...]]]:
        sql_table, columns, key, changed = _TABLE_SQL[table]
        # only fixed names are joined in: no value reaches the SQL text
        cur = self._conn.execute(
            f"SELECT {columns} FROM {sql_table} WHERE {changed} < ?"  # noqa: S608
            f" ORDER BY {', '.join(key)}",
            (before,),
        )
        while rows := cur.fetchmany(4096):
            yield rows

    def changed_rows(self, table: str, since: int) -> dict[Any, tuple[Any, ...]]:
        sql_table, columns, _key_cols, changed = _TABLE_SQL[table]
        return {
            row_key(table, r): r
            for r in self._conn.execute(
                f"SELECT {columns} FROM {sql_table} WHERE {changed} >= ?",  # noqa: S608
                (since,),
            )
        }

    def rows_for(self, table: str, keys: Iterable[Any]) -> dict[Any, tuple[Any, ...]]:
        sql_table, columns, key_cols, _changed = _TABLE_SQL[table]
        wanted = list(keys)
        out: dict[Any, tuple[Any, ...]] = {}
        if table == "restrictions":
            for k in wanted:
                out.update(
                    (row_key(table, r), r)
                    for r in self._conn.execute(
                        f"SELECT {columns} FROM {sql_table}"  # noqa: S608
                        " WHERE principal = ? AND boundary = ?",
                        k,
                    )
                )
            return out
        for lo in range(0, len(wanted), 500):
            part = wanted[lo : lo + 500]
            out.update(
                (r[0], r)
                for r in self._conn.execute(
                    f"SELECT {columns} FROM {sql_table}"  # noqa: S608
                    f" WHERE {key_cols[0]} IN ({', '.join('?' * len(part))})",
                    part,
                )
            )
        return out

    def undo_since(self, since: int) -> dict[str, dict[Any, tuple[Any, Any]]]:
        out: dict[str, dict[Any, tuple[Any, Any]]] = {t: {} for t in _UNDO_TABLE.values()}
        for tbl, k1, k2, a, b, _at in self._conn.execute(
            "SELECT tbl, k1, k2, a, b, min(at) FROM state_undo WHERE at >= ? GROUP BY tbl, k1, k2",
            (since,),
        ):
            table = _UNDO_TABLE.get(tbl)
            if table is not None:
                out[table][(k1, k2) if table == "restrictions" else k1] = (a, b)
        return out


def _dump(c: sqlite3.Connection) -> StateRows:
    """Every row of the state tables, exactly as stored: a value of another type than the
    projection's (TEXT where a BLOB belongs, say) is a difference too."""
    return StateRows(
        executions={r[0]: r for r in c.execute(_SELECT_EXECUTIONS)},
        revocations={r[0]: r for r in c.execute("SELECT revocation_id, idx FROM revocations")},
        quarantines={r[0]: r for r in c.execute("SELECT principal, active, idx FROM quarantines")},
        restrictions={
            (r[0], r[1]): r
            for r in c.execute("SELECT principal, boundary, active, idx FROM restrictions")
        },
        settings={r[0]: r for r in c.execute("SELECT k, v, idx FROM state")},
    )


class StateTables:
    """The gate's reads of the state tables, their dump, replacement and pruning (mixed into
    :class:`interlock.ledger.storage.sqlite.SqliteLedger`)."""

    if TYPE_CHECKING:

        def _reader(self) -> contextlib.AbstractContextManager[sqlite3.Connection]: ...

        def _connect(self, *, create: bool = False) -> sqlite3.Connection: ...

    def running_executions(self) -> list[tuple[str, int]]:
        """``(execution id, index of its decision)`` of every execution whose status is
        ``running``, oldest first."""
        with self._reader() as c:
            rows = c.execute(
                "SELECT id, idx FROM executions WHERE status = 'running' ORDER BY idx"
            ).fetchall()
        return [(str(r[0]), int(r[1])) for r in rows]

    def execution(self, exec_id: str) -> Execution | None:
        with self._reader() as c:
            row = c.execute(_SELECT_EXECUTIONS + " WHERE id = ?", (exec_id,)).fetchone()
        return None if row is None else Execution.from_row(_typed(row))

    def trust_state(
        self,
    ) -> tuple[int, frozenset[str], frozenset[str], bool, frozenset[tuple[str, str]]]:
        """``(trust version, revoked ids, quarantined principals, kill switch on, active
        boundary restrictions as (principal, boundary))``, read in one transaction. The version
        counts revocations plus quarantine, kill-switch and restriction records, so any trust
        change gives a new snapshot."""
        with self._reader() as c:
            c.execute("BEGIN")
            try:
                revs = c.execute("SELECT revocation_id FROM revocations").fetchall()
                quar = c.execute("SELECT principal FROM quarantines WHERE active = 1").fetchall()
                restr = c.execute(
                    "SELECT principal, boundary FROM restrictions WHERE active = 1"
                ).fetchall()
                st = dict(
                    c.execute(
                        "SELECT k, v FROM state WHERE k IN ('trust_events', 'kill_switch')"
                    ).fetchall()
                )
            finally:
                c.execute("COMMIT")
        version = len(revs) + int(st.get("trust_events") or 0)
        return (
            version,
            frozenset(str(r[0]) for r in revs),
            frozenset(str(r[0]) for r in quar),
            st.get("kill_switch") == "true",
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

    def settings(self) -> dict[str, tuple[str, int]]:
        """The projection's named values: ``name -> (JSON text, ledger index)`` (see
        :attr:`interlock.ledger.projection.Projection.settings`)."""
        with self._reader() as c:
            rows = c.execute("SELECT k, v, idx FROM state").fetchall()
        return {str(k): (str(v), int(i)) for k, v, i in rows}

    def dump_state(self) -> StateRows:
        """Every row of the governance-state tables, sorted (for comparison with a rebuild),
        read in one transaction."""
        with self._reader() as c:
            c.execute("BEGIN")
            try:
                return _dump(c)
            finally:
                c.execute("COMMIT")

    def frozen(self) -> contextlib.AbstractContextManager[_Frozen]:
        """A consistent read view on its own connection: its entries and its state tables are
        those of one moment, however much other writers append meanwhile (used by the state
        check, so that a check racing an append never reports a false difference). Holds no
        lock that blocks this object's readers or writers.

        Raises:
            LedgerUnavailable: the view cannot be opened.
        """
        return _Frozen.open(cast("SqliteLedger", self))  # a mixin of SqliteLedger

    def forget_undo(self, before: int) -> None:
        """Drop what rows held before changes at indices below ``before`` (a state checkpoint
        at ``before`` no longer needs it).

        Raises:
            LedgerUnavailable: the write failed.
        """
        conn = self._connect()
        try:
            conn.execute("DELETE FROM state_undo WHERE at < ?", (before,))
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"cannot prune the state undo rows: {exc}") from exc
        finally:
            conn.close()

    def replace_state(self, state: StateRows, size: int) -> None:
        """Replace the governance-state tables with ``state``, the projection of the first
        ``size`` entries, provided the log still has exactly ``size`` entries (``interlock
        ledger rebuild-state``). Also brings a ledger of an older schema up to date.

        Raises:
            LedgerUnavailable: the write failed, or the log grew meanwhile (run it again).
        """
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            have = int(conn.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM entries").fetchone()[0])
            if have != size:
                raise LedgerUnavailable("the log grew while its state was rebuilt: run it again")
            for table in _STATE_TABLES:
                conn.execute(f"DROP TABLE IF EXISTS {table}")
            for statement in (*_STATE_SCHEMA.split(";"), *_STATE_TRIGGERS):
                if statement.strip():
                    conn.execute(statement)
            tables: tuple[tuple[str, dict[Any, tuple[Any, ...]]], ...] = (
                (_INSERT_EXECUTION, state.executions),
                ("INSERT INTO revocations VALUES (?, ?)", state.revocations),
                ("INSERT INTO quarantines VALUES (?, ?, ?)", state.quarantines),
                ("INSERT INTO restrictions VALUES (?, ?, ?, ?)", state.restrictions),
                ("INSERT INTO state VALUES (?, ?, ?)", state.settings),
            )
            for statement, rows in tables:
                conn.executemany(statement, rows.values())
            conn.execute(
                "INSERT OR REPLACE INTO meta(k, v) VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
            )
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise LedgerUnavailable(f"cannot rewrite the state tables: {exc}") from exc
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()
