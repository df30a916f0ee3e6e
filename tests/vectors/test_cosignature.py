# ruff: noqa: E501 - published test vectors, kept verbatim
"""C2SP tlog-cosignature (cosignature/v1) against data this code did not produce:

- the spec's own signed-message example (c2sp.org/tlog-cosignature §Ed25519 signed message);
- a real checkpoint of the CT log ``arche2025h1.staging.ct.transparency.dev`` cosigned by
  public witnesses (remora.n621.de, witness1.smartit.nu, transparency.dev's little-garden),
  with their published verifier keys, as published in a third-party test suite;
- verifier keys from transparency-dev/formats ``note/note_cosigv1_test.go``, and the witness
  key pair of transparency-dev/witness ``witness/witness_test.go``.
"""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from interlock.errors import UsageError, VerificationError
from interlock.ledger.cosign import (
    CosignatureVerifier,
    Cosigner,
    QuorumNotMet,
    cosignature_key_id,
    signed_message,
    verify_quorum,
)
from interlock.ledger.note import NoteVerifier

# c2sp.org/tlog-cosignature §Ed25519 signed message (the example, verbatim)
SPEC_BODY = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
SPEC_MESSAGE = (
    "cosignature/v1\n"
    "time 1679315147\n"
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)

ARCHE = """arche2025h1.staging.ct.transparency.dev
1432088532
U7WM79jrzyhGZ5/GUBTpM7NzwdyfFx61t3RovgcC4Ro=

— arche2025h1.staging.ct.transparency.dev zTM8sQAAAZ5W0WdjBAMARjBEAiBjW5IQf9pvsYLfQFX6hoGREPMHbdQ3urbllzalApkptQIgIpwtEroeW2BXaHAI4kJXFbon5Ch9MNL5zRNZ55lvGt0=
— arche2025h1.staging.ct.transparency.dev ui8GwCF1+kWqZrxGdhj4aX3gcw7XUlXQQabg/27lefwhUkzbC3NygNI75MdhL1bfTW9g8Ei59RA23oHP7Ry1k3ZFWwQ=
— transparency.dev/DEV:witness-little-garden 2AQqhwAAAABqEiEgzgFIqqhbUoDwjMWE6UP8nd8/KYTzwZ2rhIgcqoXHAwVkjZr4AscylP3v7sEodkRAErumC2q44vdgJY096st5BQ==
— witness1.smartit.nu/witness1 pIyCDwAAAABqEiEghIp82KWebrw7/oHQwlTAm3g2RKS4+eebl8eO0WH+/iEcxZ75W3u5hNI7TOQtmJbqmNWVuE0tgh0XwzdZsDsUAQ==
— remora.n621.de 2net5wAAAABqEiEgPlfF3V06o0Y+fHM+J5J9s27wgxxcOVSpZ/2g/KSiXCg9DEZI+aVCIobWX9sXTynk5XeU/zZ0WBxtqB0DrAWfBw==
— witness.stagemole.eu Z/euoAAAAABqEiEgw0i+7g2ENfDAWHmtRzCfKTHSDwYDJA2NmKeGi9Y8FtEyOUvVr+AJmIY/2TUFucgKi7lI7cUiOvKFYe/TmN9DAg==
"""
ARCHE_LOG = (
    "arche2025h1.staging.ct.transparency.dev+ba2f06c0+AU0vHmlGCS/PdN8b2OaGmKprLI8HKM+dJ472xgFYh15f"
)
ARCHE_WITNESSES = [
    "transparency.dev/DEV:witness-little-garden+d8042a87+BCtusOxINQNUTN5Oj8HObRkh2yHf/MwYaGX4CPdiVEPM",
    "witness1.smartit.nu/witness1+a48c820f+BPSFWg9G6KPiO7QPryYO5Xq4oYJJ+kAvLKLSimDhoxMO",
    "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2",
]
# all three cosigned at 0x6a122120 (the 8 bytes after each line's key ID)
ARCHE_TIME = 0x6A122120

# transparency-dev/witness witness/witness_test.go: the witness's note key pair (type 0x01)
W_SK = "PRIVATE+KEY+witness+f13a86db+AaLa/dfyBhyo/m0Z7WCi98ENVZWtrP8pxgRNrx7tIWiA"
W_PK = "witness+f13a86db+AdYV1Ztajd9BvyjP2HgpwrqYL6TjOwIjGMOq8Bu42xbN"


def test_signed_message_is_the_spec_example() -> None:
    assert signed_message(SPEC_BODY, 1679315147) == SPEC_MESSAGE.encode()


@pytest.mark.parametrize("ts", [-1, 1 << 63, True])
def test_signed_message_refuses_out_of_range_timestamps(ts: int) -> None:
    with pytest.raises(UsageError):
        signed_message(SPEC_BODY, ts)


@pytest.mark.parametrize("vkey", ARCHE_WITNESSES)
def test_real_witness_cosignatures_verify(vkey: str) -> None:
    assert CosignatureVerifier.from_vkey(vkey).verify(ARCHE) == ARCHE_TIME


def test_real_checkpoint_meets_a_quorum_of_three() -> None:
    verifiers = [CosignatureVerifier.from_vkey(v) for v in ARCHE_WITNESSES]
    head = verify_quorum(ARCHE, NoteVerifier.from_vkey(ARCHE_LOG), verifiers, 3)
    assert head.checkpoint.size == 1432088532
    assert set(head.cosigners) == {v.name for v in verifiers}
    # time checks: fresh relative to their own time, too old a year later with a max age
    verify_quorum(
        ARCHE, NoteVerifier.from_vkey(ARCHE_LOG), verifiers, 3, now=ARCHE_TIME, max_age=60
    )
    with pytest.raises(QuorumNotMet):
        verify_quorum(
            ARCHE,
            NoteVerifier.from_vkey(ARCHE_LOG),
            verifiers,
            1,
            now=ARCHE_TIME + 365 * 86400,
            max_age=3600,
        )
    with pytest.raises(QuorumNotMet):  # in the future beyond the skew
        verify_quorum(ARCHE, NoteVerifier.from_vkey(ARCHE_LOG), verifiers, 1, now=ARCHE_TIME - 301)


def test_a_witness_that_did_not_cosign_is_missing_from_the_quorum() -> None:
    other = Cosigner("witness.example/absent", Ed25519PrivateKey.generate())
    verifiers = [CosignatureVerifier.from_vkey(v) for v in [*ARCHE_WITNESSES, other.vkey]]
    with pytest.raises(QuorumNotMet) as info:
        verify_quorum(ARCHE, NoteVerifier.from_vkey(ARCHE_LOG), verifiers, 4)
    assert info.value.evidence["cosigned"] == 3
    assert info.value.reason_code == "POLICY_STALE"


def test_a_changed_checkpoint_fails_every_cosignature() -> None:
    clobbered = ARCHE.replace("1432088532", "1432088533", 1)
    for vkey in ARCHE_WITNESSES:
        with pytest.raises(VerificationError):
            CosignatureVerifier.from_vkey(vkey).verify(clobbered)


def test_key_id_uses_type_0x04() -> None:
    # remora.n621.de's published vkey: its key ID is SHA-256(name || \n || 0x04 || key)[:4]
    raw = base64.b64decode("BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2")
    assert raw[0] == 0x04
    assert cosignature_key_id("remora.n621.de", raw[1:]).hex() == "da77ade7"
    as_note_key = hashlib.sha256(b"remora.n621.de\n\x01" + raw[1:]).digest()[:4]
    assert as_note_key.hex() != "da77ade7"


@pytest.mark.parametrize(
    "vkey",
    [
        # transparency-dev/formats note_cosigv1_test.go: a plain Ed25519 (0x01) note key is
        # not a cosignature key here (it would let a log signature pass as a cosignature)
        "TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6",
        "bananas.sigstore.dev+12344556",
        "rekor.sigstore.dev+12345678+THIS_IS_NOT_BASE64!",
        "rekor.sigstore.dev+12345678+AwEB",
        "remora.n621.de+00000000+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2",
        "remora.n621.de+DA77ADE7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2",
    ],
)
def test_bad_witness_keys_are_refused(vkey: str) -> None:
    with pytest.raises(VerificationError):
        CosignatureVerifier.from_vkey(vkey)


def test_transparency_dev_witness_key_cosigns_and_verifies() -> None:
    seed = base64.b64decode(W_SK.split("+", 4)[4])[1:]
    key = Ed25519PrivateKey.from_private_bytes(seed)
    published = base64.b64decode(W_PK.split("+", 2)[2])
    assert key.public_key().public_bytes_raw() == published[1:]
    cosigner = Cosigner("witness", key)
    assert cosigner.key_id == hashlib.sha256(b"witness\n\x04" + published[1:]).digest()[:4]
    line = cosigner.cosign(SPEC_BODY, timestamp=1679315147)
    blob = base64.b64decode(line.split(" ")[2])
    assert blob[4:12] == (1679315147).to_bytes(8, "big")
    key.public_key().verify(blob[12:], SPEC_MESSAGE.encode())  # the spec's message, signed
    note = SPEC_BODY + "\n" + line
    assert CosignatureVerifier.from_vkey(cosigner.vkey).verify(note) == 1679315147


def test_one_key_under_two_names_counts_once() -> None:
    key = Ed25519PrivateKey.generate()
    a, b = Cosigner("w.example/a", key), Cosigner("w.example/b", key)
    with pytest.raises(UsageError):
        verify_quorum(
            ARCHE,
            NoteVerifier.from_vkey(ARCHE_LOG),
            [CosignatureVerifier.from_vkey(a.vkey), CosignatureVerifier.from_vkey(b.vkey)],
            2,
        )


@pytest.mark.parametrize("quorum", [0, -1, 4])
def test_quorum_out_of_range_is_refused(quorum: int) -> None:
    verifiers = [CosignatureVerifier.from_vkey(v) for v in ARCHE_WITNESSES]
    with pytest.raises(UsageError):
        verify_quorum(ARCHE, NoteVerifier.from_vkey(ARCHE_LOG), verifiers, quorum)
