"""Full-log verification and proof-bundle verification find what was changed, and where."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from interlock.errors import UsageError, VerificationError
from interlock.ledger.merkle import inclusion_proof, leaf_hash, list_reader, root_of
from interlock.ledger.note import Checkpoint, NoteSigner, sign_checkpoint
from interlock.ledger.proof import ProofBundle, format_proof, parse_proof
from interlock.ledger.verify import LedgerVerifier, VerifyReport, verify_proof_bundle

ORIGIN = "interlock.test/verify"
KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"verify").digest())
SIGNER = NoteSigner(ORIGIN, KEY)
VKEY = SIGNER.vkey
OTHER = NoteSigner(ORIGIN, Ed25519PrivateKey.from_private_bytes(bytes(32)))

Row = tuple[int, bytes, bytes]


def _entries(n: int) -> list[bytes]:
    return [f'{{"id":{i},"type":"decision","v":1}}'.encode() for i in range(n)]


def _rows(entries: list[bytes]) -> list[Row]:
    return [(i, leaf_hash(e), e) for i, e in enumerate(entries)]


def _checkpoint(leaves: list[bytes], size: int, signer: NoteSigner = SIGNER) -> str:
    root = root_of(leaves[:size])
    return sign_checkpoint(Checkpoint(origin=signer.name, size=size, root_hash=root), signer)


def _ledger(n: int = 50, every: int = 10) -> tuple[list[Row], list[str]]:
    entries = _entries(n)
    leaves = [leaf_hash(e) for e in entries]
    sizes = [*range(every, n + 1, every)]
    if not sizes or sizes[-1] != n:
        sizes.append(n)
    return _rows(entries), [_checkpoint(leaves, s) for s in sizes]


def _verify(rows: list[Row], checkpoints: list[str], *, one_by_one: bool = False) -> VerifyReport:
    v = LedgerVerifier(VKEY)
    v.expect_checkpoints(checkpoints)
    if one_by_one:
        for row in rows:
            v.feed(*row)
    else:
        v.feed_all(rows)
    return v.finish()


# --- whole-log verification --------------------------------------------------------------


@pytest.mark.parametrize("one_by_one", [False, True])
def test_intact_ledger_verifies(one_by_one: bool) -> None:
    rows, cps = _ledger()
    report = _verify(rows, cps, one_by_one=one_by_one)
    assert report.entries == report.size == 50
    assert report.checkpoints == 5
    assert report.covered == 50
    assert report.root == root_of([r[1] for r in rows])


def test_empty_ledger_and_empty_checkpoint() -> None:
    report = _verify([], [_checkpoint([], 0)])
    assert (report.entries, report.checkpoints, report.covered) == (0, 1, 0)


def test_entries_after_the_last_checkpoint_are_reported_uncovered() -> None:
    rows, cps = _ledger(50, 10)
    report = _verify(rows, cps[:2])
    assert (report.size, report.covered) == (50, 20)


def test_checkpoints_can_be_checked_as_they_are_met() -> None:
    rows, cps = _ledger(30, 10)
    v = LedgerVerifier(VKEY)
    v.check_checkpoint(cps[0])  # announced before its size: matched when reached
    v.feed_all(rows[:20])
    v.check_checkpoint(cps[1])  # exactly at the current size
    v.check_checkpoint(cps[0])  # a size already matched: its root is remembered
    v.feed_all(rows[20:])
    v.check_checkpoint(cps[2])
    assert v.finish().checkpoints == 4


def test_unannounced_past_checkpoint_cannot_be_checked() -> None:
    rows, cps = _ledger(30, 10)
    v = LedgerVerifier(VKEY)
    v.feed_all(rows)
    with pytest.raises(UsageError):
        v.check_checkpoint(cps[0])


def test_modified_entry_is_named() -> None:
    rows, cps = _ledger()
    i, lh, data = rows[17]
    rows[17] = (i, lh, data.replace(b"decision", b"decisioN"))
    with pytest.raises(VerificationError, match="leaf hash") as exc:
        _verify(rows, cps)
    assert exc.value.evidence["index"] == 17


def test_modified_entry_is_named_one_by_one() -> None:
    rows, cps = _ledger()
    i, lh, data = rows[3]
    rows[3] = (i, lh, data + b" ")
    with pytest.raises(VerificationError) as exc:
        _verify(rows, cps, one_by_one=True)
    assert exc.value.evidence["index"] == 3


def test_removed_entry_is_named() -> None:
    rows, cps = _ledger()
    del rows[23]
    with pytest.raises(VerificationError, match="not contiguous") as exc:
        _verify(rows, cps)
    assert exc.value.evidence["index"] == 23
    assert exc.value.evidence["found"] == 24


def test_reordered_rows_are_named() -> None:
    rows, cps = _ledger()
    rows[31], rows[32] = rows[32], rows[31]
    with pytest.raises(VerificationError) as exc:
        _verify(rows, cps)
    assert exc.value.evidence["index"] == 31


def test_swapped_data_under_fixed_indices_is_named() -> None:
    # Reordering the data while keeping each row's index and stored leaf hash.
    rows, cps = _ledger()
    (i, hi, di), (j, hj, dj) = rows[40], rows[41]
    rows[40], rows[41] = (i, hi, dj), (j, hj, di)
    with pytest.raises(VerificationError, match="leaf hash") as exc:
        _verify(rows, cps)
    assert exc.value.evidence["index"] == 40


def test_rewritten_entry_with_recomputed_hash_is_caught_by_the_next_checkpoint() -> None:
    # An attacker who rewrites both data and leaf hash (even consistently swapping two
    # entries) cannot match the signed roots: the failure names the first index not covered
    # by an earlier matching checkpoint, and the range the bad entry is in.
    rows, cps = _ledger()
    (i, hi, di), (j, hj, dj) = rows[25], rows[26]
    rows[25], rows[26] = (i, hj, dj), (j, hi, di)
    with pytest.raises(VerificationError, match="root differs") as exc:
        _verify(rows, cps)
    assert exc.value.evidence["index"] == 20
    assert exc.value.evidence["range"] == "[20, 30)"
    assert exc.value.evidence["checkpoint_size"] == 30


def test_inserted_entry_is_named() -> None:
    rows, cps = _ledger()
    extra = b'{"id":"forged"}'
    rows.insert(5, (5, leaf_hash(extra), extra))
    with pytest.raises(VerificationError) as exc:
        _verify(rows, cps)
    assert exc.value.evidence["index"] == 6


def test_truncated_tail_is_detected() -> None:
    rows, cps = _ledger(50, 10)
    with pytest.raises(VerificationError, match="no longer has") as exc:
        _verify(rows[:45], cps)
    assert exc.value.evidence["index"] == 45
    assert exc.value.evidence["checkpoint_size"] == 50


def test_checkpoint_from_another_key_is_rejected() -> None:
    rows, cps = _ledger(20, 10)
    leaves = [r[1] for r in rows]
    with pytest.raises(VerificationError, match="stored checkpoint"):
        _verify(rows, [*cps, _checkpoint(leaves, 20, OTHER)])


def test_inconsistent_signed_checkpoint_is_detected() -> None:
    # The log key signs a root that is not the tree's: two checkpoints would disagree.
    rows, cps = _ledger(20, 10)
    forged = sign_checkpoint(Checkpoint(origin=ORIGIN, size=15, root_hash=bytes(32)), SIGNER)
    with pytest.raises(VerificationError, match="root differs") as exc:
        _verify(rows, [*cps, forged])
    assert exc.value.evidence["index"] == 10


def test_two_checkpoints_same_size_different_roots() -> None:
    rows, cps = _ledger(20, 10)
    forged = sign_checkpoint(Checkpoint(origin=ORIGIN, size=20, root_hash=bytes(32)), SIGNER)
    with pytest.raises(VerificationError, match="root differs"):
        _verify(rows, [*cps, forged])


def test_bad_vkey() -> None:
    with pytest.raises(VerificationError):
        LedgerVerifier("not a vkey")


# --- proof bundles -----------------------------------------------------------------------


def _bundle(index: int = 6, n: int = 13, *, extra: bytes | None = None) -> str:
    entries = _entries(n)
    leaves = [leaf_hash(e) for e in entries]
    return format_proof(
        ProofBundle(
            index=index,
            extra=entries[index] if extra is None else extra,
            inclusion=inclusion_proof(index, n, list_reader(leaves)),
            checkpoint_note=_checkpoint(leaves, n),
        )
    )


def test_proof_bundle_verifies() -> None:
    v = verify_proof_bundle(_bundle(6, 13), VKEY)
    assert (v.index, v.tree_size) == (6, 13)
    assert v.data == _entries(13)[6]
    assert v.leaf_hash == leaf_hash(v.data)
    assert v.checkpoint.origin == ORIGIN


def test_proof_bundle_single_entry_log() -> None:
    assert verify_proof_bundle(_bundle(0, 1), VKEY).tree_size == 1


def test_proof_bundle_with_tampered_entry() -> None:
    text = _bundle(extra=b'{"id":6,"type":"decision","v":2}')
    with pytest.raises(VerificationError, match="inclusion proof"):
        verify_proof_bundle(text, VKEY)


def test_proof_bundle_with_wrong_index() -> None:
    text = _bundle(6, 13).replace("index 6\n", "index 7\n")
    with pytest.raises(VerificationError, match="inclusion proof"):
        verify_proof_bundle(text, VKEY)


def test_proof_bundle_with_flipped_proof_hash() -> None:
    b = parse_proof(_bundle(6, 13))
    first = bytes([b.inclusion[0][0] ^ 1]) + b.inclusion[0][1:]
    text = format_proof(
        ProofBundle(
            index=b.index,
            extra=b.extra,
            inclusion=[first, *b.inclusion[1:]],
            checkpoint_note=b.checkpoint_note,
        )
    )
    with pytest.raises(VerificationError, match="inclusion proof"):
        verify_proof_bundle(text, VKEY)


def test_proof_bundle_with_wrong_key() -> None:
    with pytest.raises(VerificationError, match="checkpoint"):
        verify_proof_bundle(_bundle(), OTHER.vkey)


def test_proof_bundle_without_entry_data() -> None:
    b = parse_proof(_bundle())
    text = format_proof(
        ProofBundle(
            index=b.index, extra=None, inclusion=b.inclusion, checkpoint_note=b.checkpoint_note
        )
    )
    with pytest.raises(VerificationError, match="no entry data"):
        verify_proof_bundle(text, VKEY)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t.replace("c2sp.org/tlog-proof@v1", "c2sp.org/tlog-proof@v2"),
        lambda t: t.replace("index 6", "index 06"),
        lambda t: t.replace("\n\n", "\n", 1),
        lambda t: t[: t.index("\n\n") + 2],
    ],
)
def test_malformed_proof_bundle(mangle: Callable[[str], str]) -> None:
    with pytest.raises(VerificationError):
        verify_proof_bundle(mangle(_bundle()), VKEY)


# --- tlog-proof parsing strictness --------------------------------------------------------


def test_parse_proof_round_trip_without_extra() -> None:
    b = parse_proof(_bundle())
    plain = ProofBundle(index=3, extra=None, inclusion=[], checkpoint_note=b.checkpoint_note)
    text = format_proof(plain)
    assert text.startswith("c2sp.org/tlog-proof@v1\nindex 3\n\n")
    assert parse_proof(text) == plain


def test_parse_proof_accepts_empty_extra() -> None:
    b = parse_proof(_bundle())
    empty = ProofBundle(index=0, extra=b"", inclusion=[], checkpoint_note=b.checkpoint_note)
    assert "\nextra \n" in format_proof(empty)
    assert parse_proof(format_proof(empty)) == empty


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t.replace("c2sp.org/tlog-proof@v1\n", ""),
        lambda t: t.replace("index ", "index  "),
        lambda t: t.replace("index 6", "index -6"),
        lambda t: t.replace("index 6", "index 6x"),
        lambda t: t.replace("index 6", f"index {1 << 64}"),
        lambda t: t.replace("index 6\n", ""),
        lambda t: t.replace("extra ", "extra  "),
        lambda t: t.replace("extra ", "extra !"),
        lambda t: t.replace("\n", "\r\n"),
        lambda t: t.replace("index 6\n", "index 6\nAAAA\n"),  # hash of 3 bytes
        lambda t: t.replace("index 6\n", "index 6\n" + "A" * 43 + "=\n" * 2),
        lambda t: t.split("\n\n")[0] + "\n",  # no checkpoint
        lambda t: t.split("\n\n")[0] + "\n\n\n" + t.split("\n\n", 1)[1],  # starts empty
        lambda t: t[:-1],  # checkpoint not newline-terminated
        lambda t: t + "x" * (1 << 20),
    ],
)
def test_parse_proof_is_strict(mangle: Callable[[str], str]) -> None:
    with pytest.raises(VerificationError):
        parse_proof(mangle(_bundle()))


def test_parse_proof_refuses_too_many_hashes() -> None:
    b = parse_proof(_bundle())
    text = format_proof(
        ProofBundle(index=0, extra=None, inclusion=[bytes(32)] * 65, checkpoint_note="c\n")
    )
    with pytest.raises(VerificationError, match="64"):
        parse_proof(text)
    assert parse_proof(text.replace(("A" * 43 + "=\n"), "", 1)).inclusion == [bytes(32)] * 64
    assert b.index == 6


def test_format_proof_refuses_unrepresentable_bundles() -> None:
    for bad in [
        ProofBundle(index=-1, extra=None, inclusion=[], checkpoint_note="c\n"),
        ProofBundle(index=0, extra=None, inclusion=[bytes(31)], checkpoint_note="c\n"),
        ProofBundle(index=0, extra=None, inclusion=[], checkpoint_note="c"),
        ProofBundle(index=0, extra=None, inclusion=[], checkpoint_note="\nc\n"),
        ProofBundle(index=0, extra=None, inclusion=[], checkpoint_note="c\r\n"),
    ]:
        with pytest.raises(VerificationError):
            format_proof(bad)
