"""Auditing an embedded ledger: full verification, evidence bundles and tile export (replay is
in :mod:`interlock.replay`).

    >>> from interlock.gate import Gate
    >>> gate = Gate.open(".interlock")                     # doctest: +SKIP
    >>> verify_ledger(gate.ledger, gate.vkey).entries      # doctest: +SKIP
    42

These read the storage and hand the bytes to :mod:`interlock.ledger.verify`, which never
imports storage: an auditor without a home uses that module alone (``interlock receipt verify``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interlock.errors import (
    LedgerError,
    UsageError,
    VerificationError,
)
from interlock.home import Home, default_home
from interlock.ledger.fold import fold_verified
from interlock.ledger.note import NoteSigner, NoteVerifier
from interlock.ledger.projection import (
    Projection,
    first_difference,
)
from interlock.ledger.proof import ProofBundle, format_proof
from interlock.ledger.protocols import Fleet, Log, NodeRow, Store
from interlock.ledger.statecheck import check_log
from interlock.ledger.storage import open_store
from interlock.ledger.tiles import TILE_WIDTH as TILE
from interlock.ledger.tiles import export_tiles, tile_levels
from interlock.ledger.verify import LedgerVerifier, VerifyReport
from interlock.trust import keys

__all__ = [
    "LedgerView",
    "Progress",
    "decision_receipt",
    "export_ledger_tiles",
    "home_anchor",
    "open_for_audit",
    "proof_bundle",
    "rebuild_state",
    "verify_ledger",
]


Progress = Callable[[int, int], None]


@dataclass(slots=True)
class LedgerView:
    """A home's ledger opened for auditing — without a gate, so nothing is decided, no policy
    is reloaded and nothing is appended (unless opened with ``sign=True``)."""

    home: Home
    ledger: Store
    vkey: str
    #: the keys governance records are signed with (node) and trust settings (root)
    node_public: bytes | None = None
    root_public: bytes | None = None

    def close(self) -> None:
        self.ledger.close()

    def __enter__(self) -> LedgerView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_for_audit(
    home: str | Path | None = None, *, sign: bool = False, upgrade: bool = False
) -> LedgerView:
    """Open a home's ledger for auditing.

    ``sign=True`` allows signing fresh checkpoints (for proofs and exports), and first checks
    the ledger (``Log.self_check``): a checkpoint is never signed over a ledger that does not
    match its last one.

    ``upgrade=True`` opens a ledger of an older schema (for :func:`rebuild_state` only).

    Raises:
        ConfigError: no home.
        KeyFileError: a key is missing or unsafe.
        LedgerCorrupt: no ledger in the home (only ``interlock init`` creates one).
        LedgerError: the database cannot be opened, or (with ``sign``) fails its check.
    """
    h = Home.load(default_home(home))
    signer = NoteSigner(h.config.origin, h.private_key("log"))
    node_public = keys.public_raw(h.private_key("node"))
    root_public = keys.public_raw(h.private_key("biscuit-root"))
    # a missing ledger is LedgerCorrupt: only `interlock init` creates one
    ledger = open_store(
        h.ledger_location,
        signer=signer if sign else None,
        durability=h.config.durability,
        busy_timeout_ms=h.config.ledger_timeout_ms,
        upgrade=upgrade,
    )
    try:
        if sign:
            ledger.self_check(NoteVerifier.from_vkey(signer.vkey))
    except BaseException:
        ledger.close()
        raise
    return LedgerView(
        home=h,
        ledger=ledger,
        vkey=signer.vkey,
        node_public=node_public,
        root_public=root_public,
    )


def home_anchor(view: LedgerView) -> list[str]:
    """The checkpoint a gate of this home last kept outside the database (``<home>/checkpoint``),
    as a list of zero or one note, for :func:`verify_ledger`'s ``anchors``.

    Raises:
        UntrustedHomeFile: the anchor is not a regular, private text file of the home.
        OSError: it exists but cannot be read.
    """
    note = view.home.read_anchor()
    return [] if note is None else [note]


def rebuild_state(view: LedgerView, *, progress: Progress | None = None) -> int:
    """Recompute the governance-state tables from the log alone and replace the stored ones
    (``interlock ledger rebuild-state``): after a restore, or to bring a ledger of an older
    schema up to date. The log itself is verified first (leaf hashes, tree, checkpoints), so
    state is never rebuilt from a tampered log. Returns the number of entries folded.

    Raises:
        VerificationError: the log does not verify (nothing is replaced).
        LedgerUnavailable: the tables could not be written, or the log grew meanwhile.
    """
    checkpoints = [c.note for c in view.ledger.checkpoints()]
    rebuilt = check_log(
        view.ledger,
        view.vkey,
        checkpoints,
        node_public=view.node_public,
        root_public=view.root_public,
        progress=progress,
        stored=False,
    ).projection
    view.ledger.replace_state(rebuilt.rows(), rebuilt.size)
    return rebuilt.size


def verify_ledger(
    ledger: Store,
    vkey: str,
    *,
    anchors: Sequence[str] = (),
    progress: Progress | None = None,
    state_keys: tuple[bytes | None, bytes | None] | None = None,
) -> VerifyReport:
    """Recompute every leaf hash, the tree at every stored checkpoint, every checkpoint
    signature, and every persisted tile; with ``state_keys`` (the node and root public keys),
    also rebuild the governance state from the log and compare it with the stored tables,
    row by row (DESIGN I8), in the same pass and as of the same moment.

    ``anchors`` are signed checkpoints kept outside this database (by an auditor, a witness, a
    previous ``ledger checkpoint``): the ledger must contain and match each of them, which
    defeats an attacker who rewrites the log *and* deletes its newer checkpoints.

    Raises:
        VerificationError: naming the first bad index (``evidence["index"]``) on any change,
            removal or reordering; also when entries exist but no checkpoint does (they were
            removed: every writer's first commit signs one in the same transaction).
    """
    checkpoints = ledger.checkpoints()  # before the view: it holds at least these
    projection = Projection() if state_keys is not None else None
    node_public, root_public = state_keys if state_keys is not None else (None, None)
    with ledger.frozen() as view:
        total = view.size()
        if total == 0 and state_keys is not None:
            raise VerificationError(
                "the ledger is empty: a home's ledger starts with its trust settings, so this"
                " one was replaced",
                index=0,
            )
        if total > 0 and not checkpoints:
            raise VerificationError(
                "the ledger has entries but no signed checkpoint: checkpoints were removed",
                index=0,
            )
        verifier = LedgerVerifier(vkey)
        verifier.expect_checkpoints([c.note for c in checkpoints] + list(anchors))
        # a full tile below the newest signed checkpoint must be stored; past it, a tile may
        # not be integrated yet (a fleet's integrator persists tiles with the checkpoint it
        # signs, so nodes killed between an append and the next integration leave full tiles
        # unwritten) — but one that is stored must match
        signed = max((c.size for c in checkpoints), default=0)
        tile_hashes: list[bytes] = []
        tile_n = 0
        upper: list[list[bytes]] = []  # per tile level >= 1: recomputed roots awaiting a tile
        for rows in view.iter_entry_chunks(0, None, 16384):
            verifier.feed_all(rows)  # every stored leaf hash below is now known to be right
            for _idx, stored_lh, _data in rows:
                tile_hashes.append(stored_lh)
                if len(tile_hashes) == TILE:
                    _check_tile(ledger, 0, tile_n, tile_hashes, upper, signed)
                    tile_hashes = []
                    tile_n += 1
            if projection is not None:
                fold_verified(projection, rows, node_public=node_public, root_public=root_public)
            if progress is not None:
                progress(rows[-1][0] + 1, total)
        report = verifier.finish()
        if report.size != total:
            raise VerificationError("entry count changed during verification", index=report.size)
        if projection is not None:
            diff = first_difference(view.dump_state(), projection.rows())
            if diff is not None:
                raise diff
    if progress is not None:
        progress(total, total)
    return report


def _check_tile(
    ledger: Log, level: int, n: int, hashes: list[bytes], upper: list[list[bytes]], signed: int
) -> None:
    row = ledger.stored_tile(level, n)
    first_leaf = n * TILE ** (level + 1)
    levels = tile_levels(b"".join(hashes))
    unsigned = first_leaf + TILE ** (level + 1) > signed
    if row is None and unsigned:
        pass  # not integrated yet: nothing stored to check; its root still counts above
    elif (
        row is None or row[0] != levels[0] or row[1] != b"".join(levels[1:8]) or row[2] != levels[8]
    ):
        raise VerificationError(
            "persisted tile does not match the recomputed tree",
            index=first_leaf,
            level=level,
            tile=n,
        )
    while len(upper) <= level:
        upper.append([])
    upper[level].append(levels[8])
    if len(upper[level]) == TILE:
        full, upper[level] = upper[level], []
        _check_tile(ledger, level + 1, n // TILE, full, upper, signed)


def proof_bundle(ledger: Log, index: int) -> str:
    """A C2SP ``tlog-proof@v1`` file for ``index`` whose ``extra`` carries the entry's bytes:
    one file that anyone holding the log's verifier key can check offline.

    Raises:
        LedgerError: if there is no such entry or no checkpoint could be signed.
    """
    data = ledger.entry(index)
    cp = ledger.latest_checkpoint()
    if cp is None or cp.size <= index:
        cp = ledger.checkpoint()
    if cp is None or cp.size <= index:
        raise LedgerError("no signed checkpoint covers this entry", index=index)
    proof = ledger.inclusion_proof(index, cp.size)
    return format_proof(
        ProofBundle(index=index, extra=data, inclusion=proof, checkpoint_note=cp.note)
    )


def export_ledger_tiles(ledger: Log, out_dir: Path) -> int:
    """Write the ledger as C2SP tlog-tiles under ``out_dir``; returns files written.

    Raises:
        LedgerError: if there is nothing checkpointed to export.
    """
    cp = ledger.latest_checkpoint()
    if cp is None or cp.size < ledger.size():
        cp = ledger.checkpoint()
    if cp is None:
        raise LedgerError("the ledger is empty: nothing to export")
    return export_tiles(
        out_dir, size=cp.size, checkpoint_note=cp.note, reader=ledger.node, entry_at=ledger.entry
    )


def decision_receipt(view: LedgerView, index: int) -> dict[str, Any]:
    """The DSSE receipt of the decision recorded at ``index``, signed by the home's node key.

    Ed25519 signatures are deterministic, so a receipt made now is byte-identical to one made
    at decision time: receipts are produced on demand rather than stored.

    Raises:
        LedgerError: no entry at ``index``.
        UsageError: the entry is not a decision record.
        KeyFileError: the node key is missing or unsafe.
    """
    from interlock.trust.receipt import make_receipt

    record = view.ledger.entry(index)
    return make_receipt(
        record,
        signer=view.home.private_key("node"),
        ledger_index=index,
        log_origin=view.home.config.origin,
    )


def fleet_nodes(view: LedgerView) -> list[NodeRow]:
    """The nodes registered on the home's shared log (``interlock nodes``), most recent
    heartbeat first.

    Raises:
        UsageError: the home's log is its own SQLite file (no fleet).
        LedgerUnavailable: the store cannot be read.
    """
    if not isinstance(view.ledger, Fleet):
        raise UsageError(
            "this home's log is its own SQLite file: a fleet shares a PostgreSQL log"
            " ([log] store, `interlock init --store URL` then `--join HOME`)"
        )
    return view.ledger.nodes()
