"""The records a gate writes: decisions (RFC 8785 canonical JSON, as they go on the log) and
node-signed governance records."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from interlock.core.canonical import canonical_bytes, digest
from interlock.core.model import (
    RECORD_VERSION,
    ActionRequest,
    RecordType,
    Stage,
)
from interlock.errors import (
    VerificationError,
)
from interlock.trust import keys

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from interlock.pipeline import Lineage, Verdict


def decision_record(
    request: ActionRequest,
    verdict: Verdict,
    *,
    snapshot_id: str | None,
    lineage: Lineage,
    stage: Stage,
) -> dict[str, Any]:
    """The ledger record of a decision. Its RFC 8785 bytes are the leaf data; their SHA-256
    is the decision hash. Arguments, context and token are recorded by digest."""
    rec: dict[str, Any] = {
        "v": RECORD_VERSION,
        "type": RecordType.DECISION.value,
        "id": request.id,
        "ts": request.time,
        "stage": stage.value,
        "request": {
            "principal": request.principal,
            "action": request.action,
            "resource": request.resource.to_json(),
            "args_sha256": digest(request.args, allow_floats=True),
            "context_sha256": digest(request.context, allow_floats=True),
            "capability_sha256": (
                hashlib.sha256(request.capability.encode()).hexdigest()
                if request.capability
                else None
            ),
            "traceparent": request.traceparent,
        },
        "parent": request.parent,
        "parent_leaf": lineage.parent_leaf,
        "snapshot": snapshot_id,
        "effect": verdict.effect.value,
        "reasons": [r.to_json() for r in verdict.reasons],
        "obligations": list(verdict.obligations),
    }
    if request.approval is not None:
        # present only with an approval, so records made before approvals existed replay
        # byte-identical; the approval itself is in the request payload blob
        rec["request"]["approval_sha256"] = hashlib.sha256(
            request.approval.encode("ascii")
        ).hexdigest()
    if request.break_glass is not None:
        rec["request"]["break_glass_sha256"] = hashlib.sha256(
            request.break_glass.encode("ascii")
        ).hexdigest()
    if verdict.break_glass is not None:
        # the loud flag: this allow exists only because a human broke the glass
        rec["break_glass"] = dict(verdict.break_glass)
    if request.parent is not None:
        rec["lineage"] = lineage.to_json()
    return rec


def sign_governance(record: Mapping[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """``record`` with ``signer`` (the hex public key) and ``sig``: the hex Ed25519 signature
    over the RFC 8785 bytes of the record with ``signer`` and without ``sig``."""
    rec = {k: v for k, v in record.items() if k != "sig"}
    rec["signer"] = keys.public_raw(key).hex()
    rec["sig"] = key.sign(canonical_bytes(rec)).hex()
    return rec


def verify_governance(record: Mapping[str, Any], public: bytes) -> None:
    """Check a governance record's node signature (see :func:`sign_governance`).

    Raises:
        VerificationError: the record is unsigned, names another signer than ``public``, or its
            signature does not verify over the record's other fields.
    """
    sig, signer = record.get("sig"), record.get("signer")
    if not isinstance(sig, str) or not isinstance(signer, str):
        raise VerificationError("governance record is not signed by the node key")
    if signer != public.hex():
        raise VerificationError("governance record is signed by a key that is not the node's")
    try:
        raw = bytes.fromhex(sig)
    except ValueError as exc:
        raise VerificationError("governance record signature is not hex") from exc
    body = {k: v for k, v in record.items() if k != "sig"}
    keys.verify_signature(keys.public_from_raw(public), raw, canonical_bytes(body))


def _payload_blob(request: ActionRequest) -> bytes:
    """The request's arguments, context and token, for replay. Plain JSON, not RFC 8785: the
    record holds their digests, and replay needs the exact Python values back (canonical
    bytes would turn the float ``2.0`` into ``2``, which Cedar sees differently)."""
    payload: dict[str, Any] = {
        "args": request.args,
        "context": request.context,
        "capability": request.capability,
    }
    if request.approval is not None:
        payload["approval"] = request.approval
    if request.break_glass is not None:
        payload["break_glass"] = request.break_glass
    return json.dumps(
        payload,
        ensure_ascii=False,
        allow_nan=False,
        sort_keys=True,
        separators=(",", ":"),
    ).encode("utf-8", "surrogatepass")
