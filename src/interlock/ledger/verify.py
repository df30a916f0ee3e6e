"""Verification of Interlock ledger evidence: proof bundles and whole logs.

    v = LedgerVerifier(vkey)
    v.expect_checkpoints(stored_checkpoint_notes)
    v.feed_all(rows)    # (index, stored leaf hash, data) in index order
    report = v.finish()
    entry = verify_proof_bundle(open("e.tlog-proof").read(), vkey)

This module never imports the ledger's storage (or anything that writes): an auditor holding
only the log's verifier key and exported data can use it alone. Every function returns a value
or ``None``, or raises :class:`~interlock.errors.VerificationError` naming what failed and, for
a log, the ``index`` of the first bad entry.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable
from dataclasses import dataclass

from interlock.errors import UsageError, VerificationError
from interlock.ledger.merkle import Frontier, leaf_hash, verify_inclusion
from interlock.ledger.note import Checkpoint, NoteVerifier, open_checkpoint
from interlock.ledger.proof import parse_proof

__all__ = [
    "LedgerVerifier",
    "VerifiedEntry",
    "VerifyReport",
    "verify_proof_bundle",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedEntry:
    """An entry proven to be at ``index`` in the log's signed tree of ``tree_size`` leaves."""

    index: int
    tree_size: int
    data: bytes
    leaf_hash: bytes
    checkpoint: Checkpoint


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyReport:
    """The outcome of a full-log verification that passed."""

    #: entries fed and re-hashed
    entries: int
    #: signed checkpoints whose root was matched against the recomputed tree
    checkpoints: int
    #: root of the recomputed tree of ``size`` leaves
    root: bytes
    size: int
    #: the largest size of a matched signed checkpoint: entries past it are not yet signed
    covered: int


def verify_proof_bundle(text: str, vkey: str) -> VerifiedEntry:
    """Verify a tlog-proof@v1 evidence bundle whose ``extra`` line carries the entry bytes.

    Steps (c2sp.org/tlog-proof §Verifying): parse; verify the checkpoint's signature with
    ``vkey`` and that its origin is the key's name; hash ``extra`` as the leaf
    (RFC 6962 §2.1); verify the inclusion proof against the checkpoint's root (RFC 9162
    §2.1.3.2).

    Raises:
        VerificationError: if the bundle is malformed, the vkey is malformed, the checkpoint
            signature or origin is wrong, the bundle carries no entry bytes, or the inclusion
            proof does not verify. The message says which.
    """
    bundle = parse_proof(text)
    verifier = NoteVerifier.from_vkey(vkey)
    try:
        cp = open_checkpoint(bundle.checkpoint_note, verifier)
    except VerificationError as exc:
        raise VerificationError(f"proof bundle checkpoint: {exc.message}", **exc.evidence) from exc
    if bundle.extra is None:
        raise VerificationError(
            "proof bundle carries no entry data (no extra line)", index=bundle.index
        )
    lh = leaf_hash(bundle.extra)
    try:
        verify_inclusion(bundle.index, cp.size, lh, bundle.inclusion, cp.root_hash)
    except VerificationError as exc:
        raise VerificationError(
            f"proof bundle inclusion proof: {exc.message}", **exc.evidence
        ) from exc
    return VerifiedEntry(
        index=bundle.index, tree_size=cp.size, data=bundle.extra, leaf_hash=lh, checkpoint=cp
    )


class LedgerVerifier:
    """Streaming verification of a whole log against its signed checkpoints.

    Feed every entry in index order from 0; announce the stored checkpoints (up front with
    :meth:`expect_checkpoints`, or as they are met with :meth:`check_checkpoint`). Each entry's
    data is re-hashed and compared with its stored leaf hash; the tree is rebuilt, and at each
    checkpoint's size its root must equal the signed root. All checkpoints therefore agree with
    one recomputed tree, which also proves them mutually consistent. :meth:`finish` fails if a
    signed checkpoint covers more entries than were fed (entries removed from the end).

    Raises (constructor):
        VerificationError: if ``vkey`` is malformed.
    """

    __slots__ = (
        "_checked",
        "_covered",
        "_frontier",
        "_next_due",
        "_pending",
        "_roots",
        "_size",
        "_verifier",
        "_waiting",
    )

    def __init__(self, vkey: str, *, start: Frontier | None = None) -> None:
        self._verifier = NoteVerifier.from_vkey(vkey)
        # ``start``: resume after a prefix already proven some other way (its right edge)
        self._frontier = Frontier() if start is None else start.copy()
        self._size = self._frontier.size
        self._checked = 0
        self._covered = self._size
        #: sizes (heap) of announced checkpoints not yet reached, and their checkpoints
        self._pending: list[int] = []
        self._waiting: dict[int, list[Checkpoint]] = {}
        #: recomputed roots at checkpoint sizes already passed
        self._roots: dict[int, bytes] = {}
        self._next_due = -1

    @property
    def size(self) -> int:
        """Entries fed so far."""
        return self._size

    def expect_checkpoints(self, notes: Iterable[str]) -> list[Checkpoint]:
        """Verify and register signed checkpoints; each is matched when its size is reached.

        A checkpoint at a size already reached is matched immediately if that size's root is
        known (the current size, or an earlier checkpoint's size).

        Raises:
            VerificationError: if a signature, origin or format is wrong, or a checkpoint whose
                size was already reached has a different root (``index`` = the first entry
                not covered by an earlier matching checkpoint).
            UsageError: if a checkpoint's size was passed without it being announced, so its
                root is no longer known.
        """
        return [self.check_checkpoint(note) for note in notes]

    def check_checkpoint(self, note: str) -> Checkpoint:
        """Verify one signed checkpoint and match it now or when its size is reached.

        Raises:
            VerificationError: as :meth:`expect_checkpoints`.
            UsageError: as :meth:`expect_checkpoints`.
        """
        try:
            cp = open_checkpoint(note, self._verifier)
        except VerificationError as exc:
            raise VerificationError(
                f"stored checkpoint: {exc.message}", index=self._covered, **exc.evidence
            ) from exc
        if cp.size > self._size:
            if cp.size not in self._waiting:
                heapq.heappush(self._pending, cp.size)
                self._waiting[cp.size] = []
            self._waiting[cp.size].append(cp)
            self._next_due = self._pending[0]
            return cp
        if cp.size == self._size:
            root = self._frontier.root()
        elif cp.size in self._roots:
            root = self._roots[cp.size]
        else:
            raise UsageError(
                "checkpoint size already passed; announce checkpoints before feeding entries",
                size=cp.size,
                fed=self._size,
            )
        self._match(cp, root)
        return cp

    def _match(self, cp: Checkpoint, root: bytes) -> None:
        if root != cp.root_hash:
            lo = max((s for s in self._roots if s < cp.size), default=0)
            raise VerificationError(
                "signed checkpoint root differs from the recomputed tree: an entry was "
                "changed, inserted, removed or reordered",
                index=lo,
                range=f"[{lo}, {cp.size})",
                checkpoint_size=cp.size,
                signed_root=cp.root_hash.hex(),
                computed_root=root.hex(),
            )
        self._roots[cp.size] = root
        self._checked += 1
        self._covered = max(self._covered, cp.size)

    def _reach_due(self) -> None:
        # The tree just reached the size of one or more announced checkpoints.
        size = heapq.heappop(self._pending)
        root = self._frontier.root()
        # Record the root first so the evidence range starts after the previous match.
        for cp in self._waiting.pop(size):
            self._match(cp, root)
        self._next_due = self._pending[0] if self._pending else -1

    def feed(self, index: int, leaf_hash_stored: bytes, data: bytes) -> None:
        """Re-hash one entry, check it against its stored leaf hash, and add it to the tree.

        Raises:
            VerificationError: if ``index`` is not the next expected one (an entry removed,
                duplicated or reordered), the data does not hash to the stored leaf hash, or
                a checkpoint announced at this size has a different root. Evidence names the
                ``index``.
        """
        if index != self._size:
            raise VerificationError(
                "ledger indices are not contiguous: an entry is missing, duplicated or "
                "out of order",
                index=self._size,
                found=index,
            )
        # RFC 6962 §2.1 leaf hash.
        h = hashlib.sha256(b"\x00" + data).digest()
        if h != leaf_hash_stored:
            raise VerificationError("entry data does not match its stored leaf hash", index=index)
        self._frontier.append(h)
        self._size = index + 1
        if self._size == self._next_due:
            self._reach_due()

    def feed_all(self, rows: Iterable[tuple[int, bytes, bytes]]) -> int:
        """:meth:`feed` every ``(index, stored leaf hash, data)`` row; return how many.

        The fast path for ``interlock ledger verify``: same checks as :meth:`feed`.

        Raises:
            VerificationError: as :meth:`feed`.
        """
        sha256 = hashlib.sha256
        append = self._frontier.append
        size = self._size
        due = self._next_due
        start = size
        try:
            for index, stored, data in rows:
                if index != size:
                    raise VerificationError(
                        "ledger indices are not contiguous: an entry is missing, duplicated "
                        "or out of order",
                        index=size,
                        found=index,
                    )
                h = sha256(b"\x00" + data).digest()
                if h != stored:
                    raise VerificationError(
                        "entry data does not match its stored leaf hash", index=index
                    )
                append(h)
                size += 1
                if size == due:
                    self._size = size
                    self._reach_due()
                    due = self._next_due
        finally:
            self._size = size
        return size - start

    def finish(self) -> VerifyReport:
        """End the verification and report.

        Raises:
            VerificationError: if an announced signed checkpoint covers more entries than were
                fed: entries were removed from the end (``index`` = the first missing one).
        """
        if self._pending:
            largest = max(self._pending)
            raise VerificationError(
                "a signed checkpoint covers entries the ledger no longer has",
                index=self._size,
                checkpoint_size=largest,
                entries=self._size,
            )
        return VerifyReport(
            entries=self._size,
            checkpoints=self._checked,
            root=self._frontier.root(),
            size=self._size,
            covered=self._covered,
        )
