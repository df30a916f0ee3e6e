"""The PostgreSQL driver's side of a fleet (:class:`interlock.ledger.protocols.Fleet`): the
head read, the ``LISTEN interlock_log`` doorbell and the ``nodes`` registry.

Every append transaction ends with ``SELECT pg_notify('interlock_log', '<size>')``
(:mod:`.postgres_commit`): PostgreSQL delivers it at COMMIT, so a listener never hears of
entries it cannot read yet. Notifications are a doorbell, not data: they are lost while a
listener is disconnected, so a node pulls from its watermark after every reconnect and polls
on a timer as well (:mod:`interlock.fleet.node`).
"""

from __future__ import annotations

import contextlib
import json
import select
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import psycopg

from interlock.errors import LedgerUnavailable
from interlock.ledger.protocols import Head, NodeRow
from interlock.ledger.storage.postgres_commit import unavailable

__all__ = ["CHANNEL", "NODES_SCHEMA", "FleetTables", "PgDoorbell"]

#: the channel every append notifies, with the log's new size as the payload
CHANNEL = "interlock_log"

#: created on a node's first heartbeat (a ledger made before fleets existed gets it then)
NODES_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS nodes (node_id text PRIMARY KEY, host text NOT NULL,"
    " pid integer NOT NULL, started text NOT NULL, heartbeat timestamptz NOT NULL,"
    " lease_age_ms bigint, policy_version bigint, log_size bigint, attestation text,"
    " state text NOT NULL)"
)

#: one statement, so one snapshot: the size and the versions of the state it covers
_HEAD = """SELECT
    (SELECT next FROM sequence WHERE id = 1),
    (SELECT COALESCE(MAX(idx), -1) FROM revocations),
    (SELECT COALESCE(MAX(idx), -1) FROM state WHERE k LIKE 'trust.%'),
    (SELECT v FROM state WHERE k = 'trust_events'),
    (SELECT v FROM state WHERE k = 'kill_switch'),
    (SELECT v FROM state WHERE k = 'policy_version'),
    (SELECT v FROM state WHERE k = 'policy_digest'),
    (SELECT v FROM state WHERE k = 'last_ts')"""

_UPSERT_NODE = (
    "INSERT INTO nodes(node_id, host, pid, started, heartbeat, lease_age_ms, policy_version,"
    " log_size, attestation, state) VALUES (%s, %s, %s, %s, now(), %s, %s, %s, %s, %s)"
    " ON CONFLICT (node_id) DO UPDATE SET heartbeat = now(), lease_age_ms ="
    " EXCLUDED.lease_age_ms, policy_version = EXCLUDED.policy_version, log_size ="
    " EXCLUDED.log_size, attestation = EXCLUDED.attestation, state = EXCLUDED.state"
)

_SELECT_NODES = (
    "SELECT node_id, host, pid, started, to_char(heartbeat AT TIME ZONE 'UTC',"
    ' \'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"\'), lease_age_ms, policy_version, log_size,'
    " attestation, state, EXTRACT(EPOCH FROM now() - heartbeat)::float8 FROM nodes"
    " ORDER BY heartbeat DESC, node_id"
)


class PgDoorbell:
    """A dedicated autocommit connection that LISTENs on :data:`CHANNEL`.

    Raises:
        LedgerUnavailable: it cannot connect (from the constructor).
    """

    def __init__(self, url: str, *, kwargs: dict[str, Any]) -> None:
        try:
            self._conn: psycopg.Connection[Any] = psycopg.connect(
                url, autocommit=True, **{**kwargs, "application_name": "interlock-doorbell"}
            )
            self._conn.execute(f"LISTEN {CHANNEL}")
        except psycopg.Error as exc:
            raise unavailable("cannot listen for log appends", exc) from exc

    def wait(self, timeout: float) -> int | None:
        """See :meth:`interlock.ledger.protocols.Doorbell.wait`."""
        got: int | None = None
        try:
            # psycopg reads pending notifications when the socket is readable; select first
            # so that an idle wait costs no round trip (and a lost peer is seen by TCP)
            ready, _, _ = select.select([self._conn.fileno()], [], [], max(0.0, timeout))
            if not ready:
                return None
            for note in self._conn.notifies(timeout=0, stop_after=None):
                try:
                    size = int(note.payload)
                except ValueError:
                    size = -1
                got = size if got is None else max(got, size)
            if got is None:
                # readable without a notification: a server message (or the end of the
                # connection): a no-op round trip tells which
                self._conn.execute("SELECT 1")
                got = -1
        except (psycopg.Error, OSError, ValueError) as exc:
            self.close()
            if isinstance(exc, psycopg.Error):
                raise unavailable("the log's doorbell connection was lost", exc) from exc
            raise LedgerUnavailable(f"the log's doorbell connection was lost: {exc}") from exc
        return got

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.close()


class FleetTables:
    """Mixed into :class:`interlock.ledger.storage.postgres.PostgresLedger`."""

    url: str

    if TYPE_CHECKING:

        def _reader(self) -> contextlib.AbstractContextManager[psycopg.Connection[Any]]: ...

        def _writer(
            self, what: str
        ) -> contextlib.AbstractContextManager[psycopg.Connection[Any]]: ...

        def _connect_kwargs(self) -> tuple[int, dict[str, Any]]: ...

    def head(self) -> Head:
        """See :meth:`interlock.ledger.protocols.Fleet.head`."""
        with self._reader() as c:
            row = c.execute(_HEAD).fetchone()
        if row is None or row[0] is None:
            raise LedgerUnavailable("the log's sequence row cannot be read")
        size, rev, trust, events, kill, version, digest, last = row
        return Head(
            size=int(size),
            trust_mark=f"{int(rev)}:{int(trust)}:{events or 0}:{kill or 'false'}",
            policy_version=int(version) if version is not None else 0,
            policy_digest=str(json.loads(digest)) if digest is not None else None,
            last_ts=int(last) if last is not None else 0,
        )

    def doorbell(self) -> PgDoorbell:
        """See :meth:`interlock.ledger.protocols.Fleet.doorbell`."""
        _timeout, kwargs = self._connect_kwargs()
        return PgDoorbell(self.url, kwargs=kwargs)

    def heartbeat(self, node: NodeRow) -> None:
        """See :meth:`interlock.ledger.protocols.Fleet.heartbeat`."""
        age = None if node.lease_age_s is None else int(node.lease_age_s * 1000)
        with self._writer("node heartbeat failed") as c:
            c.execute(NODES_SCHEMA)
            c.execute(
                _UPSERT_NODE,
                (
                    node.node_id,
                    node.host,
                    node.pid,
                    node.started,
                    age,
                    node.policy_version,
                    node.log_size,
                    node.attestation,
                    node.state[:500],
                ),
            )

    def forget_node(self, node_id: str) -> None:
        """See :meth:`interlock.ledger.protocols.Fleet.forget_node`."""
        with self._writer("node removal failed") as c:
            c.execute(NODES_SCHEMA)
            c.execute("DELETE FROM nodes WHERE node_id = %s", (node_id,))

    def nodes(self) -> list[NodeRow]:
        """See :meth:`interlock.ledger.protocols.Fleet.nodes`."""
        with self._reader() as c:
            exists = c.execute("SELECT to_regclass('nodes') IS NOT NULL").fetchone()
            if not exists or not exists[0]:
                return []
            rows = c.execute(_SELECT_NODES).fetchall()
        return list(_node_rows(rows))


def _node_rows(rows: list[Any]) -> Iterator[NodeRow]:
    for nid, host, pid, started, beat, age, version, size, att, state, silent in rows:
        yield NodeRow(
            node_id=str(nid),
            host=str(host),
            pid=int(pid),
            started=str(started),
            heartbeat=str(beat),
            lease_age_s=None if age is None else int(age) / 1000,
            policy_version=None if version is None else int(version),
            log_size=None if size is None else int(size),
            attestation=None if att is None else str(att),
            state=str(state),
            silent_s=float(silent or 0.0),
        )
