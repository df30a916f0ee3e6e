"""C2SP vectors, and cross-checks against the independent ``tlog_scales`` implementation.

Data copied (values only) from:
- c2sp.org/signed-note §Verifier keys "Example" (github.com/C2SP/C2SP signed-note.md);
- golang.org/x/mod/sumdb/note (the reference implementation of the note format): the
  PeterNeumann signer key, text and signed note from its documentation and ``note_test.go``;
- c2sp.org/tlog-checkpoint and c2sp.org/tlog-proof: the example checkpoint body and proof.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tlog_scales import signing
from tlog_scales import tlog as ts
from tlog_scales.backend import LocalBackend
from tlog_scales.reader import TilesReader
from tlog_scales.writer import TilesWriter

from interlock.errors import VerificationError
from interlock.ledger.merkle import (
    Frontier,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    list_reader,
    root_of,
)
from interlock.ledger.note import (
    Checkpoint,
    NoteSigner,
    NoteVerifier,
    open_checkpoint,
    sign_checkpoint,
)
from interlock.ledger.proof import format_proof, parse_proof
from interlock.ledger.tiles import export_tiles

# c2sp.org/signed-note §Verifier keys, Example
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n"
    "\n"
    "— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmR"
    "KuwHjG1Yu72IneyaQM=\n"
)

# golang.org/x/mod/sumdb/note documentation and note_test.go
GO_SKEY_B64 = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"  # 0x01 || Ed25519 seed
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_SIG = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngo"
    "tpRZb6KE6RyyBwJnAM=\n"
)
GO_ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_ENOCH_SIG = (
    "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33"
    "WWd1RvMc+QQ=\n"
)

# c2sp.org/tlog-checkpoint example body
SPEC_CHECKPOINT_BODY = (
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)

# c2sp.org/tlog-proof example (its signatures are elided in the spec, so it only parses)
SPEC_PROOF = """c2sp.org/tlog-proof@v1
extra YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6kYXJ3aW4tYXJ
index 73894
gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=
B95lDa8R83lS8n0eG+o0buTxRKQTYFi//1U8anccXmA=
EKNzoDWG8LGC0Yp9o+sv3qllpMP9uHQ9B20KNL+Q1zs=
RoopEkOdqkYqMB4MJXrbt/hMjOxsVn0IrWjpz1ZMMes=
AHCioX9nLjsrse6YhjRRmk1WUEirVOLLRoOQ6vfO5vk=

example.com/fancylog
109482
sFodV/vSp5O8n9a8QpW6PRY97tfOSW5bsc2Xl/EQi08=

— example.com/fancylog hI2DJw[...]1roloI=
— witness1.example mJirIklj[...]qY9v2B/5bg==
"""


def _go_signer() -> NoteSigner:
    seed = base64.b64decode(GO_SKEY_B64)
    assert seed[0] == 1
    return NoteSigner("PeterNeumann", Ed25519PrivateKey.from_private_bytes(seed[1:]))


# --- signed-note -------------------------------------------------------------------------


def test_spec_example_verifies() -> None:
    v = NoteVerifier.from_vkey(SPEC_VKEY)
    assert v.name == "example.com/foo"
    assert v.verify(SPEC_NOTE) == "This is an example message.\n"


def test_spec_example_key_id_is_derived_from_name_and_key() -> None:
    raw = base64.b64decode(SPEC_VKEY.split("+", 2)[2])
    assert raw[0] == 0x01
    expected = hashlib.sha256(b"example.com/foo\n\x01" + raw[1:]).digest()[:4]
    assert expected.hex() == "530d903a"
    assert NoteVerifier("example.com/foo", raw[1:]).key_id.hex() == "530d903a"
    assert NoteVerifier.from_vkey(SPEC_VKEY).key_id == expected


def test_spec_example_rejects_tampering() -> None:
    v = NoteVerifier.from_vkey(SPEC_VKEY)
    with pytest.raises(VerificationError):
        v.verify(SPEC_NOTE.replace("example message", "exemple message"))


def test_go_reference_signature_is_reproduced_byte_for_byte() -> None:
    # Ed25519 is deterministic: same key and text give the reference's exact note.
    signer = _go_signer()
    assert signer.key_id.hex() == "c74f20a3"
    assert signer.vkey == GO_VKEY
    assert signer.sign(GO_TEXT) == GO_TEXT + "\n" + GO_SIG


def test_go_reference_multi_signature_notes() -> None:
    peter = NoteVerifier.from_vkey(GO_VKEY)
    enoch = NoteVerifier.from_vkey(GO_ENOCH_VKEY)
    note = GO_TEXT + "\n" + GO_SIG + GO_ENOCH_SIG
    assert peter.verify(note) == GO_TEXT
    assert enoch.verify(note) == GO_TEXT
    # Only Enoch's signature: Peter's key finds none.
    with pytest.raises(VerificationError, match="no signature"):
        peter.verify(GO_TEXT + "\n" + GO_ENOCH_SIG)
    # A corrupted signature from the known key rejects the note (note_test.go "Invalid signature").
    with pytest.raises(VerificationError):
        peter.verify(GO_TEXT + "\n" + GO_SIG[:60] + "ABCD" + GO_SIG[60:])
    # Repeated signatures are fine; 101 are too many (note_test.go).
    assert peter.verify(GO_TEXT + "\n" + GO_SIG * 2 + GO_ENOCH_SIG) == GO_TEXT
    with pytest.raises(VerificationError, match="too many"):
        peter.verify(GO_TEXT + "\n" + GO_SIG * 101)


@pytest.mark.parametrize(
    "bad",
    [
        GO_TEXT,
        GO_TEXT + "\n",
        GO_TEXT + "\n" + GO_SIG[:-1],
        "\x01" + GO_TEXT + "\n" + GO_SIG,
        "\udcff" + GO_TEXT + "\n" + GO_SIG,  # the str form of an invalid UTF-8 byte
        GO_TEXT + "\n" + GO_SIG.replace("PeterNeumann", "Bad Name")[:-1],
        GO_TEXT + "\n" + GO_SIG + "Unexpected line.\n",
    ],
)
def test_go_reference_malformed_notes(bad: str) -> None:
    # note_test.go TestOpen "Invalid encoded message syntax"
    with pytest.raises(VerificationError):
        NoteVerifier.from_vkey(GO_VKEY).verify(bad)


# --- tlog-checkpoint ---------------------------------------------------------------------


def test_spec_checkpoint_body_parses_and_reserializes() -> None:
    cp = Checkpoint.from_body(SPEC_CHECKPOINT_BODY)
    assert cp.origin == "example.com/behind-the-sofa"
    assert cp.size == 20852163
    assert cp.root_hash == base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    assert cp.extensions == ()
    assert cp.body() == SPEC_CHECKPOINT_BODY


# --- tlog-proof --------------------------------------------------------------------------


def test_spec_proof_parses_and_round_trips() -> None:
    b = parse_proof(SPEC_PROOF)
    assert b.index == 73894
    assert b.extra == base64.b64decode("YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6kYXJ3aW4tYXJ")
    assert len(b.inclusion) == 5
    assert b.inclusion[0] == base64.b64decode("gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=")
    assert b.checkpoint_note.startswith("example.com/fancylog\n109482\n")
    assert format_proof(b) == SPEC_PROOF


# --- cross-checks with tlog_scales -------------------------------------------------------

ORIGIN = "interlock.test/log"


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"interlock test key").digest())


def _entries(n: int) -> list[bytes]:
    return [f'{{"i":{i},"v":"{"x" * (i % 7)}"}}'.encode() for i in range(n)]


def test_our_checkpoint_verifies_with_tlog_scales(key: Ed25519PrivateKey) -> None:
    signer = NoteSigner(ORIGIN, key)
    leaves = [leaf_hash(e) for e in _entries(10)]
    cp = Checkpoint(origin=ORIGIN, size=10, root_hash=root_of(leaves))
    note = sign_checkpoint(cp, signer)
    vkey = signing.Vkey.from_string(signer.vkey)
    assert vkey.key_id == int.from_bytes(signer.key_id, "big")
    parsed = ts.Checkpoint.from_text(note)
    parsed.verify(vkey)
    assert (parsed.origin, parsed.size, parsed.root_hash) == (ORIGIN, 10, cp.root_hash)


def test_tlog_scales_checkpoint_verifies_with_ours(key: Ed25519PrivateKey) -> None:
    their = signing.PlainEd25519Signer(ORIGIN, key)
    root = root_of([leaf_hash(e) for e in _entries(3)])
    note = ts.Checkpoint.make_signed(ORIGIN, 3, root, [their]).serialize()
    verifier = NoteVerifier.from_vkey(their.vkey.serialize())
    assert open_checkpoint(note, verifier) == Checkpoint(origin=ORIGIN, size=3, root_hash=root)
    # and their vkey string is exactly ours
    assert their.vkey.serialize() == NoteSigner(ORIGIN, key).vkey


@pytest.mark.parametrize("size", [1, 2, 3, 7, 8, 9, 31, 100])
def test_our_proofs_verify_with_tlog_scales(size: int) -> None:
    leaves = [leaf_hash(e) for e in _entries(size)]
    reader = list_reader(leaves)
    roots = [root_of(leaves[:n]) for n in range(size + 1)]
    for i in range(size):
        p = inclusion_proof(i, size, reader)
        ts.InclusionProof(i, size, p).check(leaves[i], roots[size])
    for old in range(size + 1):
        p = consistency_proof(old, size, reader)
        ts.ConsistencyProof(old, size, p).check(roots[old], roots[size])


@pytest.mark.parametrize("size", [1, 255, 256, 257, 513, 256 * 256 + 300])
def test_export_tiles_read_by_tlog_scales(
    tmp_path: Path, key: Ed25519PrivateKey, size: int
) -> None:
    entries = _entries(size)
    leaves = [leaf_hash(e) for e in entries]
    reader = list_reader(leaves)
    f = Frontier()
    for lh in leaves:
        f.append(lh)
    root = f.root()
    assert root == root_of(leaves)
    signer = NoteSigner(ORIGIN, key)
    note = sign_checkpoint(Checkpoint(origin=ORIGIN, size=size, root_hash=root), signer)
    out = tmp_path / "ours"
    written = export_tiles(
        out, size=size, checkpoint_note=note, reader=reader, entry_at=entries.__getitem__
    )
    assert written == sum(1 for p in out.rglob("*") if p.is_file())

    tr = TilesReader(LocalBackend(out))
    cp = tr.get_checkpoint()
    cp.verify(signing.Vkey.from_string(signer.vkey))
    assert cp.size == size
    assert cp.root_hash == root
    assert tr.calculate_root_hash() == root
    probes = sorted({0, size // 2, size - 1, min(size - 1, 256), min(size - 1, 65535)})
    for i in probes:
        assert tr.get_entry(i) == entries[i]
        assert tr.get_inclusion_proof(i, size).node_hashes == inclusion_proof(i, size, reader)
    for old in sorted({1, size // 3, size - 1}):
        if 0 < old < size:
            their = tr.get_consistency_proof(old, size).node_hashes
            assert their == consistency_proof(old, size, reader)

    # tlog_scales' own writer, fed the same entries in one commit and signed with the same key,
    # writes a byte-identical directory (Ed25519 is deterministic). It fsyncs every file, so
    # the largest tree is only read, not rewritten, to keep the suite fast.
    if size > 1000:
        return
    theirs = tmp_path / "theirs"
    w = TilesWriter.create(theirs, ORIGIN)
    for e in entries:
        w.add_leaf(e)
    w.commit([signing.PlainEd25519Signer(ORIGIN, key)])
    ours_files = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    their_files = {p.relative_to(theirs): p.read_bytes() for p in theirs.rglob("*") if p.is_file()}
    assert ours_files.keys() == their_files.keys()
    assert ours_files == their_files
