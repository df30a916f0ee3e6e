"""Auditing an embedded ledger: full verification, evidence bundles, tile export and replay.

    >>> from interlock.gate import Gate
    >>> gate = Gate.open(".interlock")                     # doctest: +SKIP
    >>> verify_ledger(gate.ledger, gate.vkey).entries      # doctest: +SKIP
    42

These read the storage and hand the bytes to :mod:`interlock.ledger.verify`, which never
imports storage: an auditor without a home uses that module alone (``interlock receipt verify``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interlock.core.boundary import parse_boundaries
from interlock.core.canonical import canonical_bytes, digest
from interlock.core.model import ActionRequest, Resource, Stage
from interlock.errors import (
    ConfigError,
    KeyFileError,
    LedgerError,
    PolicyError,
    VerificationError,
)
from interlock.home import Home, default_home
from interlock.ledger import merkle
from interlock.ledger.note import NoteSigner, NoteVerifier
from interlock.ledger.projection import (
    KILL_SWITCH_EVENTS,
    QUARANTINE_EVENTS,
    RESTRICT_EVENTS,
    Projection,
    first_difference,
    fold_verified,
)
from interlock.ledger.proof import ProofBundle, format_proof
from interlock.ledger.protocols import Log, Store
from interlock.ledger.statecheck import check_log
from interlock.ledger.storage import open_store
from interlock.ledger.tiles import TILE_WIDTH as TILE
from interlock.ledger.tiles import export_tiles, tile_levels
from interlock.ledger.verify import LedgerVerifier, VerifyReport
from interlock.pipeline import Lineage, Snapshot, decide
from interlock.policy.bundle import PolicyBundle
from interlock.records import decision_record, verify_governance
from interlock.trust import keys

__all__ = [
    "LedgerView",
    "ReplayReport",
    "export_ledger_tiles",
    "home_anchor",
    "open_for_audit",
    "proof_bundle",
    "rebuild_state",
    "replay",
    "verify_ledger",
]

Progress = Callable[[int, int], None]
#: how often replay re-decides a request whose re-decision hit the authorizer's limits
REPLAY_RETRIES = 5


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
        h.ledger_path,
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
        tile_hashes: list[bytes] = []
        tile_n = 0
        upper: list[list[bytes]] = []  # per tile level >= 1: recomputed roots awaiting a tile
        for rows in view.iter_entry_chunks(0, None, 16384):
            verifier.feed_all(rows)  # every stored leaf hash below is now known to be right
            for _idx, stored_lh, _data in rows:
                tile_hashes.append(stored_lh)
                if len(tile_hashes) == TILE:
                    _check_tile(ledger, 0, tile_n, tile_hashes, upper)
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
    ledger: Log, level: int, n: int, hashes: list[bytes], upper: list[list[bytes]]
) -> None:
    row = ledger.stored_tile(level, n)
    first_leaf = n * TILE ** (level + 1)
    levels = tile_levels(b"".join(hashes))
    if row is None or row[0] != levels[0] or row[1] != b"".join(levels[1:8]) or row[2] != levels[8]:
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
        _check_tile(ledger, level + 1, n // TILE, full, upper)


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


@dataclass(slots=True)
class ReplayReport:
    decisions: int = 0
    replayed: int = 0
    matched: int = 0
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    skipped_stage: int = 0
    unverifiable: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches and not self.unverifiable

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "decisions": self.decisions,
            "replayed": self.replayed,
            "matched": self.matched,
            "mismatches": self.mismatches,
            "not_replayable_stage": self.skipped_stage,
            "unverifiable": self.unverifiable,
        }


def _records(ledger: Log) -> Iterator[tuple[int, bytes, dict[str, Any]]]:
    for idx, _lh, data in ledger.iter_entries():
        try:
            rec = json.loads(data)
        except ValueError as exc:
            raise VerificationError("entry is not JSON", index=idx) from exc
        yield idx, data, rec


def replay(
    ledger: Log,
    trusted_policy_keys: Sequence[Any],
    *,
    node_public: bytes | None = None,
    progress: Progress | None = None,
) -> ReplayReport:
    """Re-decide every recorded pipeline decision with its pinned snapshot and compare the
    re-made record with the recorded bytes (DESIGN I3). Intake and gate-stage denials
    (malformed input, deadline, storage) depend on the gate's environment and are counted
    apart. A decision whose payload was purged or whose lineage facts disagree with the
    ledger before it is *unverifiable*, which also fails the replay.

    Quarantines and the kill switch are re-derived from their governance records in ledger
    order, like revocations; each such record must carry a valid signature by ``node_public``
    (the home's node key). An unsigned or badly signed one is unverifiable, and so is every
    decision whose snapshot depends on it.
    """
    report = ReplayReport()
    trust: list[_TrustEvent] = []
    seen_revoked: set[str] = set()
    # id -> (effect, leaf hash hex, principal)
    decisions: dict[str, tuple[str, str, str | None]] = {}
    snapshots: dict[tuple[str, int], Snapshot] = {}
    bundles: dict[str, PolicyBundle] = {}
    total = ledger.size()
    trusted = list(trusted_policy_keys)
    for idx, data, rec in _records(ledger):
        if progress is not None and (idx & 0x3FF) == 0:
            progress(idx, total)
        if rec.get("type") == "governance" and rec.get("event") == "capability.revoked":
            verified = _governance_ok(idx, rec, node_public, report)
            for rid in rec.get("revocation_ids", []):
                if rid not in seen_revoked:
                    seen_revoked.add(rid)
                    trust.append(_TrustEvent(index=idx, revoked=rid, verified=verified))
            continue
        if rec.get("type") == "governance" and (
            rec.get("event") in QUARANTINE_EVENTS
            or rec.get("event") in KILL_SWITCH_EVENTS
            or rec.get("event") in RESTRICT_EVENTS
        ):
            trust.append(_trust_event(idx, rec, node_public, report))
            continue
        if rec.get("type") != "decision":
            continue
        report.decisions += 1
        req = rec.get("request")
        decisions[rec["id"]] = (
            rec["effect"],
            merkle.leaf_hash(data).hex(),
            req.get("principal") if isinstance(req, dict) else None,
        )
        if rec.get("stage") != Stage.PIPELINE.value:
            report.skipped_stage += 1
            continue
        try:
            snap = _snapshot_for(ledger, rec["snapshot"], snapshots, bundles, trust, trusted)
            request = recorded_request(ledger, rec)
            lineage = _lineage_for(rec, decisions)
        except (
            LedgerError,
            VerificationError,
            PolicyError,
            ConfigError,
            KeyError,
            ValueError,
            TypeError,
        ) as exc:
            msg = (
                exc.message
                if isinstance(exc, LedgerError | VerificationError | PolicyError | ConfigError)
                else str(exc)
            )
            report.unverifiable.append({"index": idx, "id": rec.get("id"), "why": msg})
            continue
        report.replayed += 1
        try:
            verdict = decide(request, snap, lineage)
            for _ in range(REPLAY_RETRIES):
                if verdict.reproducible:
                    break
                # the authorizer stopped on its execution limits (a loaded machine): that says
                # nothing about the recorded answer, so decide again before calling it a mismatch
                verdict = decide(request, snap, lineage)
        except Exception as exc:  # noqa: BLE001 - the gate recorded an answer; replay has none
            report.mismatches.append(
                {"index": idx, "id": rec["id"], "replay_error": f"{type(exc).__name__}: {exc}"}
            )
            continue
        again = canonical_bytes(
            decision_record(
                request, verdict, snapshot_id=snap.id, lineage=lineage, stage=Stage.PIPELINE
            )
        )
        if again == data:
            report.matched += 1
        else:
            report.mismatches.append(
                {
                    "index": idx,
                    "id": rec["id"],
                    "recorded": {"effect": rec["effect"], "reasons": rec["reasons"]},
                    "replayed": {
                        "effect": verdict.effect.value,
                        "reasons": [r.to_json() for r in verdict.reasons],
                    },
                }
            )
    if progress is not None:
        progress(total, total)
    return report


@dataclass(frozen=True, slots=True, kw_only=True)
class _TrustEvent:
    """One step of the trust version: a new revocation id, a quarantine or release of
    ``principal``, or (neither set) the kill switch turned ``on``/off."""

    index: int
    revoked: str | None = None
    principal: str | None = None
    on: bool = False
    verified: bool = True
    #: set for a boundary restriction (``principal`` restricted under ``boundary``) or release
    boundary: str | None = None


def _governance_ok(
    idx: int, rec: dict[str, Any], node_public: bytes | None, report: ReplayReport
) -> bool:
    """Whether a governance record carries the node's signature (else it is reported)."""
    try:
        if node_public is None:
            raise VerificationError("no node key given to check governance signatures")
        verify_governance(rec, node_public)
    except (VerificationError, KeyFileError) as exc:
        report.unverifiable.append({"index": idx, "id": rec.get("id"), "why": exc.message})
        return False
    return True


def _trust_event(
    idx: int, rec: dict[str, Any], node_public: bytes | None, report: ReplayReport
) -> _TrustEvent:
    """A quarantine or kill-switch record as a trust step, its node signature checked."""
    event = str(rec.get("event"))
    principal = (
        rec.get("principal") if event in QUARANTINE_EVENTS or event in RESTRICT_EVENTS else None
    )
    boundary = rec.get("boundary") if event in RESTRICT_EVENTS else None
    on = QUARANTINE_EVENTS.get(
        event, KILL_SWITCH_EVENTS.get(event, RESTRICT_EVENTS.get(event, False))
    )
    try:
        if node_public is None:
            raise VerificationError("no node key given to check governance signatures")
        verify_governance(rec, node_public)
        if event in QUARANTINE_EVENTS and not isinstance(principal, str):
            raise VerificationError("quarantine record names no principal")
        if event in RESTRICT_EVENTS and not (
            isinstance(principal, str) and isinstance(boundary, str)
        ):
            raise VerificationError("restriction record names no principal or boundary")
    except (VerificationError, KeyFileError) as exc:
        report.unverifiable.append({"index": idx, "id": rec.get("id"), "why": exc.message})
        return _TrustEvent(index=idx, principal=None, on=on, verified=False)
    return _TrustEvent(index=idx, principal=principal, on=on, boundary=boundary)


def _snapshot_for(
    ledger: Log,
    snapshot_id: str,
    cache: dict[tuple[str, int], Snapshot],
    bundles: dict[str, PolicyBundle],
    trust: list[_TrustEvent],
    trusted: list[Any],
) -> Snapshot:
    raw = ledger.blob(f"snapshot:{snapshot_id}")
    if raw is None:
        raise LedgerError(f"snapshot {snapshot_id[:12]} descriptor is missing")
    desc = json.loads(raw)
    if digest(desc) != snapshot_id:
        raise VerificationError("snapshot descriptor does not match its id")
    tv = int(desc["trust_version"])
    key = (snapshot_id, tv)
    if key in cache:
        return cache[key]
    if tv > len(trust):
        raise VerificationError("snapshot names trust records not on the ledger before it")
    revoked: set[str] = set()
    quarantined: set[str] = set()
    restricted: set[tuple[str, str]] = set()
    kill_switch = False
    for ev in trust[:tv]:
        if not ev.verified:
            raise VerificationError(
                f"snapshot depends on the unverifiable governance record at index {ev.index}"
            )
        if ev.revoked is not None:
            revoked.add(ev.revoked)
        elif ev.boundary is not None and ev.principal is not None:
            pair = (ev.principal, ev.boundary)
            (restricted.add if ev.on else restricted.discard)(pair)
        elif ev.principal is not None:
            (quarantined.add if ev.on else quarantined.discard)(ev.principal)
        else:
            kill_switch = ev.on
    bundle = None
    pd = desc.get("policy_digest")
    if pd is not None:
        if pd not in bundles:
            blob = ledger.blob(f"bundle:{pd}")
            if blob is None:
                raise LedgerError(f"policy bundle {pd[:12]} is missing")
            bundles[pd] = PolicyBundle.from_blob(blob, trusted)
        bundle = bundles[pd]
    snap = Snapshot.build(
        root_public=bytes.fromhex(desc["capability_root"]),
        bundle=bundle,
        policy_problem=desc.get("policy_problem"),
        revoked=frozenset(revoked),
        trust_version=tv,
        max_depth=int(desc["max_depth"]),
        quarantined=frozenset(quarantined),
        kill_switch=kill_switch,
        approvers=frozenset(bytes.fromhex(k) for k in desc.get("approvers", [])),
        break_glass_keys=frozenset(bytes.fromhex(k) for k in desc.get("break_glass_keys", [])),
        env=desc.get("env"),
        env_problem=desc.get("env_problem"),
        boundaries=parse_boundaries(desc.get("boundaries", []), source="snapshot"),
        restricted=frozenset(restricted),
    )
    if snap.id != snapshot_id:
        raise VerificationError("rebuilt snapshot does not match the recorded id")
    cache[key] = snap
    return snap


def recorded_request(ledger: Log, rec: dict[str, Any]) -> ActionRequest:
    """The request a decision record was made for, rebuilt from the record and its stored
    payload (arguments, context, token, approval, break-glass), digests checked.

    Raises:
        LedgerError: the payload was purged or is missing.
        VerificationError: the stored arguments or context do not match the record's digests.
    """
    raw = ledger.blob(f"req:{rec['id']}")
    if raw is None:
        raise LedgerError("request payload was purged or is missing")
    payload = json.loads(raw)
    r = rec["request"]
    req = ActionRequest(
        id=rec["id"],
        time=rec["ts"],
        principal=r["principal"],
        action=r["action"],
        resource=Resource(type=r["resource"]["type"], id=r["resource"]["id"]),
        args=payload["args"],
        context=payload["context"],
        capability=payload["capability"],
        parent=rec.get("parent"),
        traceparent=r.get("traceparent"),
        approval=payload.get("approval"),
        break_glass=payload.get("break_glass"),
    )
    if digest(req.args, allow_floats=True) != r["args_sha256"]:
        raise VerificationError("stored arguments do not match the recorded digest")
    if digest(req.context, allow_floats=True) != r["context_sha256"]:
        raise VerificationError("stored context does not match the recorded digest")
    return req


def _lineage_for(rec: dict[str, Any], decisions: dict[str, tuple[str, str, str | None]]) -> Lineage:
    parent = rec.get("parent")
    if parent is None:
        return Lineage()
    lin = rec.get("lineage") or {}
    status = str(lin.get("status", "unknown"))
    known = decisions.get(parent)
    if status in ("allowed", "running"):
        if known is None or known[0] != "allow" or known[1] != rec.get("parent_leaf"):
            raise VerificationError("recorded lineage claims an allowed parent the ledger lacks")
    elif status == "denied" and (known is None or known[0] != "deny"):
        raise VerificationError("recorded lineage claims a denied parent the ledger lacks")
    return Lineage(
        parent=parent,
        status=status,
        depth=int(lin.get("depth", 0)),
        parent_leaf=rec.get("parent_leaf"),
        principal=known[2] if known is not None else None,
    )


def recorded_requests(ledger: Log) -> list[dict[str, Any]]:
    """The recorded pipeline requests (with their stored arguments) in the form
    ``interlock policy diff`` takes; requests whose payload was purged are left out."""
    from interlock.core.model import rfc3339_to_epoch

    out: list[dict[str, Any]] = []
    for _idx, _data, rec in _records(ledger):
        if rec.get("type") != "decision" or rec.get("stage") != Stage.PIPELINE.value:
            continue
        raw = ledger.blob(f"req:{rec['id']}")
        if raw is None:
            continue
        payload = json.loads(raw)
        r = rec["request"]
        out.append(
            {
                "principal": r["principal"],
                "action": r["action"],
                "resource": r["resource"],
                "args": payload["args"],
                "context": payload["context"],
                "time": rfc3339_to_epoch(rec["ts"]),
            }
        )
    return out


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
