"""Decision receipts: DSSE over an in-toto Statement v1, signed by the node key."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from interlock.core.canonical import canonical_bytes
from interlock.errors import UsageError, VerificationError
from interlock.trust.keys import public_raw
from interlock.trust.receipt import (
    MAX_RECEIPT_BYTES,
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    Receipt,
    decode_receipt,
    encode_receipt,
    key_id,
    make_receipt,
    pae,
    verify_receipt,
)

NODE = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"receipt-node").digest())
OTHER = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"receipt-other").digest())
ORIGIN = "interlock.test/receipts"


def _record(**over: Any) -> bytes:
    rec: dict[str, Any] = {
        "v": 1,
        "type": "decision",
        "id": "0190c2b4-0000-7000-8000-000000000001",
        "ts": "2025-01-01T00:00:00.000000Z",
        "stage": "pipeline",
        "request": {"principal": "spiffe://acme.test/agent/a", "action": "tool.call"},
        "parent": None,
        "parent_leaf": None,
        "snapshot": "ab" * 32,
        "effect": "deny",
        "reasons": [
            {"code": "POLICY_DENIED", "detail": "forbid rule", "policy": "p1"},
            {"code": "CAPABILITY_INVALID", "detail": "expired"},
        ],
        "obligations": [],
    }
    rec.update(over)
    return canonical_bytes(rec)


RECORD = _record()


def _envelope(record: bytes = RECORD, index: int | None = 42) -> dict[str, Any]:
    return make_receipt(record, signer=NODE, ledger_index=index, log_origin=ORIGIN)


def _statement(env: dict[str, Any]) -> Any:
    return json.loads(base64.b64decode(env["payload"]))


def _resign(statement: Any, key: Ed25519PrivateKey = NODE) -> dict[str, Any]:
    """An envelope over an arbitrary statement, correctly signed: isolates statement checks."""
    body = json.dumps(statement, separators=(",", ":")).encode()
    sig = key.sign(pae(PAYLOAD_TYPE, body))
    return {
        "payload": base64.b64encode(body).decode(),
        "payloadType": PAYLOAD_TYPE,
        "signatures": [{"keyid": key_id(key), "sig": base64.b64encode(sig).decode()}],
    }


# --- PAE: DSSE protocol.md §Test Vectors --------------------------------------------------


def test_pae_matches_dsse_spec_test_vector() -> None:
    # github.com/secure-systems-lab/dsse protocol.md §Test Vectors: PAYLOAD_TYPE
    # "http://example.com/HelloWorld", SERIALIZED_BODY "hello world" give this PAE.
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_is_the_spec_formula() -> None:
    # PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body, LEN in bytes.
    t, body = "application/vnd.é+json", b"\x00 \xff"
    tb = t.encode()
    expected = b"DSSEv1" + b" " + str(len(tb)).encode() + b" " + tb
    expected += b" " + str(len(body)).encode() + b" " + body
    assert pae(t, body) == expected
    assert pae("", b"") == b"DSSEv1 0  0 "


def test_cross_check_with_securesystemslib() -> None:
    from securesystemslib import dsse  # a dev dependency: the reference DSSE implementation

    for body in (b"x", b"", "é ünïcode".encode()):
        reference = dsse.Envelope(payload=body, payload_type=PAYLOAD_TYPE, signatures={})
        assert reference.pae() == pae(PAYLOAD_TYPE, body)
    env = _envelope()
    parsed = dsse.Envelope.from_dict(env)
    assert parsed.pae() == pae(PAYLOAD_TYPE, base64.b64decode(env["payload"]))


# --- round trip and shape -----------------------------------------------------------------


def test_round_trip() -> None:
    env = _envelope()
    text = encode_receipt(env)
    assert decode_receipt(text) == env
    for form in (env, text, text.encode()):
        got = verify_receipt(form, public_key=NODE.public_key(), record=RECORD)
        assert got == Receipt(
            subject_name="interlock:decision/0190c2b4-0000-7000-8000-000000000001",
            digest=hashlib.sha256(RECORD).hexdigest(),
            effect="deny",
            reasons=("POLICY_DENIED", "CAPABILITY_INVALID"),
            snapshot="ab" * 32,
            ledger_origin=ORIGIN,
            ledger_index=42,
            keyid=key_id(NODE),
        )
    assert got.record_id == "0190c2b4-0000-7000-8000-000000000001"


def test_encoding_is_compact_and_deterministic() -> None:
    text = encode_receipt(_envelope())
    assert " " not in text and "\n" not in text
    assert text == encode_receipt(_envelope())  # Ed25519 is deterministic
    assert text.startswith('{"payload":')


def test_uncommitted_record_has_null_index() -> None:
    env = _envelope(index=None)
    assert verify_receipt(env, public_key=NODE.public_key()).ledger_index is None
    assert _statement(env)["predicate"]["ledger"] == {"origin": ORIGIN, "index": None}


def test_statement_is_in_toto_v1_shape() -> None:
    env = _envelope()
    assert env["payloadType"] == "application/vnd.in-toto+json"
    assert set(env) == {"payload", "payloadType", "signatures"}
    body = base64.b64decode(env["payload"], validate=True)
    st = json.loads(body)
    assert body == canonical_bytes(st)  # RFC 8785
    assert set(st) == {"_type", "subject", "predicateType", "predicate"}
    assert st["_type"] == "https://in-toto.io/Statement/v1" == STATEMENT_TYPE
    assert st["predicateType"] == PREDICATE_TYPE
    assert isinstance(st["subject"], list) and len(st["subject"]) == 1
    (subject,) = st["subject"]
    # in-toto spec/v1/statement.md: each subject MUST have digest set; digest is lowercase hex.
    assert subject == {
        "name": "interlock:decision/0190c2b4-0000-7000-8000-000000000001",
        "digest": {"sha256": hashlib.sha256(RECORD).hexdigest()},
    }
    assert st["predicate"] == {
        "effect": "deny",
        "reasons": ["POLICY_DENIED", "CAPABILITY_INVALID"],
        "snapshot": "ab" * 32,
        "ledger": {"origin": ORIGIN, "index": 42},
    }
    assert "forbid rule" not in body.decode()  # codes only; details stay in the ledger


def test_keyid_is_sha256_of_raw_public_key() -> None:
    env = _envelope()
    expected = hashlib.sha256(public_raw(NODE.public_key())).hexdigest()
    assert env["signatures"][0]["keyid"] == expected == key_id(NODE) == key_id(NODE.public_key())


def test_signature_is_ed25519_over_pae() -> None:
    env = _envelope()
    sig = base64.b64decode(env["signatures"][0]["sig"])
    NODE.public_key().verify(sig, pae(PAYLOAD_TYPE, base64.b64decode(env["payload"])))


# --- verification failures ----------------------------------------------------------------


def _fails(env: Any, match: str, record: bytes | None = None) -> None:
    with pytest.raises(VerificationError, match=match):
        verify_receipt(env, public_key=NODE.public_key(), record=record)


@pytest.mark.parametrize("position", [0, 10, -1])
def test_flipped_payload_byte_fails(position: int) -> None:
    env = _envelope()
    body = bytearray(base64.b64decode(env["payload"]))
    body[position] ^= 0x01
    env["payload"] = base64.b64encode(bytes(body)).decode()
    _fails(env, "no valid signature")


def test_flipped_signature_byte_fails() -> None:
    env = _envelope()
    sig = bytearray(base64.b64decode(env["signatures"][0]["sig"]))
    sig[5] ^= 0x80
    env["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    _fails(env, "no valid signature")


def test_wrong_key_fails() -> None:
    with pytest.raises(VerificationError, match="no valid signature"):
        verify_receipt(_envelope(), public_key=OTHER.public_key())


def test_keyid_is_only_a_hint() -> None:
    # A signature by OTHER labelled with NODE's keyid must not verify as NODE's.
    env = _resign(_statement(_envelope()), key=OTHER)
    env["signatures"][0]["keyid"] = key_id(NODE)
    _fails(env, "no valid signature")
    # An empty keyid (unset, per DSSE) is tried; another key's keyid is skipped.
    good = _envelope()
    good["signatures"][0]["keyid"] = ""
    assert verify_receipt(good, public_key=NODE.public_key()).keyid == key_id(NODE)
    skipped = _envelope()
    skipped["signatures"][0]["keyid"] = key_id(OTHER)
    _fails(skipped, "no valid signature")


def test_any_matching_signature_verifies() -> None:
    env = _envelope()
    foreign = _resign(_statement(env), key=OTHER)["signatures"][0]
    env["signatures"] = [foreign, *env["signatures"]]
    assert verify_receipt(env, public_key=NODE.public_key()).keyid == key_id(NODE)
    assert verify_receipt(env, public_key=OTHER.public_key()).keyid == key_id(OTHER)


def test_wrong_payload_type_fails() -> None:
    env = _envelope()
    env["payloadType"] = "application/json"
    _fails(env, "payloadType")


def test_signature_over_other_payload_type_fails() -> None:
    # Correct bytes, but signed under another type: PAE binds the type.
    env = _envelope()
    body = base64.b64decode(env["payload"])
    sig = NODE.sign(pae("application/json", body))
    env["signatures"][0]["sig"] = base64.b64encode(sig).decode()
    _fails(env, "no valid signature")


def test_record_mismatch_fails() -> None:
    env = _envelope()
    _fails(env, "subject digest", record=_record(effect="allow", reasons=[]))
    _fails(env, "subject digest", record=RECORD + b" ")


def test_wrongly_summarized_record_fails() -> None:
    # A correctly signed receipt whose predicate does not match the record it names.
    st = _statement(_envelope())
    st["predicate"]["effect"] = "allow"
    _fails(_resign(st), "does not match what the receipt states", record=RECORD)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda e: e.update(extra="x"), "exactly payload"),
        (lambda e: e.pop("payloadType"), "exactly payload"),
        (lambda e: e.pop("signatures"), "exactly payload"),
        (lambda e: e.update(signatures=[]), "non-empty"),
        (lambda e: e["signatures"][0].update(cert="x"), "exactly keyid and sig"),
        (lambda e: e["signatures"][0].pop("keyid"), "exactly keyid and sig"),
        (lambda e: e["signatures"][0].update(sig="AAAA"), "64 bytes"),
        (lambda e: e.update(payload="not base64!"), "not base64"),
        (lambda e: e.update(payload=1), "must be strings"),
        (lambda e: e.update(signatures=e["signatures"] * 17), "too many"),
    ],
)
def test_malformed_envelope_fails(mutate: Any, match: str) -> None:
    env = _envelope()
    mutate(env)
    _fails(env, match)
    with pytest.raises(VerificationError, match=match):
        decode_receipt(json.dumps(env))
    with pytest.raises(VerificationError, match=match):
        encode_receipt(env)


def test_decode_is_strict() -> None:
    text = encode_receipt(_envelope())
    with pytest.raises(VerificationError, match="too large"):
        decode_receipt(text + " " * MAX_RECEIPT_BYTES)
    with pytest.raises(VerificationError, match="not valid JSON"):
        decode_receipt(text[:-1])
    with pytest.raises(VerificationError, match="not a JSON object"):
        decode_receipt("[]")
    with pytest.raises(VerificationError, match="duplicate key"):
        decode_receipt(text[:-1] + ',"payloadType":"x"}')
    with pytest.raises(VerificationError, match="not UTF-8"):
        decode_receipt(b"\xff" + text.encode())
    with pytest.raises(VerificationError, match="NaN"):
        decode_receipt('{"payload":NaN}')


def test_oversize_fails() -> None:
    env = _envelope()
    env["payload"] = base64.b64encode(b"x" * MAX_RECEIPT_BYTES).decode()
    _fails(env, "too large")
    with pytest.raises(VerificationError, match="too large"):
        verify_receipt(json.dumps(env), public_key=NODE.public_key())


def test_url_safe_and_unpadded_base64_accepted() -> None:
    # DSSE protocol.md: "Signers may use either, and verifiers MUST accept either."
    env = _envelope()
    for field in ("payload",):
        env[field] = base64.urlsafe_b64encode(base64.b64decode(env[field])).decode().rstrip("=")
    sig = env["signatures"][0]
    sig["sig"] = base64.urlsafe_b64encode(base64.b64decode(sig["sig"])).decode().rstrip("=")
    assert verify_receipt(env, public_key=NODE.public_key(), record=RECORD).effect == "deny"


def test_non_canonical_base64_fails() -> None:
    env = _envelope()
    sig = env["signatures"][0]["sig"]
    assert sig.endswith("==")
    # Flip a padding bit in the last data character: decodes to the same bytes in lax decoders.
    last = sig[-3]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    env["signatures"][0]["sig"] = sig[:-3] + alphabet[alphabet.index(last) ^ 1] + "=="
    _fails(env, "canonical")
    env = _envelope()
    env["signatures"][0]["sig"] = sig[:10] + "\n" + sig[10:]
    _fails(env, "not base64")


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda s: s.update(_type="https://in-toto.io/Statement/v0.1"), "Statement v1"),
        (lambda s: s.pop("_type"), "Statement v1"),
        (lambda s: s.update(predicateType="https://slsa.dev/provenance/v1"), "predicateType"),
        (lambda s: s.update(subject=[]), "exactly one subject"),
        (lambda s: s.update(subject=s["subject"] * 2), "exactly one subject"),
        (lambda s: s["subject"][0].pop("digest"), "digest"),
        (lambda s: s["subject"][0]["digest"].update(sha256="AB" * 32), "lowercase hex"),
        (lambda s: s["subject"][0].update(name="decision/1"), "subject name"),
        (lambda s: s.pop("predicate"), "predicate must have exactly"),
        (lambda s: s["predicate"].update(extra=1), "predicate must have exactly"),
        (lambda s: s["predicate"].pop("snapshot"), "predicate must have exactly"),
        (lambda s: s["predicate"].update(effect="maybe"), "effect"),
        (lambda s: s["predicate"].update(reasons=[{"code": "X"}]), "reasons"),
        (lambda s: s["predicate"]["ledger"].update(index=-1), "index"),
        (lambda s: s["predicate"]["ledger"].update(index=True), "index"),
        (lambda s: s["predicate"]["ledger"].pop("origin"), "exactly origin and index"),
    ],
)
def test_bad_statement_fails_even_when_signed(mutate: Any, match: str) -> None:
    st = _statement(_envelope())
    mutate(st)
    _fails(_resign(st), match)


def test_unknown_statement_fields_are_ignored() -> None:
    # in-toto spec/v1 §Parsing rules: consumers MUST ignore unrecognized fields.
    st = _statement(_envelope())
    st["x-extension"] = {"a": 1}
    st["subject"][0]["uri"] = "https://example.test/r"
    got = verify_receipt(_resign(st), public_key=NODE.public_key(), record=RECORD)
    assert got.effect == "deny"


def test_payload_not_json_fails_even_when_signed() -> None:
    body = b"not json"
    env = {
        "payload": base64.b64encode(body).decode(),
        "payloadType": PAYLOAD_TYPE,
        "signatures": [
            {
                "keyid": key_id(NODE),
                "sig": base64.b64encode(NODE.sign(pae(PAYLOAD_TYPE, body))).decode(),
            }
        ],
    }
    _fails(env, "not valid JSON")


# --- make_receipt input -------------------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        b"not json",
        b"[]",
        canonical_bytes({"type": "exec.start", "id": "x"}),
        _record(id=None),
        _record(id=""),
        _record(effect="perhaps"),
        _record(reasons=[{"detail": "no code"}]),
        _record(snapshot=5),
    ],
)
def test_make_receipt_refuses_non_decision_records(record: bytes) -> None:
    with pytest.raises(UsageError):
        make_receipt(record, signer=NODE, ledger_index=0, log_origin=ORIGIN)


@pytest.mark.parametrize(("index", "origin"), [(-1, ORIGIN), (0, "")])
def test_make_receipt_refuses_bad_ledger_position(index: int, origin: str) -> None:
    with pytest.raises(UsageError):
        make_receipt(RECORD, signer=NODE, ledger_index=index, log_origin=origin)


def test_allow_with_no_reasons_and_null_snapshot() -> None:
    rec = _record(effect="allow", reasons=[], snapshot=None)
    got = verify_receipt(_envelope(rec, index=0), public_key=NODE.public_key(), record=rec)
    assert (got.effect, got.reasons, got.snapshot, got.ledger_index) == ("allow", (), None, 0)


@pytest.mark.parametrize(
    ("sig", "match"),
    [
        ("A", "not base64"),
        ("AAAA=", "padding"),
        ("AA=", "padding"),
        ("AA===", "not base64"),
        ("A-A+", "mixes"),
        ("é" * 4, "not base64"),
    ],
)
def test_bad_base64_forms_fail(sig: str, match: str) -> None:
    env = _envelope()
    env["signatures"][0]["sig"] = sig
    _fails(env, match)
