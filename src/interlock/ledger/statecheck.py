"""Checking the log and the state the gate reads: in full, or from a state checkpoint.

The **full check** (:func:`check_log`) is one pass over the whole log as of one moment: every
entry against its leaf hash and the tree against the signed checkpoints, folded into the
projection, beside the stored state tables of that same moment. It costs the whole log.

A **state checkpoint** makes start-up cost the log's suffix and one read of the state tables
instead. After a full check has proven the log up to size ``N`` and the state tables as of
``N``, the gate appends a node-signed ``state.checked`` record holding ``N``, the tree root at
``N``, a digest of the state tables at ``N`` (:func:`state_digest`) and the time floor's row.
:func:`check_since_checkpoint` then:

1. finds the newest such record (the state row ``state_checked`` points at it; the node
   signature on the record decides, not the row);
2. proves the log: the stored tree's right edge at ``N`` has the record's root, every later
   entry matches its leaf hash, and the tree through them has every signed checkpoint's root
   (a checkpoint older than ``N``, such as the anchor, by a consistency proof);
3. recovers the state as of ``N`` — rows last changed before ``N`` as stored, rows changed
   since as the store's undo rows say they were — and requires its digest to be the signed
   one: a row edited, added or removed anywhere, or an undo row that lies, changes the digest;
4. folds the entries after ``N`` onto the recovered state and requires every row they touch,
   and every row changed since ``N``, to be stored exactly as the fold says.

Entries before ``N`` are not read again at start-up: the gate's rolling full check re-reads
the whole log at a bounded CPU share. :func:`check_since_checkpoint` never concludes that the
ledger is corrupt: when it cannot vouch for it (no checkpoint, any difference, anything
unreadable) it raises :class:`Unvouched` and the caller runs the full check, which names the
first differing entry or row.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from interlock.errors import Error
from interlock.ledger import merkle
from interlock.ledger.fold import delta_of_entry, fold_verified
from interlock.ledger.note import NoteVerifier, open_checkpoint
from interlock.ledger.projection import (
    STATE_CHECKED_EVENT,
    Delta,
    Projection,
    StateRows,
    row_key,
    signed_by,
)
from interlock.ledger.verify import LedgerVerifier

if TYPE_CHECKING:
    from interlock.ledger.protocols import FrozenView, GovernanceState

__all__ = [
    "DIGEST_TABLES",
    "CheckStopped",
    "FullCheck",
    "QuickCheck",
    "Unvouched",
    "check_log",
    "check_since_checkpoint",
    "checkpoint_fields",
    "state_digest",
]

#: the tables a state digest covers, in this order (names as :class:`StateRows` has them)
DIGEST_TABLES = ("executions", "revocations", "quarantines", "restrictions", "settings")
#: the state row that names the newest state checkpoint record
CHECKPOINT_ROW = "state_checked"


class CheckStopped(Exception):
    """The full check was asked to stop (its gate is closing) before it finished."""


class Unvouched(Exception):
    """A state checkpoint cannot vouch for the ledger; run the full check."""


@dataclass(frozen=True, slots=True)
class FullCheck:
    """What :func:`check_log` found: the projection rebuilt from the log, the stored tables of
    the same moment (unless not asked for) and the tree root at the projection's size."""

    projection: Projection
    stored: StateRows | None
    root: bytes


@dataclass(frozen=True, slots=True)
class QuickCheck:
    """What :func:`check_since_checkpoint` vouched for: the log's ``size``, the state
    checkpoint it started from (``checkpoint_size`` entries, its record at ``record_index``),
    and the newest timestamp on the log (``last_ts``, microseconds; the time floor)."""

    size: int
    checkpoint_size: int
    record_index: int
    last_ts: int | None


def check_log(
    store: GovernanceState,
    vkey: str,
    checkpoints: Iterable[str],
    *,
    node_public: bytes | None,
    root_public: bytes | None,
    progress: Callable[[int, int], None] | None = None,
    stored: bool = True,
    pause: float = 0.0,
    stop: threading.Event | None = None,
) -> FullCheck:
    """The full check: one pass over the log as of one moment (:meth:`GovernanceState.frozen`):
    every entry against its stored leaf hash and the tree against each signed checkpoint note
    given (RFC 6962, via :class:`interlock.ledger.verify.LedgerVerifier`), folded into a
    projection. Returns it with the stored state tables of the same moment (unless ``stored``
    is false), to compare with :func:`interlock.ledger.projection.first_difference`. ``pause``
    seconds are slept after every chunk of 512 entries (a background check leaves the GIL to
    the threads that decide); when ``stop`` is set the pass ends early with
    :class:`CheckStopped`.

    Raises:
        VerificationError: an entry, the tree or a checkpoint does not verify, or a record is
            malformed (naming its ``index``).
        LedgerError: the ledger cannot be read.
    """
    with store.frozen() as view:
        total = view.size()
        verifier = LedgerVerifier(vkey)
        verifier.expect_checkpoints(checkpoints)
        p = Projection()
        for chunk in view.iter_entry_chunks(0, None, 512):
            verifier.feed_all(chunk)  # the stored leaf hashes are now known to be right
            fold_verified(p, chunk, node_public=node_public, root_public=root_public)
            if progress is not None:
                progress(p.size, total)
            if stop is not None and stop.is_set():
                raise CheckStopped
            if pause:
                # a running gate checks on a background thread: hand the GIL to deciding
                # threads after every chunk (~1-2 ms of work) instead of holding it for up to a
                # whole switch interval at a time
                time.sleep(pause)
        report = verifier.finish()
        rows = view.dump_state() if stored else None
    return FullCheck(p, rows, report.root)


# -- the digest ---------------------------------------------------------------------------------

_encode = msgspec.msgpack.Encoder().encode


def _change_index(table: str, row: tuple[Any, ...]) -> Any:
    return row[5] if table == "executions" else row[-1]


class _Digest:
    """SHA-256 over each table's name and then its rows, in key order, each row MessagePack-
    encoded as stored (types included: TEXT where a BLOB belongs is a different row). Every
    encoding is self-delimiting, so the concatenation has one reading; rows are fed a list at a
    time and the digest does not depend on how they were split into lists."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def table(self, name: str) -> None:
        self._h.update(_encode(name))

    def rows(self, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        n = len(rows)
        # drop the array header (fixarray, array16, array32): only the rows are hashed
        header = 1 if n < 16 else 3 if n < 65536 else 5
        self._h.update(memoryview(_encode(rows))[header:])

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def state_digest(state: StateRows) -> str:
    """The digest of a whole projection (the rows of a rebuild, or of a dump)."""
    d = _Digest()
    for table in DIGEST_TABLES:
        rows: dict[Any, tuple[Any, ...]] = getattr(state, table)
        d.table(table)
        d.rows([rows[k] for k in sorted(rows)])
    return d.hexdigest()


def _view_digest(
    view: FrozenView, before: int, extra: Mapping[str, Mapping[Any, tuple[Any, ...]]]
) -> str:
    """:func:`state_digest` of the stored rows last changed before ``before`` together with
    ``extra`` rows (keys that no such stored row has), streamed from the view in key order."""
    d = _Digest()
    for table in DIGEST_TABLES:
        d.table(table)
        pending = sorted(extra.get(table, {}).items())
        j = 0
        for rows in view.ordered_rows(table, before):
            last = row_key(table, rows[-1])
            if j < len(pending) and pending[j][0] <= last:
                k = j
                while k < len(pending) and pending[k][0] <= last:
                    k += 1
                merged = sorted(
                    [*rows, *(row for _key_, row in pending[j:k])], key=lambda r: row_key(table, r)
                )
                j = k
                d.rows(merged)
            else:
                d.rows(rows)
        d.rows([row for _key_, row in pending[j:]])
    return d.hexdigest()


def checkpoint_fields(check: FullCheck) -> dict[str, Any]:
    """The fields of the ``state.checked`` record that vouches for a full check that passed
    (its stored tables equal to its projection)."""
    p = check.projection
    last = p.settings.get("last_ts")
    return {
        "size": p.size,
        "root": check.root.hex(),
        "digest": state_digest(p.rows()),
        "last_ts": None if last is None else [last[0], last[1]],
    }


# -- the check from a checkpoint ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Checkpoint:
    index: int
    size: int
    root: bytes
    digest: str
    last_ts: tuple[str, int] | None


def _read_checkpoint(view: FrozenView, size: int, node_public: bytes | None) -> _Checkpoint:
    row = view.rows_for("settings", [CHECKPOINT_ROW]).get(CHECKPOINT_ROW)
    if row is None:
        raise Unvouched("the log has no state checkpoint yet")
    index = row[2]
    if not isinstance(index, int) or not 0 <= index < size:
        raise Unvouched("the state checkpoint row names no entry")
    rec = json.loads(view.entry(index))
    if (
        not isinstance(rec, dict)
        or rec.get("type") != "governance"
        or rec.get("event") != STATE_CHECKED_EVENT
        or not signed_by(rec, node_public)
    ):
        raise Unvouched(f"entry {index} is not a node-signed state checkpoint")
    n, root, digest, last = rec.get("size"), rec.get("root"), rec.get("digest"), rec.get("last_ts")
    if not (isinstance(n, int) and 0 < n <= index and isinstance(root, str)):
        raise Unvouched(f"state checkpoint {index} is malformed")
    if not (isinstance(digest, str) and len(digest) == 64 and len(root) == 64):
        raise Unvouched(f"state checkpoint {index} is malformed")
    if last is not None and not (
        isinstance(last, list) and len(last) == 2 and isinstance(last[0], str)
    ):
        raise Unvouched(f"state checkpoint {index} is malformed")
    return _Checkpoint(
        index=index,
        size=n,
        root=bytes.fromhex(root),
        digest=digest,
        last_ts=None if last is None else (last[0], last[1]),
    )


def _touched(d: Delta) -> Iterator[tuple[str, Any]]:
    """The ``(table, key)`` rows a record's change reads or writes."""
    if d.execution is not None:
        yield "executions", d.execution[0]
    if d.status is not None:
        yield "executions", d.status[0]
    for rid in d.revoked:
        yield "revocations", rid
    if d.quarantine is not None:
        yield "quarantines", d.quarantine[0]
    if d.restrict is not None:
        yield "restrictions", (d.restrict[0], d.restrict[1])
    if d.kill_switch is not None:
        yield "settings", "kill_switch"
    if d.trust_event:
        yield "settings", "trust_events"
    if d.policy is not None:
        yield "settings", "policy_version"
        yield "settings", "policy_digest"
    if d.attestation is not None:
        yield "settings", "attestation"
    if d.setting is not None:
        yield "settings", f"trust.{d.setting[0]}"
    if d.checked is not None:
        yield "settings", CHECKPOINT_ROW
    if d.ts is not None:
        yield "settings", "last_ts"


def _undone(
    table: str, key: Any, stored: tuple[Any, ...] | None, undo: tuple[Any, Any], n: int
) -> tuple[Any, ...] | None:
    """The row as it was at the checkpoint (size ``n``), from what it held before its first
    change since: None if what it held then was itself written since (the row is newer)."""
    before, at = undo
    if not isinstance(at, int) or at >= n:
        return None
    if table == "executions":
        if stored is None:
            return None  # nothing to take the unchanging columns from: the digest decides
        return (*stored[:4], before, at, *stored[6:])
    if table == "restrictions":
        return (key[0], key[1], before, at)
    return (key, before, at)


def check_since_checkpoint(
    store: GovernanceState,
    vkey: str,
    checkpoints: Iterable[str],
    *,
    node_public: bytes | None,
    root_public: bytes | None,
) -> QuickCheck:
    """Check the log and the stored state from the newest state checkpoint (see the module
    docstring), as of one moment; ``checkpoints`` are the signed checkpoint notes to hold the
    log to (the newest stored one and the home's anchor).

    Raises:
        Unvouched: the checkpoint cannot vouch for the log and the state as they are stored
            (including: no checkpoint, anything unreadable); run the full check.
    """
    try:
        with store.frozen() as view:
            return _check_view(view, vkey, list(checkpoints), node_public, root_public)
    except Unvouched:
        raise
    except (Error, ValueError, TypeError, KeyError, IndexError, OSError) as exc:
        raise Unvouched(f"{type(exc).__name__}: {exc}") from exc


def _check_view(
    view: FrozenView,
    vkey: str,
    notes: list[str],
    node_public: bytes | None,
    root_public: bytes | None,
) -> QuickCheck:
    size = view.size()
    cp = _read_checkpoint(view, size, node_public)
    n = cp.size

    # 1. the log: the prefix by the signed root at n, the suffix entry by entry
    frontier = view.frontier(n)
    if frontier.root() != cp.root:
        raise Unvouched("the stored tree at the checkpoint's size has another root")
    note_verifier = NoteVerifier.from_vkey(vkey)
    later = []
    for note in notes:
        signed = open_checkpoint(note, note_verifier)
        if signed.size >= n:
            later.append(note)
            continue
        proof = view.consistency_proof(signed.size, n)
        merkle.verify_consistency(signed.size, n, signed.root_hash, cp.root, proof)
    verifier = LedgerVerifier(vkey, start=frontier)
    verifier.expect_checkpoints(later)
    deltas: list[tuple[int, bytes, Delta]] = []
    for chunk in view.iter_entry_chunks(n, None, 512):
        verifier.feed_all(chunk)
        for idx, leaf, data in chunk:
            deltas.append((idx, leaf, delta_of_entry(data, node_public, root_public)))
    verifier.finish()

    # 2. the state as of n: stored where unchanged since, else as the undo rows say
    touched: dict[str, set[Any]] = {t: set() for t in DIGEST_TABLES}
    for _idx, _leaf, d in deltas:
        for table, key in _touched(d):
            touched[table].add(key)
    undo = view.undo_since(n)
    undo.setdefault("settings", {}).pop("last_ts", None)
    if cp.last_ts is not None:
        undo["settings"]["last_ts"] = cp.last_ts
    stored: dict[str, dict[Any, tuple[Any, ...]]] = {}
    at_n: dict[str, dict[Any, tuple[Any, ...] | None]] = {}
    extra: dict[str, dict[Any, tuple[Any, ...]]] = {}
    for table in DIGEST_TABLES:
        changed = view.changed_rows(table, n)
        undone = undo.get(table, {})
        keys = touched[table] | changed.keys() | undone.keys()
        rows = {**view.rows_for(table, keys - changed.keys()), **changed}
        stored[table] = rows
        at_n[table] = {}
        extra[table] = {}
        for key in keys:
            row = rows.get(key)
            if row is not None and _change_index(table, row) < n:
                at_n[table][key] = row  # unchanged since n: in the digest as stored
                continue
            was = _undone(table, key, row, undone[key], n) if key in undone else None
            at_n[table][key] = was
            if was is not None:
                extra[table][key] = was
    if _view_digest(view, n, extra) != cp.digest:
        raise Unvouched("the state tables as of the checkpoint do not have its digest")

    # 3. the suffix folded onto the state as of n gives every row it touches
    p = Projection(size=n)
    for table in DIGEST_TABLES:
        for key in touched[table]:
            row = at_n[table][key]
            if row is not None:
                p.seed(table, key, row)
    for idx, leaf, d in deltas:
        p.apply_delta(idx, leaf, d)
    folded = p.rows()
    for table in DIGEST_TABLES:
        want: dict[Any, tuple[Any, ...]] = getattr(folded, table)
        for key, was in at_n[table].items():
            expected = want.get(key) if key in touched[table] else was
            if stored[table].get(key) != expected:
                raise Unvouched(f"state table {table} row {key!r} differs from the log")
    final = p.settings.get("last_ts")
    return QuickCheck(
        size=size,
        checkpoint_size=n,
        record_index=cp.index,
        last_ts=None if final is None else int(final[0]),
    )
