"""What everything above storage depends on: the log and the governance state, as Protocols.

    >>> def size_of(log: Log) -> int:
    ...     return log.size()

Two small typed interfaces, as httpx defines its transports: :class:`Log` (append a batch,
read entries, proofs, checkpoints, tiles) and :class:`GovernanceState` (the projection's
reads, its dump for checking and its rebuild). The gate, CLI, server and audit code use only
these; the drivers (``storage/sqlite.py`` today, PostgreSQL next) implement both and share no
code. Nothing outside a driver runs SQL or reaches into a driver's private members.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from interlock.ledger.merkle import Frontier
from interlock.ledger.note import NoteSigner, NoteVerifier
from interlock.ledger.projection import NO_CHANGE, Delta, Execution, StateRows

__all__ = [
    "Append",
    "AppendResult",
    "Doorbell",
    "Durability",
    "Fleet",
    "FrozenView",
    "GovernanceState",
    "Head",
    "Log",
    "LogReader",
    "NodeRow",
    "Store",
    "StoredCheckpoint",
]


class Durability(StrEnum):
    """``full``: each commit is fsync'ed before the caller is answered (survives power loss).
    ``process``: committed to the WAL without fsync (survives a process crash only)."""

    FULL = "full"
    PROCESS = "process"


@dataclass(frozen=True, slots=True, kw_only=True)
class Append:
    """One record to append, with what must become durable in the same transaction: its
    payload blobs and its governance-state change (:func:`interlock.ledger.projection.delta_of`
    of the record itself, so the stored state is always the projection of the log)."""

    record: bytes
    blobs: dict[str, bytes] = field(default_factory=dict)
    state: Delta = NO_CHANGE


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


class LogReader(Protocol):
    """Reading entries in order: all a projection rebuild needs."""

    def size(self) -> int:
        """Number of committed entries."""
        ...

    def iter_entry_chunks(
        self, start: int = 0, end: int | None = None, chunk: int = 4096
    ) -> Iterator[list[tuple[int, bytes, bytes]]]:
        """``(index, stored leaf hash, data)`` rows in index order, a list at a time."""
        ...


class FrozenView(LogReader, Protocol):
    """The log and the state tables as of one moment (see :meth:`GovernanceState.frozen`)."""

    def dump_state(self) -> StateRows: ...

    def entry(self, index: int) -> bytes: ...

    def frontier(self, size: int) -> Frontier:
        """The stored tree's right edge at ``size`` (read from stored hashes, not verified)."""
        ...

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        """RFC 9162 consistency proof from stored hashes (for a verifier to check)."""
        ...

    # What a state checkpoint (:mod:`interlock.ledger.state_checkpoint`) reads. ``table`` is
    # a :class:`StateRows` field name; rows are as :meth:`dump_state` gives them; a key is the
    # row's first column (for restrictions, its first two as a tuple); a row's *change index*
    # is the ledger index that last changed it (for executions ``status_idx``, else ``idx``).

    def ordered_rows(self, table: str, before: int) -> Iterator[list[tuple[Any, ...]]]:
        """Rows whose change index is below ``before``, in key order, a list at a time."""
        ...

    def changed_rows(self, table: str, since: int) -> dict[Any, tuple[Any, ...]]:
        """Rows whose change index is ``since`` or more, by key."""
        ...

    def rows_for(self, table: str, keys: Iterable[Any]) -> dict[Any, tuple[Any, ...]]:
        """The rows with these keys that exist, by key."""
        ...

    def undo_since(self, since: int) -> dict[str, dict[Any, tuple[Any, Any]]]:
        """Per table (executions, quarantines, restrictions, settings), for each key changed
        at index ``since`` or later: what its changeable columns held before the first such
        change (executions: status and its index; others: value and its index). Kept by the
        store, not proven: a state checkpoint's digest decides whether to believe it."""
        ...


class Log(LogReader, Protocol):
    """An append-only RFC 6962 log with C2SP checkpoints (DESIGN §6).

    Every method that reads or writes raises ``LedgerUnavailable`` when storage fails and
    ``LedgerCorrupt`` when what it stores disagrees with its own hashes.
    """

    signer: NoteSigner | None
    durability: Durability

    def append(self, items: Sequence[Append], *, timeout: float = 5.0) -> list[AppendResult]:
        """Commit ``items`` durably, in order, with their blobs and state changes, in one
        transaction; return their indices only once committed (DESIGN I1)."""
        ...

    def checkpoint(self) -> StoredCheckpoint | None:
        """Sign a checkpoint of everything committed; return the latest one."""
        ...

    def checkpoints(self) -> list[StoredCheckpoint]: ...

    def latest_checkpoint(self) -> StoredCheckpoint | None: ...

    def entry(self, index: int) -> bytes: ...

    def leaf_hash_at(self, index: int) -> bytes: ...

    def iter_entries(
        self, start: int = 0, end: int | None = None
    ) -> Iterator[tuple[int, bytes, bytes]]: ...

    def blob(self, digest: str) -> bytes | None: ...

    def node(self, level: int, index: int) -> bytes: ...

    def root_at(self, size: int) -> bytes: ...

    def inclusion_proof(self, index: int, size: int) -> list[bytes]: ...

    def consistency_proof(self, old: int, new: int) -> list[bytes]: ...

    def stored_tile(self, level: int, n: int) -> tuple[bytes, bytes, bytes] | None:
        """A persisted full tile ``(hashes, internal nodes, root)``, for verifiers."""
        ...

    def self_check(self, verifier: NoteVerifier) -> None:
        """The latest checkpoint verifies and matches the tree; later entries match their
        leaf hashes. Raises ``LedgerCorrupt``."""
        ...

    def close(self) -> None: ...


class GovernanceState(Protocol):
    """The projection of the log that the gate reads (:mod:`interlock.ledger.projection`)."""

    def execution(self, exec_id: str) -> Execution | None: ...

    def running_executions(self) -> list[tuple[str, int]]: ...

    def trust_state(
        self,
    ) -> tuple[int, frozenset[str], frozenset[str], bool, frozenset[tuple[str, str]]]: ...

    def restrictions(self) -> frozenset[tuple[str, str]]: ...

    def quarantines(self) -> list[tuple[str, bool, int]]: ...

    def settings(self) -> dict[str, tuple[str, int]]: ...

    def dump_state(self) -> StateRows: ...

    def frozen(self) -> AbstractContextManager[FrozenView]:
        """A consistent read of the log and the state tables together."""
        ...

    def replace_state(self, state: StateRows, size: int) -> None:
        """Replace the state tables with the projection of the first ``size`` entries."""
        ...

    def forget_undo(self, before: int) -> None:
        """Drop undo rows of changes at indices below ``before``."""
        ...


class Store(Log, GovernanceState, Protocol):
    """A storage driver: the log and its projection in one place, written together."""


# -- a fleet of nodes on one shared log (PostgreSQL) -------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Head:
    """The log's head as one read saw it: the committed size and what a node needs to tell
    whether its governance state is current (the projection *at* that size or later)."""

    size: int
    #: changes whenever the trust state (revocations, quarantines, restrictions, the kill
    #: switch, trust settings) changes: re-read :meth:`GovernanceState.trust_state` then
    trust_mark: str
    #: the highest policy version activated on the log and its bundle digest (0, None: none)
    policy_version: int
    policy_digest: str | None
    #: the latest timestamp on the log, µs (the time floor), 0 when none
    last_ts: int


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeRow:
    """One node of a fleet as it last reported itself (``interlock nodes``)."""

    node_id: str
    host: str
    pid: int
    started: str
    heartbeat: str
    #: seconds since the node last confirmed the log's head (None: never)
    lease_age_s: float | None
    policy_version: int | None
    log_size: int | None
    attestation: str | None
    #: ``ok`` or the DESIGN §3 code the node denies everything with, then its detail
    state: str
    #: seconds since the heartbeat, as the database's clock sees it (filled on read)
    silent_s: float = 0.0


class Doorbell(Protocol):
    """A dedicated listening connection: rings when another writer committed entries."""

    def wait(self, timeout: float) -> int | None:
        """Block up to ``timeout`` seconds for notifications; return the largest log size
        any of them announced (-1 when one carried none), or None on timeout.

        Raises:
            LedgerUnavailable: the connection was lost (notifications sent meanwhile are
                lost too: pull from the watermark after reconnecting).
        """
        ...

    def close(self) -> None: ...


@runtime_checkable
class Fleet(Protocol):
    """What a shared store offers the nodes of a fleet (the PostgreSQL driver): a cheap read
    of the head, a doorbell, and the node registry. SQLite homes have no fleet."""

    def head(self) -> Head:
        """One round trip: the committed size and the projection's versions, read after
        the size (so the state covers at least that many entries).

        Raises:
            LedgerUnavailable: storage failed.
        """
        ...

    def doorbell(self) -> Doorbell:
        """Open a listening connection (``LISTEN interlock_log``).

        Raises:
            LedgerUnavailable: it cannot be opened.
        """
        ...

    def heartbeat(self, node: NodeRow) -> None:
        """Register ``node`` or refresh its row (the database stamps the heartbeat).

        Raises:
            LedgerUnavailable: storage failed.
        """
        ...

    def forget_node(self, node_id: str) -> None:
        """Remove ``node_id``'s row (a node that stops cleanly; a crashed one stays, silent).

        Raises:
            LedgerUnavailable: storage failed.
        """
        ...

    def nodes(self) -> list[NodeRow]:
        """Every registered node, most recent heartbeat first.

        Raises:
            LedgerUnavailable: storage failed.
        """
        ...
