"""Signed decision receipts: a DSSE envelope over an in-toto Statement v1. Pure: no I/O.

    >>> from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    >>> node = Ed25519PrivateKey.generate()
    >>> record = b'{"effect":"deny","id":"r1","reasons":[{"code":"POLICY_DENIED","detail":"no"}],'
    >>> record += b'"snapshot":null,"type":"decision","v":1}'
    >>> envelope = make_receipt(record, signer=node, ledger_index=7, log_origin="example.test/log")
    >>> text = encode_receipt(envelope)
    >>> receipt = verify_receipt(text, public_key=node.public_key(), record=record)
    >>> receipt.subject_name, receipt.effect, receipt.reasons, receipt.ledger_index
    ('interlock:decision/r1', 'deny', ('POLICY_DENIED',), 7)

A receipt says "the node holding this key decided ``effect`` for the decision record whose
SHA-256 (the decision hash, DESIGN §1) is ``digest``, and committed it at ``index`` of the log
``origin``". With the ledger's proof bundle (``ledger/verify.py``) it also proves inclusion; the
receipt alone proves only who decided.

Layers (all three are public specifications, so any DSSE / in-toto tool can read a receipt):

- **Envelope** — DSSE v1 (github.com/secure-systems-lab/dsse, ``envelope.md``)::

      {"payload": <base64>, "payloadType": "application/vnd.in-toto+json",
       "signatures": [{"keyid": <hex SHA-256 of the raw 32-byte Ed25519 public key>,
                       "sig": <base64 Ed25519 signature of PAE(payloadType, payload)>}]}

- **Statement** — in-toto Statement v1 (github.com/in-toto/attestation,
  ``spec/v1/statement.md``), serialized as RFC 8785 bytes::

      {"_type": "https://in-toto.io/Statement/v1",
       "subject": [{"name": "interlock:decision/<record id>",
                    "digest": {"sha256": <hex SHA-256 of the exact record bytes>}}],
       "predicateType": "https://interlock.dev/decision-receipt/v1",
       "predicate": {"effect": ..., "reasons": [<codes>], "snapshot": ...,
                     "ledger": {"origin": ..., "index": <int or null>}}}

- **Predicate** — copied from the record: ``effect``, the reason *codes* (details stay in the
  ledger), ``snapshot``; ``ledger.index`` is null when the record could not be committed.

Strictness: DSSE asks consumers to ignore unknown envelope fields; Interlock reads only its own
receipts and refuses them instead (an envelope has exactly ``payload``, ``payloadType``,
``signatures``; a signature exactly ``keyid`` and ``sig``), so one receipt has one encoding.
Unknown *Statement* fields are ignored as in-toto v1 §Parsing rules require; the Interlock
predicate, which this module defines, has exactly the fields above.

``keyid`` is an unauthenticated hint (DSSE protocol.md §KEYID: it MUST NOT be used for security
decisions): verification only uses it to skip signatures made by other keys, and always checks
the signature itself with the key the caller trusts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from interlock.core.canonical import CanonicalizationError, canonical_bytes
from interlock.errors import UsageError, VerificationError
from interlock.trust.keys import public_raw, verify_signature

__all__ = [
    "MAX_RECEIPT_BYTES",
    "PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "SUBJECT_PREFIX",
    "Receipt",
    "decode_receipt",
    "encode_receipt",
    "key_id",
    "make_receipt",
    "pae",
    "verify_receipt",
]

#: DSSE payloadType of an in-toto attestation (in-toto spec/v1/envelope.md)
PAYLOAD_TYPE = "application/vnd.in-toto+json"
#: in-toto spec/v1/statement.md: "Always https://in-toto.io/Statement/v1"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
#: the Interlock predicate defined by this module
PREDICATE_TYPE = "https://interlock.dev/decision-receipt/v1"
#: subject name = prefix + the decision record's ``id``
SUBJECT_PREFIX = "interlock:decision/"
#: bound on an encoded receipt; a real one is well under 2 KiB
MAX_RECEIPT_BYTES = 64 * 1024

_ENVELOPE_FIELDS = frozenset({"payload", "payloadType", "signatures"})
_SIGNATURE_FIELDS = frozenset({"keyid", "sig"})
_PREDICATE_FIELDS = frozenset({"effect", "reasons", "snapshot", "ledger"})
_LEDGER_FIELDS = frozenset({"origin", "index"})
_EFFECTS = frozenset({"allow", "deny"})
_MAX_SIGNATURES = 16  # bounds the work an envelope can ask of a verifier
_ED25519_SIG_SIZE = 64
_HEX = frozenset("0123456789abcdef")
_B64_CHARS = frozenset(string.ascii_letters + string.digits + "+/-_")


@dataclass(frozen=True, slots=True, kw_only=True)
class Receipt:
    """A verified receipt: what the node's key signed about one decision record."""

    #: ``interlock:decision/<record id>``
    subject_name: str
    #: hex SHA-256 of the decision record's bytes (the decision hash)
    digest: str
    effect: str
    #: reason codes, in record order
    reasons: tuple[str, ...]
    snapshot: str | None
    ledger_origin: str
    #: where the record was committed; None when it could not be committed
    ledger_index: int | None
    #: keyid of the signature that verified
    keyid: str

    @property
    def record_id(self) -> str:
        """The decision record's ``id`` (the subject name without its prefix)."""
        return self.subject_name[len(SUBJECT_PREFIX) :]


def key_id(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """The DSSE ``keyid`` Interlock writes: hex SHA-256 of the raw 32-byte public key."""
    return hashlib.sha256(public_raw(key)).hexdigest()


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE Pre-Authentication Encoding (DSSE protocol.md §Signature Definition)::

        PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body

    where ``type`` is UTF-8 of ``payload_type`` and LEN is the decimal byte length.
    """
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(t), t, len(body), body)


def make_receipt(
    record: bytes,
    *,
    signer: Ed25519PrivateKey,
    ledger_index: int | None,
    log_origin: str,
) -> dict[str, Any]:
    """Sign a receipt for the decision ``record`` (its exact ledger leaf bytes).

    ``ledger_index`` is where the record was committed (None if it was not); ``log_origin`` is
    the log's checkpoint origin. Returns the DSSE envelope as a JSON-ready dict.

    Raises:
        UsageError: if ``record`` is not a JSON decision record (object with ``type`` =
            "decision", a string ``id``, ``effect`` allow/deny, ``reasons`` with string
            ``code`` s, ``snapshot`` string or null), or ``ledger_index`` / ``log_origin`` are
            out of range.
    """
    try:
        rec = _loads(record)
    except VerificationError as exc:
        raise UsageError(f"receipt: record is not JSON: {exc.message}") from exc
    if not isinstance(rec, dict) or rec.get("type") != "decision":
        raise UsageError("receipt: record is not a decision record")
    rid = rec.get("id")
    if not isinstance(rid, str) or not rid:
        raise UsageError("receipt: decision record has no string id")
    reasons = rec.get("reasons")
    if not isinstance(reasons, list) or not all(
        isinstance(r, dict) and isinstance(r.get("code"), str) for r in reasons
    ):
        raise UsageError("receipt: decision record reasons are not a list of {code, ...}")
    predicate = {
        "effect": rec.get("effect"),
        "reasons": [r["code"] for r in reasons],
        "snapshot": rec.get("snapshot"),
        "ledger": {"origin": log_origin, "index": ledger_index},
    }
    try:
        _check_predicate(predicate)
    except VerificationError as exc:
        raise UsageError(f"receipt: {exc.message}", **exc.evidence) from exc
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": SUBJECT_PREFIX + rid, "digest": {"sha256": hashlib.sha256(record).hexdigest()}}
        ],
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate,
    }
    try:
        body = canonical_bytes(statement)
    except CanonicalizationError as exc:
        raise UsageError(f"receipt: statement cannot be canonicalized: {exc.message}") from exc
    sig = signer.sign(pae(PAYLOAD_TYPE, body))
    return {
        "payload": base64.b64encode(body).decode("ascii"),
        "payloadType": PAYLOAD_TYPE,
        "signatures": [{"keyid": key_id(signer), "sig": base64.b64encode(sig).decode("ascii")}],
    }


def encode_receipt(envelope: Mapping[str, Any]) -> str:
    """Compact JSON text of a receipt envelope (sorted keys, no whitespace).

    Raises:
        VerificationError: if ``envelope`` is not a well-formed envelope (as
            :func:`decode_receipt` checks) or its text would exceed 64 KiB.
    """
    _check_envelope(envelope)
    text = json.dumps(dict(envelope), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    if len(text) > MAX_RECEIPT_BYTES:
        raise VerificationError("receipt is too large", size=len(text))
    return text


def decode_receipt(text: str | bytes) -> dict[str, Any]:
    """Strictly parse a receipt's JSON text. Verifies no signature.

    Raises:
        VerificationError: if the text exceeds 64 KiB, is not UTF-8 JSON, has duplicate keys,
            or is not an envelope of exactly ``payload``, ``payloadType`` and a non-empty list
            (at most 16) of ``signatures`` of exactly ``keyid`` and ``sig``, with payload and
            sig in base64 and a 64-byte signature.
    """
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    if len(raw) > MAX_RECEIPT_BYTES:
        raise VerificationError("receipt is too large", size=len(raw))
    envelope = _loads(raw)
    if not isinstance(envelope, dict):
        raise VerificationError("receipt is not a JSON object")
    _check_envelope(envelope)
    return envelope


def verify_receipt(
    envelope: Mapping[str, Any] | str | bytes,
    *,
    public_key: Ed25519PublicKey,
    record: bytes | None = None,
) -> Receipt:
    """Verify a receipt: the DSSE signature by ``public_key``, then the Statement.

    Steps (DSSE protocol.md §Protocol "To verify"): decode the envelope; keep signatures whose
    ``keyid`` is this key's (or empty: DSSE treats unset as empty); accept if one verifies over
    PAE(payloadType, payload); reject an unsupported payloadType; parse the Statement and check
    its shape. If ``record`` is given, its SHA-256 must equal the subject digest and its ``id``,
    ``effect``, reason codes and ``snapshot`` must equal what the receipt states.

    Raises:
        VerificationError: if the envelope is malformed or too large, its payloadType is not
            ``application/vnd.in-toto+json``, no signature by ``public_key`` verifies, the
            Statement is not an in-toto v1 Statement with one subject and the Interlock
            decision-receipt predicate, or ``record`` does not match it. The message says
            which.
    """
    env = decode_receipt(envelope) if isinstance(envelope, str | bytes) else envelope
    _check_envelope(env)
    payload_type: str = env["payloadType"]
    body = _b64decode(env["payload"], "payload")
    if payload_type != PAYLOAD_TYPE:
        # Checked before the signature so the error names the real problem; the type is also
        # inside PAE, so a signature over another type could not verify here anyway.
        raise VerificationError(
            "receipt payloadType is not an in-toto statement", payload_type=payload_type[:100]
        )
    message = pae(payload_type, body)
    kid = key_id(public_key)
    verified: str | None = None
    for sig in env["signatures"]:
        if sig["keyid"] not in ("", kid):
            continue  # a hint only: narrows the candidates, never accepts anything
        try:
            verify_signature(public_key, _b64decode(sig["sig"], "sig"), message)
        except VerificationError:
            continue
        verified = kid
        break
    if verified is None:
        raise VerificationError("receipt has no valid signature by the given key", keyid=kid)
    receipt = _parse_statement(_loads(body), keyid=verified)
    if record is not None:
        _check_record(receipt, record)
    return receipt


# --- helpers ---------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise VerificationError(f"JSON constant {name} is not allowed")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise VerificationError("JSON object has a duplicate key", key=k[:100])
        out[k] = v
    return out


def _loads(data: bytes) -> Any:
    """Strict JSON: UTF-8, no duplicate keys, no NaN/Infinity."""
    try:
        return json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_reject_constant,
        )
    except UnicodeDecodeError as exc:
        raise VerificationError("receipt JSON is not UTF-8") from exc
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise VerificationError(f"receipt is not valid JSON: {exc}") from exc


def _b64decode(text: str, what: str) -> bytes:
    """Standard or URL-safe base64 (DSSE protocol.md: verifiers MUST accept either), with or
    without padding, canonical only (no whitespace, no stray bits)."""
    body = text.rstrip("=")
    if not set(body) <= _B64_CHARS or len(text) - len(body) > 2 or len(body) % 4 == 1:
        raise VerificationError(f"receipt {what} is not base64")
    if ("-" in body or "_" in body) and ("+" in body or "/" in body):
        raise VerificationError(f"receipt {what} mixes base64 alphabets")
    padded = body.replace("-", "+").replace("_", "/") + "=" * (-len(body) % 4)
    if text != body and len(text) != len(padded):
        raise VerificationError(f"receipt {what} has wrong base64 padding")
    try:
        data = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise VerificationError(f"receipt {what} is not base64") from exc
    if base64.b64encode(data).decode("ascii") != padded:
        raise VerificationError(f"receipt {what} is not canonical base64 (stray bits)")
    return data


def _check_envelope(env: Mapping[str, Any]) -> None:
    """DSSE envelope.md §Parsing rules, made exact (see the module docstring)."""
    if not isinstance(env, Mapping):
        raise VerificationError("receipt is not a JSON object")
    if set(env) != _ENVELOPE_FIELDS:
        raise VerificationError(
            "receipt envelope must have exactly payload, payloadType, signatures",
            fields=",".join(sorted(str(k)[:40] for k in env)),
        )
    if not isinstance(env["payload"], str) or not isinstance(env["payloadType"], str):
        raise VerificationError("receipt payload and payloadType must be strings")
    if len(env["payload"]) > MAX_RECEIPT_BYTES:
        raise VerificationError("receipt payload is too large", size=len(env["payload"]))
    _b64decode(env["payload"], "payload")
    sigs = env["signatures"]
    if not isinstance(sigs, list) or not sigs:
        raise VerificationError("receipt signatures must be a non-empty list")
    if len(sigs) > _MAX_SIGNATURES:
        raise VerificationError("receipt has too many signatures", count=len(sigs))
    for i, sig in enumerate(sigs):
        if not isinstance(sig, Mapping) or set(sig) != _SIGNATURE_FIELDS:
            raise VerificationError("receipt signature must have exactly keyid and sig", position=i)
        if not isinstance(sig["keyid"], str) or not isinstance(sig["sig"], str):
            raise VerificationError("receipt signature keyid and sig must be strings", position=i)
        if len(_b64decode(sig["sig"], "sig")) != _ED25519_SIG_SIZE:
            raise VerificationError("receipt signature is not 64 bytes (Ed25519)", position=i)


def _is_sha256_hex(value: object) -> bool:
    # in-toto spec/v1/digest_set.md: hex-encoded digests are lowercase.
    return isinstance(value, str) and len(value) == 64 and set(value) <= _HEX


def _check_predicate(pred: object) -> dict[str, Any]:
    """The predicate, checked; raises VerificationError naming the wrong field."""
    if not isinstance(pred, dict) or set(pred) != _PREDICATE_FIELDS:
        raise VerificationError(
            "receipt predicate must have exactly effect, reasons, snapshot, ledger"
        )
    if pred["effect"] not in _EFFECTS:
        raise VerificationError("receipt predicate effect is not allow or deny")
    reasons = pred["reasons"]
    if not isinstance(reasons, list) or not all(isinstance(c, str) and c for c in reasons):
        raise VerificationError("receipt predicate reasons must be a list of codes")
    if pred["snapshot"] is not None and not isinstance(pred["snapshot"], str):
        raise VerificationError("receipt predicate snapshot must be a string or null")
    ledger = pred["ledger"]
    if not isinstance(ledger, dict) or set(ledger) != _LEDGER_FIELDS:
        raise VerificationError("receipt predicate ledger must have exactly origin and index")
    if not isinstance(ledger["origin"], str) or not ledger["origin"]:
        raise VerificationError("receipt ledger origin must be a non-empty string")
    index = ledger["index"]
    if index is not None and (type(index) is not int or not 0 <= index < 2**63):
        raise VerificationError("receipt ledger index must be a non-negative integer or null")
    return pred


def _parse_statement(st: object, *, keyid: str) -> Receipt:
    """in-toto spec/v1/statement.md; unknown Statement fields are ignored (§Parsing rules)."""
    if not isinstance(st, dict):
        raise VerificationError("receipt payload is not a JSON object")
    if st.get("_type") != STATEMENT_TYPE:
        raise VerificationError("receipt payload is not an in-toto Statement v1")
    if st.get("predicateType") != PREDICATE_TYPE:
        raise VerificationError("receipt predicateType is not an Interlock decision receipt")
    subjects = st.get("subject")
    # One decision per receipt: a second subject would make "the" digest ambiguous.
    if not isinstance(subjects, list) or len(subjects) != 1 or not isinstance(subjects[0], dict):
        raise VerificationError("receipt statement must have exactly one subject")
    subject = subjects[0]
    name = subject.get("name")
    if not isinstance(name, str) or not name.startswith(SUBJECT_PREFIX) or name == SUBJECT_PREFIX:
        raise VerificationError("receipt subject name is not interlock:decision/<id>")
    dig = subject.get("digest")
    if not isinstance(dig, dict) or not _is_sha256_hex(dig.get("sha256")):
        raise VerificationError("receipt subject digest has no lowercase hex sha256")
    pred = _check_predicate(st.get("predicate"))
    return Receipt(
        subject_name=name,
        digest=dig["sha256"],
        effect=pred["effect"],
        reasons=tuple(pred["reasons"]),
        snapshot=pred["snapshot"],
        ledger_origin=pred["ledger"]["origin"],
        ledger_index=pred["ledger"]["index"],
        keyid=keyid,
    )


def _check_record(receipt: Receipt, record: bytes) -> None:
    got = hashlib.sha256(record).hexdigest()
    if got != receipt.digest:
        raise VerificationError(
            "record does not match the receipt's subject digest",
            expected=receipt.digest,
            actual=got,
        )
    # The digest binds the record; these catch a signer that summarized it wrongly.
    rec = _loads(record)
    if not isinstance(rec, dict):
        raise VerificationError("record is not a JSON object")
    reasons = rec.get("reasons")
    codes = (
        tuple(r.get("code") for r in reasons if isinstance(r, dict))
        if isinstance(reasons, list)
        else None
    )
    if (
        rec.get("id") != receipt.record_id
        or rec.get("effect") != receipt.effect
        or codes != receipt.reasons
        or rec.get("snapshot") != receipt.snapshot
    ):
        raise VerificationError("record does not match what the receipt states about it")
