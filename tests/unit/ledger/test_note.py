"""Signed notes and checkpoints: what is accepted, and every way a note is refused."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from interlock.errors import UsageError, VerificationError
from interlock.ledger.note import (
    MAX_NOTE_BYTES,
    Checkpoint,
    NoteSigner,
    NoteVerifier,
    open_checkpoint,
    sign_checkpoint,
)

NAME = "interlock.test/log"
ROOT = hashlib.sha256(b"root").digest()


def _key(seed: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed.encode()).digest())


@pytest.fixture
def signer() -> NoteSigner:
    return NoteSigner(NAME, _key("a"))


@pytest.fixture
def verifier(signer: NoteSigner) -> NoteVerifier:
    return NoteVerifier.from_vkey(signer.vkey)


# --- signer ------------------------------------------------------------------------------


def test_vkey_shape(signer: NoteSigner) -> None:
    name, key_id, key = signer.vkey.split("+", 2)
    assert name == NAME
    assert key_id == signer.key_id.hex()
    raw = base64.b64decode(key)
    assert raw[0] == 0x01
    assert hashlib.sha256(NAME.encode() + b"\n\x01" + raw[1:]).digest()[:4] == signer.key_id


@pytest.mark.parametrize("name", ["", "a b", "a+b", "a\tb", "a\u00a0b", "a\nb", "a\x01b"])
def test_signer_rejects_bad_names(name: str) -> None:
    with pytest.raises(UsageError):
        NoteSigner(name, _key("a"))


@pytest.mark.parametrize("text", ["", "no newline", "a\x00b\n", "tab\there\n", "\ud800\n"])
def test_sign_rejects_bad_text(signer: NoteSigner, text: str) -> None:
    with pytest.raises(UsageError):
        signer.sign(text)


def test_sign_and_verify_round_trip(signer: NoteSigner, verifier: NoteVerifier) -> None:
    text = "line one\n\nline three after an empty line\n"
    note = signer.sign(text)
    assert note.startswith(text + "\n— " + NAME + " ")
    assert verifier.verify(note) == text


def test_unicode_text_round_trips(signer: NoteSigner, verifier: NoteVerifier) -> None:
    text = "ed è subito sera — ✓\n"
    assert verifier.verify(signer.sign(text)) == text


# --- verifier key parsing ----------------------------------------------------------------


def test_from_vkey_accessors(signer: NoteSigner, verifier: NoteVerifier) -> None:
    assert verifier.name == NAME
    assert verifier.key_id == signer.key_id
    assert verifier.vkey == signer.vkey


def _bad_vkeys(vkey: str) -> list[str]:
    name, kid, key = vkey.split("+", 2)
    raw = base64.b64decode(key)
    cosig = base64.b64encode(bytes([4]) + raw[1:]).decode()
    return [
        "",
        name,
        f"{name}+{kid}",
        f"+{kid}+{key}",
        f"{name}+{kid.upper()}+{key}",
        f"{name}+{kid[:7]}+{key}",
        f"{name}+{int(kid, 16) ^ 1:08x}+{key}",  # key ID does not match
        f"other.name+{kid}+{key}",  # key ID does not match this name
        f"{name}+{kid}+{cosig}",  # cosignature type
        f"{name}+{kid}+{base64.b64encode(raw[:-1]).decode()}",  # short key
        f"{name}+{kid}+{key[:-1]}",  # bad base64
        f"{name}+{kid}+ {key}",
    ]


def test_from_vkey_rejects_malformed(signer: NoteSigner) -> None:
    for bad in _bad_vkeys(signer.vkey):
        with pytest.raises(VerificationError):
            NoteVerifier.from_vkey(bad)


# --- verification failures ---------------------------------------------------------------


def test_wrong_key_is_rejected(signer: NoteSigner) -> None:
    note = signer.sign("hello\n")
    other = NoteVerifier.from_vkey(NoteSigner(NAME, _key("b")).vkey)
    with pytest.raises(VerificationError, match="no signature from the expected key"):
        other.verify(note)


def test_same_key_other_name_is_ignored(signer: NoteSigner) -> None:
    note = signer.sign("hello\n")
    other = NoteVerifier.from_vkey(NoteSigner("other.test/log", _key("a")).vkey)
    with pytest.raises(VerificationError, match="no signature"):
        other.verify(note)


def test_matching_name_and_id_with_bad_signature_rejects(
    signer: NoteSigner, verifier: NoteVerifier
) -> None:
    note = signer.sign("hello\n")
    forged = base64.b64encode(signer.key_id + bytes(64)).decode()
    line = f"— {NAME} {forged}\n"
    # Even alongside a valid signature, a failing one from the known key rejects the note.
    with pytest.raises(VerificationError, match="does not verify"):
        verifier.verify(note + line)
    with pytest.raises(VerificationError, match="does not verify"):
        verifier.verify("hello\n\n" + line)


def test_tampered_text_is_rejected(signer: NoteSigner, verifier: NoteVerifier) -> None:
    note = signer.sign("size 10\n")
    with pytest.raises(VerificationError):
        verifier.verify(note.replace("size 10", "size 11"))


def test_unknown_signatures_are_ignored(signer: NoteSigner, verifier: NoteVerifier) -> None:
    witness = NoteSigner("witness.test", _key("w"))
    text = "hello\n"
    note = signer.sign(text)
    extra_line = witness.sign(text).split("\n\n", 1)[1]
    assert verifier.verify(note + extra_line) == text
    assert verifier.verify(text + "\n" + extra_line + note.split("\n\n", 1)[1]) == text


def _sig_block(note: str) -> str:
    return note.split("\n\n", 1)[1]


@pytest.mark.parametrize(
    "mangle",
    [
        lambda n: n[:-1],  # signature line not terminated
        lambda n: n.replace("\n\n", "\n"),  # no blank line
        lambda n: n + "\n",  # trailing blank line: no signatures after the last empty line
        lambda n: n + "not a signature\n",
        lambda n: n.replace("— ", "- "),  # hyphen, not an em dash
        lambda n: n.replace("— ", "—  "),  # empty name
        lambda n: n.replace(f"— {NAME} ", f"— {NAME}  "),  # extra space
        lambda n: n.replace("\n— ", "\n— \u00a0"),
        lambda n: n[:-2] + "!\n",  # bad base64
        lambda n: "\x07" + n,
        lambda n: n.replace("\n", "\r\n"),
        lambda n: n.split(" ")[0] + " " + n.split(" ")[1] + " AAAA\n",  # 3-byte blob
    ],
)
def test_malformed_notes_are_rejected(
    signer: NoteSigner, verifier: NoteVerifier, mangle: Callable[[str], str]
) -> None:
    note = signer.sign("hello\n")
    with pytest.raises(VerificationError):
        verifier.verify(mangle(note))


def test_oversized_note_is_rejected(signer: NoteSigner, verifier: NoteVerifier) -> None:
    note = signer.sign("hello\n")
    huge = "x" * MAX_NOTE_BYTES + "\n" + "\n" + _sig_block(note)
    with pytest.raises(VerificationError, match="too large"):
        verifier.verify(huge)
    with pytest.raises(UsageError):
        signer.sign("x" * MAX_NOTE_BYTES + "\n")


# --- checkpoints -------------------------------------------------------------------------


def test_checkpoint_body_and_parse() -> None:
    cp = Checkpoint(origin=NAME, size=42, root_hash=ROOT, extensions=("durability full",))
    body = cp.body()
    assert body == f"{NAME}\n42\n{base64.b64encode(ROOT).decode()}\ndurability full\n"
    assert Checkpoint.from_body(body) == cp


@pytest.mark.parametrize(
    "kwargs",
    [
        {"origin": "", "size": 0, "root_hash": ROOT},
        {"origin": "a\nb", "size": 0, "root_hash": ROOT},
        {"origin": NAME, "size": -1, "root_hash": ROOT},
        {"origin": NAME, "size": 1 << 64, "root_hash": ROOT},
        {"origin": NAME, "size": True, "root_hash": ROOT},
        {"origin": NAME, "size": 0, "root_hash": ROOT[:31]},
        {"origin": NAME, "size": 0, "root_hash": ROOT, "extensions": ("",)},
        {"origin": NAME, "size": 0, "root_hash": ROOT, "extensions": ("a\nb",)},
    ],
)
def test_checkpoint_constructor_checks_invariants(kwargs: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        Checkpoint(**kwargs)  # type: ignore[arg-type]


B64ROOT = base64.b64encode(ROOT).decode()


@pytest.mark.parametrize(
    "body",
    [
        f"{NAME}\n1\n{B64ROOT}",  # no final newline
        f"{NAME}\n1\n",
        f"\n1\n{B64ROOT}\n",
        f"{NAME}\n01\n{B64ROOT}\n",
        f"{NAME}\n+1\n{B64ROOT}\n",
        f"{NAME}\n-1\n{B64ROOT}\n",
        f"{NAME}\n 1\n{B64ROOT}\n",
        f"{NAME}\n\uff11\n{B64ROOT}\n",  # FULLWIDTH DIGIT ONE
        f"{NAME}\n{1 << 64}\n{B64ROOT}\n",
        f"{NAME}\n1\n{base64.b64encode(ROOT[:31]).decode()}\n",
        f"{NAME}\n1\n{B64ROOT[:-1]}\n",
        f"{NAME}\n1\n{B64ROOT[:-2]}F=\n",  # non-canonical padding bits
        f"{NAME}\n1\n{B64ROOT}\n\n",  # empty extension line
        f"{NAME}\n1\n{B64ROOT}\next\n\nmore\n",
    ],
)
def test_checkpoint_from_body_is_strict(body: str) -> None:
    with pytest.raises(VerificationError):
        Checkpoint.from_body(body)


def test_checkpoint_sizes_at_the_limits() -> None:
    for size in (0, 1, (1 << 64) - 1):
        cp = Checkpoint(origin=NAME, size=size, root_hash=ROOT)
        assert Checkpoint.from_body(cp.body()).size == size


def test_sign_and_open_checkpoint(signer: NoteSigner, verifier: NoteVerifier) -> None:
    cp = Checkpoint(origin=NAME, size=7, root_hash=ROOT, extensions=("a", "b c"))
    assert open_checkpoint(sign_checkpoint(cp, signer), verifier) == cp


def test_sign_checkpoint_requires_origin_equal_key_name(signer: NoteSigner) -> None:
    with pytest.raises(UsageError):
        sign_checkpoint(Checkpoint(origin="other.test", size=0, root_hash=ROOT), signer)


def test_open_checkpoint_requires_origin_equal_key_name(
    signer: NoteSigner, verifier: NoteVerifier
) -> None:
    note = signer.sign(Checkpoint(origin="other.test", size=0, root_hash=ROOT).body())
    with pytest.raises(VerificationError, match="origin"):
        open_checkpoint(note, verifier)


def test_open_checkpoint_wrong_key(signer: NoteSigner) -> None:
    note = sign_checkpoint(Checkpoint(origin=NAME, size=0, root_hash=ROOT), signer)
    other = NoteVerifier.from_vkey(NoteSigner(NAME, _key("b")).vkey)
    with pytest.raises(VerificationError):
        open_checkpoint(note, other)


def test_open_checkpoint_rejects_signed_garbage(signer: NoteSigner, verifier: NoteVerifier) -> None:
    with pytest.raises(VerificationError):
        open_checkpoint(signer.sign(f"{NAME}\n007\n{B64ROOT}\n"), verifier)
