"""The PostgreSQL driver's governance-state tables: the projection of the log (DESIGN I8),
written in the append transaction of the entries that change it, read by the gate, dumped and
replaced by a rebuild, and the undo rows a state checkpoint uses.

The semantics are those of the SQLite driver's tables, statement for statement (the state
machine test holds both equal to :class:`interlock.ledger.projection.Projection`); only the
dialect differs: ``ON CONFLICT`` for ``INSERT OR IGNORE / REPLACE``, PL/pgSQL triggers.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import psycopg

from interlock.errors import LedgerError, LedgerUnavailable
from interlock.ledger import merkle
from interlock.ledger.projection import STATUS_FROM, Delta, Execution, StateRows, row_key

if TYPE_CHECKING:
    from interlock.ledger.storage.postgres import PostgresLedger

#: the state tables' own statements; each CREATE stands alone (``replace_state`` replays them)
STATE_SCHEMA: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS executions (
        id text PRIMARY KEY,
        idx bigint NOT NULL,
        leaf_hash bytea NOT NULL,
        effect text NOT NULL,
        status text NOT NULL,
        status_idx bigint NOT NULL,
        parent text,
        depth integer NOT NULL,
        principal text
    )""",
    "CREATE INDEX IF NOT EXISTS executions_running ON executions(status) WHERE status = 'running'",
    "CREATE TABLE IF NOT EXISTS revocations (revocation_id text PRIMARY KEY, idx bigint NOT NULL)",
    "CREATE TABLE IF NOT EXISTS quarantines (principal text PRIMARY KEY,"
    " active integer NOT NULL, idx bigint NOT NULL)",
    """CREATE TABLE IF NOT EXISTS restrictions (
        principal text NOT NULL,
        boundary text NOT NULL,
        active integer NOT NULL,
        idx bigint NOT NULL,
        PRIMARY KEY (principal, boundary)
    )""",
    "CREATE TABLE IF NOT EXISTS state (k text PRIMARY KEY, v text NOT NULL, idx bigint NOT NULL)",
    # ``a`` is what the changeable value held (text; quarantines' and restrictions' ``active``
    # as its digits), ``b`` the index that had set it
    "CREATE TABLE IF NOT EXISTS state_undo (tbl text NOT NULL, k1 text NOT NULL,"
    " k2 text NOT NULL, at bigint NOT NULL, a text, b bigint)",
    "CREATE INDEX IF NOT EXISTS state_undo_at ON state_undo(at)",
)

#: what a row held before the record at ``at`` changed it, kept until the next state
#: checkpoint (see the SQLite driver: an accelerator only, the checkpoint's digest decides)
STATE_TRIGGERS: tuple[str, ...] = (
    """CREATE OR REPLACE FUNCTION interlock_undo_executions() RETURNS trigger
    LANGUAGE plpgsql AS $$ BEGIN
        INSERT INTO state_undo VALUES
            ('executions', OLD.id, '', NEW.status_idx, OLD.status, OLD.status_idx);
        RETURN NEW;
    END $$""",
    "CREATE OR REPLACE TRIGGER executions_undo BEFORE UPDATE OF status, status_idx"
    " ON executions FOR EACH ROW EXECUTE FUNCTION interlock_undo_executions()",
    """CREATE OR REPLACE FUNCTION interlock_undo_quarantines() RETURNS trigger
    LANGUAGE plpgsql AS $$ BEGIN
        INSERT INTO state_undo SELECT 'quarantines', principal, '', NEW.idx, active::text, idx
            FROM quarantines WHERE principal = NEW.principal;
        RETURN NEW;
    END $$""",
    "CREATE OR REPLACE TRIGGER quarantines_undo BEFORE INSERT ON quarantines"
    " FOR EACH ROW EXECUTE FUNCTION interlock_undo_quarantines()",
    """CREATE OR REPLACE FUNCTION interlock_undo_restrictions() RETURNS trigger
    LANGUAGE plpgsql AS $$ BEGIN
        INSERT INTO state_undo SELECT 'restrictions', principal, boundary, NEW.idx,
            active::text, idx
            FROM restrictions WHERE principal = NEW.principal AND boundary = NEW.boundary;
        RETURN NEW;
    END $$""",
    "CREATE OR REPLACE TRIGGER restrictions_undo BEFORE INSERT ON restrictions"
    " FOR EACH ROW EXECUTE FUNCTION interlock_undo_restrictions()",
    """CREATE OR REPLACE FUNCTION interlock_undo_state() RETURNS trigger
    LANGUAGE plpgsql AS $$ BEGIN
        INSERT INTO state_undo SELECT 'state', k, '', NEW.idx, v, idx FROM state
            WHERE k = NEW.k;
        RETURN NEW;
    END $$""",
    "CREATE OR REPLACE TRIGGER state_undo_state BEFORE INSERT ON state FOR EACH ROW"
    " WHEN (NEW.k <> 'last_ts') EXECUTE FUNCTION interlock_undo_state()",
)

_STATE_TABLES = ("executions", "revocations", "quarantines", "restrictions", "state", "state_undo")

_INSERT_EXECUTION = (
    "INSERT INTO executions(id, idx, leaf_hash, effect, status, status_idx, parent, depth,"
    " principal) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
)

_SELECT_EXECUTIONS = (
    "SELECT id, idx, leaf_hash, effect, status, status_idx, parent, depth, principal"
    " FROM executions"
)

#: a status moves only forward (STATUS_FROM)
_UPDATE_STATUS = (
    "UPDATE executions SET status = %s, status_idx = %s WHERE id = %s AND status = ANY(%s)"
)

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

_SELECT_ENTRIES = (
    "SELECT idx, leaf_hash, data FROM entries WHERE idx >= %s AND idx < %s ORDER BY idx"
)


def apply_changes(cur: psycopg.Cursor[Any], changes: Sequence[tuple[int, bytes, Delta]]) -> None:
    """Write records' state changes into the projection tables, in ledger order, with exactly
    the semantics of :meth:`interlock.ledger.projection.Projection.apply_delta` (and of the
    SQLite driver's ``_apply_changes``)."""
    execs: list[tuple[Any, ...]] = []
    last_ts: tuple[int, int] | None = None

    def flush() -> None:
        if execs:
            # the first decision for an id is the one (Projection.apply_delta)
            cur.executemany(_INSERT_EXECUTION + " ON CONFLICT (id) DO NOTHING", execs)
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
            cur.execute(_UPDATE_STATUS, (status, idx, eid, list(STATUS_FROM[status])))
        for rid in d.revoked:
            cur.execute(
                "INSERT INTO revocations(revocation_id, idx) VALUES (%s, %s)"
                " ON CONFLICT (revocation_id) DO NOTHING",
                (rid, idx),
            )
        if d.quarantine is not None:
            principal, on = d.quarantine
            cur.execute(
                "INSERT INTO quarantines(principal, active, idx) VALUES (%s, %s, %s)"
                " ON CONFLICT (principal) DO UPDATE SET active = excluded.active,"
                " idx = excluded.idx",
                (principal, int(on), idx),
            )
        if d.restrict is not None:
            principal, boundary, on = d.restrict
            cur.execute(
                "INSERT INTO restrictions(principal, boundary, active, idx)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (principal, boundary) DO UPDATE"
                " SET active = excluded.active, idx = excluded.idx",
                (principal, boundary, int(on), idx),
            )
        if d.kill_switch is not None:
            _set_state(cur, "kill_switch", "true" if d.kill_switch else "false", idx)
        if d.trust_event:
            cur.execute(
                "INSERT INTO state(k, v, idx) VALUES ('trust_events', '1', %s) ON CONFLICT (k)"
                " DO UPDATE SET v = (state.v::bigint + 1)::text, idx = excluded.idx",
                (idx,),
            )
        if d.policy is not None:
            version, pd = d.policy
            row = cur.execute("SELECT v FROM state WHERE k = 'policy_version'").fetchone()
            if row is None or version >= int(row[0]):
                _set_state(cur, "policy_version", str(version), idx)
                _set_state(cur, "policy_digest", json.dumps(pd), idx)
        if d.attestation is not None:
            _set_state(cur, "attestation", json.dumps(d.attestation), idx)
        if d.setting is not None:
            name, value = d.setting
            _set_state(cur, f"trust.{name}", value, idx)
        if d.checked is not None:
            _set_state(cur, "state_checked", str(d.checked), idx)
    flush()
    if last_ts is not None:
        cur.execute(
            "INSERT INTO state(k, v, idx) VALUES ('last_ts', %s, %s) ON CONFLICT (k) DO UPDATE"
            " SET v = excluded.v, idx = excluded.idx"
            " WHERE excluded.v::bigint > state.v::bigint",
            (str(last_ts[0]), last_ts[1]),
        )


def _set_state(cur: psycopg.Cursor[Any], key: str, value: str, idx: int) -> None:
    cur.execute(
        "INSERT INTO state(k, v, idx) VALUES (%s, %s, %s)"
        " ON CONFLICT (k) DO UPDATE SET v = excluded.v, idx = excluded.idx",
        (key, value, idx),
    )


def dump(conn: psycopg.Connection[Any]) -> StateRows:
    """Every row of the state tables, exactly as stored."""
    return StateRows(
        executions={r[0]: r for r in conn.execute(_SELECT_EXECUTIONS)},
        revocations={r[0]: r for r in conn.execute("SELECT revocation_id, idx FROM revocations")},
        quarantines={
            r[0]: r for r in conn.execute("SELECT principal, active, idx FROM quarantines")
        },
        restrictions={
            (r[0], r[1]): r
            for r in conn.execute("SELECT principal, boundary, active, idx FROM restrictions")
        },
        settings={r[0]: r for r in conn.execute("SELECT k, v, idx FROM state")},
    )


@contextlib.contextmanager
def snapshot(conn: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    """A read-only transaction whose statements all see one moment (REPEATABLE READ) on an
    autocommit connection."""
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        yield conn
    finally:
        if not conn.closed:
            conn.execute("ROLLBACK")


_cursor_names = itertools.count()


class Frozen:
    """A read transaction on a pooled connection of its own (see :meth:`StateTables.frozen`)."""

    def __init__(self, conn: psycopg.Connection[Any], ledger: PostgresLedger) -> None:
        self._conn = conn
        self._ledger = ledger

    @classmethod
    @contextlib.contextmanager
    def open(cls, ledger: PostgresLedger) -> Iterator[Frozen]:
        try:
            with ledger.connection() as conn, snapshot(conn):
                yield cls(conn, ledger)
        except psycopg.Error as exc:
            raise LedgerUnavailable(f"ledger read failed: {exc}") from exc

    def size(self) -> int:
        row = self._conn.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM entries").fetchone()
        return int(row[0]) if row else 0

    def iter_entry_chunks(
        self, start: int = 0, end: int | None = None, chunk: int = 4096
    ) -> Iterator[list[tuple[int, bytes, bytes]]]:
        conn = self._conn
        return entry_chunks(
            lambda lo, hi: conn.execute(_SELECT_ENTRIES, (lo, hi)).fetchall(), start, end, chunk
        )

    def dump_state(self) -> StateRows:
        return dump(self._conn)

    def entry(self, index: int) -> bytes:
        row = self._conn.execute("SELECT data FROM entries WHERE idx = %s", (index,)).fetchone()
        if row is None:
            raise LedgerError("no such entry", index=index)
        return bytes(row[0])

    def frontier(self, size: int) -> merkle.Frontier:
        return self._ledger._frontier_of(size, self._conn)

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        conn = self._conn
        return merkle.consistency_proof(
            old, new, lambda level, index: self._ledger._node(level, index, conn)
        )

    def ordered_rows(self, table: str, before: int) -> Iterator[list[tuple[Any, ...]]]:
        sql_table, columns, key, changed = _TABLE_SQL[table]
        # a server-side cursor inside the view's transaction: rows stream, a list at a time
        cur = self._conn.cursor(name=f"interlock_rows_{next(_cursor_names)}")
        try:
            # only fixed names are joined in: no value reaches the SQL text
            cur.execute(
                f"SELECT {columns} FROM {sql_table} WHERE {changed} < %s"  # noqa: S608
                f" ORDER BY {', '.join(key)}",
                (before,),
            )
            while rows := cur.fetchmany(4096):
                yield rows
        finally:
            cur.close()

    def changed_rows(self, table: str, since: int) -> dict[Any, tuple[Any, ...]]:
        sql_table, columns, _key_cols, changed = _TABLE_SQL[table]
        return {
            row_key(table, r): r
            for r in self._conn.execute(
                f"SELECT {columns} FROM {sql_table} WHERE {changed} >= %s",  # noqa: S608
                (since,),
            )
        }

    def rows_for(self, table: str, keys: Iterable[Any]) -> dict[Any, tuple[Any, ...]]:
        sql_table, columns, key_cols, _changed = _TABLE_SQL[table]
        wanted = list(keys)
        if not wanted:
            return {}
        if table == "restrictions":
            rows = self._conn.execute(
                f"SELECT {columns} FROM {sql_table} r JOIN unnest(%s::text[], %s::text[])"  # noqa: S608
                " AS k(p, b) ON r.principal = k.p AND r.boundary = k.b",
                ([k[0] for k in wanted], [k[1] for k in wanted]),
            )
            return {row_key(table, r): r for r in rows}
        return {
            r[0]: r
            for r in self._conn.execute(
                f"SELECT {columns} FROM {sql_table} WHERE {key_cols[0]} = ANY(%s)",  # noqa: S608
                (wanted,),
            )
        }

    def undo_since(self, since: int) -> dict[str, dict[Any, tuple[Any, Any]]]:
        out: dict[str, dict[Any, tuple[Any, Any]]] = {t: {} for t in _UNDO_TABLE.values()}
        for tbl, k1, k2, a, b in self._conn.execute(
            "SELECT DISTINCT ON (tbl, k1, k2) tbl, k1, k2, a, b FROM state_undo"
            " WHERE at >= %s ORDER BY tbl, k1, k2, at",
            (since,),
        ):
            table = _UNDO_TABLE.get(tbl)
            if table is None:
                continue
            before: Any = a
            if table in ("quarantines", "restrictions"):
                # ``active`` is kept as its digits; what is not a number is not believed
                before = int(a) if isinstance(a, str) and a.lstrip("-").isdigit() else a
            out[table][(k1, k2) if table == "restrictions" else k1] = (before, b)
        return out


def entry_chunks(
    read: Any, start: int, end: int | None, chunk: int
) -> Iterator[list[tuple[int, bytes, bytes]]]:
    """``(index, leaf hash, data)`` rows from ``start`` (to ``end``), ``chunk`` at a time, each
    chunk read by ``read(lo, hi)``."""
    pos = start
    while True:
        hi = pos + chunk if end is None else min(end, pos + chunk)
        if hi <= pos:
            return
        rows = read(pos, hi)
        if not rows:
            return
        yield [(int(i), bytes(lh), bytes(d)) for i, lh, d in rows]
        pos = int(rows[-1][0]) + 1


def typed_execution(row: Sequence[Any]) -> Execution:
    return Execution.from_row(
        (
            str(row[0]),
            int(row[1]),
            bytes(row[2]),
            str(row[3]),
            str(row[4]),
            int(row[5]),
            None if row[6] is None else str(row[6]),
            int(row[7]),
            None if row[8] is None else str(row[8]),
        )
    )


def replace_tables(cur: psycopg.Cursor[Any], state: StateRows) -> None:
    """Drop and recreate the state tables (and their triggers), filled with ``state``."""
    cur.execute("DROP TABLE IF EXISTS " + ", ".join(_STATE_TABLES))
    for statement in (*STATE_SCHEMA, *STATE_TRIGGERS):
        cur.execute(statement)
    tables: tuple[tuple[str, dict[Any, tuple[Any, ...]]], ...] = (
        (_INSERT_EXECUTION, state.executions),
        ("INSERT INTO revocations VALUES (%s, %s)", state.revocations),
        ("INSERT INTO quarantines VALUES (%s, %s, %s)", state.quarantines),
        ("INSERT INTO restrictions VALUES (%s, %s, %s, %s)", state.restrictions),
        ("INSERT INTO state VALUES (%s, %s, %s)", state.settings),
    )
    for statement, rows in tables:
        if rows:
            cur.executemany(statement, list(rows.values()))


class StateTables:
    """The gate's reads of the state tables, their dump, replacement and pruning (mixed into
    :class:`interlock.ledger.storage.postgres.PostgresLedger`)."""

    if TYPE_CHECKING:

        def _reader(self) -> contextlib.AbstractContextManager[psycopg.Connection[Any]]: ...

        def _writer(
            self, what: str
        ) -> contextlib.AbstractContextManager[psycopg.Connection[Any]]: ...

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
            row = c.execute(_SELECT_EXECUTIONS + " WHERE id = %s", (exec_id,)).fetchone()
        return None if row is None else typed_execution(row)

    def trust_state(
        self,
    ) -> tuple[int, frozenset[str], frozenset[str], bool, frozenset[tuple[str, str]]]:
        """``(trust version, revoked ids, quarantined principals, kill switch on, active
        boundary restrictions)``, read as of one moment (see the SQLite driver)."""
        with self._reader() as c, snapshot(c):
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
        """The projection's named values: ``name -> (JSON text, ledger index)``."""
        with self._reader() as c:
            rows = c.execute("SELECT k, v, idx FROM state").fetchall()
        return {str(k): (str(v), int(i)) for k, v, i in rows}

    def dump_state(self) -> StateRows:
        """Every row of the governance-state tables, read as of one moment."""
        with self._reader() as c, snapshot(c):
            return dump(c)

    def frozen(self) -> contextlib.AbstractContextManager[Frozen]:
        """A consistent read view on a pooled connection of its own (REPEATABLE READ): its
        entries and its state tables are those of one moment, however much other writers —
        on this node or another — append meanwhile. Blocks no writer.

        Raises:
            LedgerUnavailable: the view cannot be opened or read.
        """
        return Frozen.open(self)  # type: ignore[arg-type]  # a mixin of PostgresLedger

    def forget_undo(self, before: int) -> None:
        """Drop what rows held before changes at indices below ``before``.

        Raises:
            LedgerUnavailable: the write failed.
        """
        with self._writer("cannot prune the state undo rows") as conn:
            conn.execute("DELETE FROM state_undo WHERE at < %s", (before,))

    def replace_state(self, state: StateRows, size: int) -> None:
        """Replace the governance-state tables with ``state``, the projection of the first
        ``size`` entries, provided the log still has exactly ``size`` entries (``interlock
        ledger rebuild-state``); holds the sequence row, so no node appends meanwhile.

        Raises:
            LedgerUnavailable: the write failed, or the log grew meanwhile (run it again).
        """
        with self._writer("cannot rewrite the state tables") as conn, conn.transaction():
            cur = conn.cursor()
            cur.execute("SELECT set_config('statement_timeout', '0', true)")
            cur.execute("SELECT next FROM sequence WHERE id = 1 FOR UPDATE")
            row = cur.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM entries").fetchone()
            if row is None or int(row[0]) != size:
                raise LedgerUnavailable("the log grew while its state was rebuilt: run it again")
            replace_tables(cur, state)
            cur.execute(
                "INSERT INTO meta(k, v) VALUES ('schema', %s)"
                " ON CONFLICT (k) DO UPDATE SET v = excluded.v",
                (str(SCHEMA_VERSION),),
            )


#: the PostgreSQL schema's version (its own numbering: the drivers share no code)
SCHEMA_VERSION = 1
