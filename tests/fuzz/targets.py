"""The fuzz targets: each takes arbitrary bytes and asserts the documented contract of one
parser of untrusted input.

    >>> sorted(TARGETS)
    ['capability', 'checkpoint', 'intake', 'policy', 'proof', 'receipt']

A target raises (a finding) only when the contract is broken:

* an exception other than the documented one escapes (``MalformedRequest`` from intake,
  ``CapabilityError`` from capability parsing, ``PolicyError`` from bundle loading,
  ``VerificationError`` from proof, receipt and checkpoint parsing) — a traceback where a
  deny with a reason code was promised;
* garbage is accepted as genuine: an allow, a verified capability, a loaded bundle, a verified
  proof, receipt or checkpoint that the fixed keys below never signed. Those keys sign only what
  :mod:`tests.fuzz.seeds` made (the ``issued.json`` beside this file lists the tokens' authority
  revocation ids, which are Ed25519 signatures by the root key: they cannot be made without it);
* a strict parser is not canonical: what it accepts does not format back to the same text.

Every key is derived from a fixed string, so the seed corpus (``corpus/<target>/``) holds
inputs that really verify. The targets are plain functions: ``tests/fuzz/run.py`` runs them
under atheris, ``tests/fuzz/test_fuzz.py`` replays the corpus through them in-process.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from interlock.capability import (
    CapabilityIssuer,
    CapabilityVerifier,
    Right,
    inspect,
    revocation_ids,
)
from interlock.core.model import Effect
from interlock.errors import CapabilityError, MalformedRequest, PolicyError, VerificationError
from interlock.intake import parse_request
from interlock.ledger.cosign import CosignatureVerifier, note_text, parse_signature_lines
from interlock.ledger.merkle import inclusion_proof, leaf_hash, list_reader, root_of
from interlock.ledger.note import (
    Checkpoint,
    NoteSigner,
    NoteVerifier,
    open_checkpoint,
    sign_checkpoint,
)
from interlock.ledger.proof import ProofBundle, format_proof, parse_proof
from interlock.ledger.verify import verify_proof_bundle
from interlock.pipeline import Lineage, Snapshot, decide
from interlock.policy.bundle import PolicyBundle, load_bundle, sign_bundle
from interlock.trust import keys
from interlock.trust.receipt import decode_receipt, encode_receipt, verify_receipt

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
ISSUED = HERE / "issued.json"
DEFAULT_POLICY = Path(keys.__file__).resolve().parents[1] / "policy" / "default"

ORIGIN = "interlock.test/fuzz"
RESEARCHER = "spiffe://acme.test/agent/researcher"
#: the time of every fuzzed request; the seed tokens were issued before it and expire after it
NOW = datetime(2030, 1, 1, tzinfo=UTC)
NOW_TEXT = "2030-01-01T00:00:00.000000Z"
REQUEST_ID = "0190b3f6-7a1c-7000-8000-000000000000"


def fixed_key(name: str) -> Ed25519PrivateKey:
    """An Ed25519 key derived from ``name``: the same in every run (tests only)."""
    return Ed25519PrivateKey.from_private_bytes(
        hashlib.sha256(b"interlock-fuzz/" + name.encode()).digest()
    )


ROOT = fixed_key("biscuit-root")
POLICY = fixed_key("policy")
NODE = fixed_key("node")
LOG = NoteSigner(ORIGIN, fixed_key("log"))
LOG_VERIFIER = NoteVerifier.from_vkey(LOG.vkey)
ROOT_PUBLIC = keys.public_raw(ROOT)
VERIFIER = CapabilityVerifier(ROOT_PUBLIC)


# -- the fixed log the proof and checkpoint seeds come from ----------------------------------

#: the entries of the little log every proof seed proves into
LOG_ENTRIES = tuple(
    json.dumps({"type": "decision", "id": f"e{i}", "n": i}, separators=(",", ":")).encode()
    for i in range(11)
)
#: checkpoint sizes signed for it
SIZES = (1, 2, 3, 7, 8, 11)


@functools.cache
def log_reader() -> Callable[[int, int], bytes]:
    return list_reader([leaf_hash(e) for e in LOG_ENTRIES])


def signed_checkpoint(size: int) -> str:
    """The signed checkpoint of the first ``size`` entries (deterministic: Ed25519)."""
    return sign_checkpoint(_checkpoint(size), LOG)


def _checkpoint(size: int) -> Checkpoint:
    root = root_of([leaf_hash(e) for e in LOG_ENTRIES[:size]])
    return Checkpoint(origin=ORIGIN, size=size, root_hash=root)


#: the checkpoint bodies the log key signed
KNOWN_BODIES = frozenset(_checkpoint(n).body() for n in SIZES)


# -- decision receipts -------------------------------------------------------------------------


def receipt_record(i: int, effect: str = "allow") -> bytes:
    """A decision record (the exact leaf bytes a receipt signs)."""
    rec = {
        "effect": effect,
        "id": f"0190b3f6-7a1c-7000-8000-{i:012d}",
        "reasons": [] if effect == "allow" else [{"code": "POLICY_NO_PERMIT", "detail": "no"}],
        "snapshot": "ab" * 32,
        "type": "decision",
        "v": 1,
    }
    return json.dumps(rec, sort_keys=True, separators=(",", ":")).encode()


RECEIPT_RECORDS = tuple(receipt_record(i, e) for i, e in enumerate(("allow", "deny", "allow")))
KNOWN_RECEIPT_DIGESTS = frozenset(hashlib.sha256(r).hexdigest() for r in RECEIPT_RECORDS)


# -- the policy and the decision snapshot ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Policy:
    bundle: PolicyBundle
    snapshot: Snapshot


@functools.cache
def policy() -> Policy:
    """The default policy, signed (version 1) with the fixed policy key, and a snapshot of it."""
    folder = Path(tempfile.mkdtemp(prefix="interlock-fuzz-"))
    try:
        target = folder / "policy"
        shutil.copytree(DEFAULT_POLICY, target, ignore=shutil.ignore_patterns("manifest.*"))
        sign_bundle(target, POLICY, version=1)
        bundle = load_bundle(target, [POLICY.public_key()])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    snapshot = Snapshot.build(
        root_public=ROOT_PUBLIC,
        bundle=bundle,
        policy_problem=None,
        revoked=frozenset(),
        trust_version=0,
        max_depth=16,
    )
    return Policy(bundle=bundle, snapshot=snapshot)


@functools.cache
def issued() -> frozenset[str]:
    """The authority revocation ids of every token the fixed root key issued (seeds.py)."""
    if not ISSUED.exists():
        return frozenset()
    return frozenset(json.loads(ISSUED.read_text())["authority_revocation_ids"])


@functools.cache
def known_policy_digests() -> frozenset[str]:
    """The digests of the bundles the fixed policy key signed (this run's and seeds.py's)."""
    found = {policy().bundle.digest}
    if ISSUED.exists():
        found.update(json.loads(ISSUED.read_text()).get("policy_digests", []))
    return frozenset(found)


# -- helpers ----------------------------------------------------------------------------------


def text_of(data: bytes) -> str:
    """``data`` as text: UTF-8 where it is, else with lone surrogates for the bad bytes (text
    from a lax decoder, which the parsers must refuse cleanly)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("utf-8", "surrogateescape")


def _genuine_token(token: str, principal: str) -> None:
    """An accepted token must carry an authority block the root key really signed."""
    info = inspect(token, ROOT_PUBLIC)
    if info.principal != principal:
        raise AssertionError(f"allowed for {principal!r} a token of {info.principal!r}")
    if info.revocation_ids[0] not in issued():
        raise AssertionError(f"accepted a token the root key never issued: {token[:60]!r}")


# -- the targets ------------------------------------------------------------------------------


def fuzz_intake(data: bytes) -> None:
    """Request intake and the pure pipeline: ``MalformedRequest`` or a request; the pipeline
    never raises, and an allow needs a genuine token of that principal."""
    try:
        request = parse_request(data, request_id=REQUEST_ID, time=NOW_TEXT)
    except MalformedRequest:
        return
    if len(data) > 64 * 1024:
        raise AssertionError("intake accepted a request over 64 KiB")
    lineage = Lineage()
    if request.parent is not None:
        lineage = Lineage(parent=request.parent, status="unknown", depth=1)
    verdict = decide(request, policy().snapshot, lineage)
    if verdict.effect is Effect.ALLOW:
        if request.capability is None:
            raise AssertionError("an allow without a capability")
        _genuine_token(request.capability, request.principal)
    elif not verdict.reasons:
        raise AssertionError("a deny without a reason")


def fuzz_capability(data: bytes) -> None:
    """Token parsing: ``inspect`` and ``revocation_ids`` raise only ``CapabilityError``; the
    verifier never raises, and says ok only for a genuine token of the principal."""
    token = text_of(data)
    for call in (lambda: inspect(token), lambda: inspect(token, ROOT_PUBLIC)):
        with contextlib.suppress(CapabilityError):
            call()
    with contextlib.suppress(CapabilityError):
        revocation_ids(token)
    result = VERIFIER.check(
        token=token,
        principal=RESEARCHER,
        action="tool.call",
        resource="Tool::web_search",
        parent=None,
        now=int(NOW.timestamp()),
        revoked=frozenset(),
    )
    if result.ok:
        _genuine_token(token, RESEARCHER)
    elif result.code is None:
        raise AssertionError("a failed check without a reason code")


def fuzz_policy(data: bytes) -> None:
    """Bundle loading: ``PolicyError``, or a bundle the policy key signed."""
    try:
        bundle = PolicyBundle.from_blob(data, [POLICY.public_key()])
    except PolicyError:
        return
    if bundle.digest not in known_policy_digests():
        raise AssertionError(f"loaded a bundle the policy key never signed: {bundle.digest}")


def fuzz_proof(data: bytes) -> None:
    """tlog-proof parsing and verification: ``VerificationError``; what parses formats back to
    the same text; what verifies is an entry of the fixed log at its index."""
    text = text_of(data)
    try:
        bundle = parse_proof(text)
    except VerificationError:
        return
    if format_proof(bundle) != text:
        raise AssertionError("parse_proof accepted a non-canonical proof")
    try:
        entry = verify_proof_bundle(text, LOG.vkey)
    except VerificationError:
        return
    if not (
        entry.index < len(LOG_ENTRIES)
        and LOG_ENTRIES[entry.index] == entry.data
        and entry.checkpoint.body() in KNOWN_BODIES
    ):
        raise AssertionError(f"verified an entry the log never held at {entry.index}")


def fuzz_receipt(data: bytes) -> None:
    """DSSE receipt decoding and verification: ``VerificationError``; a decoded envelope
    encodes; a verified receipt is one the node key signed."""
    try:
        envelope = decode_receipt(data)
    except VerificationError:
        envelope = None
    if envelope is not None:
        encode_receipt(envelope)
    try:
        receipt = verify_receipt(data, public_key=NODE.public_key())
    except VerificationError:
        return
    if envelope is None:
        raise AssertionError("verified a receipt that does not decode")
    if receipt.digest not in KNOWN_RECEIPT_DIGESTS:
        raise AssertionError("verified a receipt the node key never signed")
    for record in RECEIPT_RECORDS:
        try:
            verify_receipt(data, public_key=NODE.public_key(), record=record)
        except VerificationError:
            continue


def fuzz_checkpoint(data: bytes) -> None:
    """Signed checkpoint notes, verifier keys (log and witness), cosignature lines:
    ``VerificationError``; a parsed body is
    canonical; an opened checkpoint is one the log key signed."""
    text = text_of(data)
    for parse in (
        lambda: NoteVerifier.from_vkey(text.strip("\n")),
        lambda: CosignatureVerifier.from_vkey(text.strip("\n")),
        lambda: parse_signature_lines(text),
        lambda: note_text(text),
    ):
        with contextlib.suppress(VerificationError):
            parse()
    try:
        body = Checkpoint.from_body(text)
    except VerificationError:
        pass
    else:
        if body.body() != text:
            raise AssertionError("Checkpoint.from_body accepted a non-canonical body")
    try:
        cp = open_checkpoint(text, LOG_VERIFIER)
    except VerificationError:
        return
    if cp.body() not in KNOWN_BODIES:
        raise AssertionError("opened a checkpoint the log key never signed")


#: target name -> function (the corpus folder has the same name)
TARGETS: dict[str, Callable[[bytes], None]] = {
    "intake": fuzz_intake,
    "capability": fuzz_capability,
    "policy": fuzz_policy,
    "proof": fuzz_proof,
    "receipt": fuzz_receipt,
    "checkpoint": fuzz_checkpoint,
}

#: the documented exception of each target's parser (for the report of a finding)
DOCUMENTED: dict[str, type[Exception]] = {
    "intake": MalformedRequest,
    "capability": CapabilityError,
    "policy": PolicyError,
    "proof": VerificationError,
    "receipt": VerificationError,
    "checkpoint": VerificationError,
}


def issued_token(
    principal: str = RESEARCHER, *, rights: tuple[str, ...] = ("tool.call:Tool::*",)
) -> str:
    """A token from the fixed root key (seeds.py records its revocation id in issued.json)."""
    return CapabilityIssuer(keys.private_raw(ROOT)).issue(
        principal=principal,
        rights=[Right.parse(r) for r in rights],
        expires_at=datetime(2099, 1, 1, tzinfo=UTC),
        now=datetime(2029, 12, 31, tzinfo=UTC),
    )


def proof_text(index: int, size: int) -> str:
    """The tlog-proof of entry ``index`` in the checkpoint of ``size`` (with its data)."""
    return format_proof(
        ProofBundle(
            index=index,
            extra=LOG_ENTRIES[index],
            inclusion=inclusion_proof(index, size, log_reader()),
            checkpoint_note=signed_checkpoint(size),
        )
    )
