"""Properties of the Merkle tree, its proofs and the tlog-proof format, on random logs."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from interlock.errors import VerificationError
from interlock.ledger.merkle import (
    Frontier,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    list_reader,
    root_of,
    subtree_hash,
    verify_consistency,
    verify_inclusion,
)
from interlock.ledger.proof import ProofBundle, format_proof, parse_proof

leaf_data = st.lists(st.binary(max_size=6), max_size=80)
nonempty_leaf_data = st.lists(st.binary(max_size=6), min_size=1, max_size=80)


def _flip(h: bytes, bit: int) -> bytes:
    b = bytearray(h)
    b[bit // 8 % len(b)] ^= 1 << (bit % 8)
    return bytes(b)


@given(leaf_data)
def test_three_roots_agree(data: list[bytes]) -> None:
    leaves = [leaf_hash(d) for d in data]
    f = Frontier()
    for lh in leaves:
        f.append(lh)
    assert f.size == len(leaves)
    assert f.root() == root_of(leaves) == subtree_hash(list_reader(leaves), 0, len(leaves))
    assert len(f.hashes) == len(leaves).bit_count()


@given(leaf_data, st.integers(min_value=0, max_value=80))
def test_frontier_resumes_from_its_hashes(data: list[bytes], cut: int) -> None:
    leaves = [leaf_hash(d) for d in data]
    cut = min(cut, len(leaves))
    f = Frontier()
    for lh in leaves[:cut]:
        f.append(lh)
    resumed = Frontier.from_hashes(f.size, f.hashes)
    copied = f.copy()
    for lh in leaves[cut:]:
        resumed.append(lh)
        copied.append(lh)
    assert resumed.root() == copied.root() == root_of(leaves)
    assert f.size == cut  # the copy did not change the original


@given(nonempty_leaf_data, st.data())
def test_every_inclusion_proof_verifies_and_binds_its_leaf(
    data: list[bytes], draw: st.DataObject
) -> None:
    # Distinct leaves, so a proof for one position cannot also be valid for another.
    leaves = [leaf_hash(i.to_bytes(2, "big") + d) for i, d in enumerate(data)]
    n = len(leaves)
    reader = list_reader(leaves)
    root = root_of(leaves)
    for i in range(n):
        proof = inclusion_proof(i, n, reader)
        verify_inclusion(i, n, leaves[i], proof, root)
    i = draw.draw(st.integers(min_value=0, max_value=n - 1))
    proof = inclusion_proof(i, n, reader)
    other = leaf_hash(b"\xff" * 9)  # longer than any generated leaf, so never in the tree
    with pytest.raises(VerificationError):
        verify_inclusion(i, n, other, proof, root)
    with pytest.raises(VerificationError):
        verify_inclusion(i, n, _flip(leaves[i], draw.draw(st.integers(0, 255))), proof, root)
    if proof:
        k = draw.draw(st.integers(min_value=0, max_value=len(proof) - 1))
        bad = list(proof)
        bad[k] = _flip(bad[k], draw.draw(st.integers(0, 255)))
        with pytest.raises(VerificationError):
            verify_inclusion(i, n, leaves[i], bad, root)
    j = draw.draw(st.integers(min_value=0, max_value=n))
    if j != i and n > 1:
        with pytest.raises(VerificationError):
            verify_inclusion(j, n, leaves[i], proof, root)


@given(nonempty_leaf_data, st.data())
def test_consistency_proofs_verify_and_fail_when_a_bit_flips(
    data: list[bytes], draw: st.DataObject
) -> None:
    leaves = [leaf_hash(d) for d in data]
    n = len(leaves)
    reader = list_reader(leaves)
    new = draw.draw(st.integers(min_value=0, max_value=n))
    old = draw.draw(st.integers(min_value=0, max_value=new))
    old_root, new_root = root_of(leaves[:old]), root_of(leaves[:new])
    proof = consistency_proof(old, new, reader)
    verify_consistency(old, new, old_root, new_root, proof)
    if proof:
        k = draw.draw(st.integers(min_value=0, max_value=len(proof) - 1))
        bad = list(proof)
        bad[k] = _flip(bad[k], draw.draw(st.integers(0, 255)))
        with pytest.raises(VerificationError):
            verify_consistency(old, new, old_root, new_root, bad)
        with pytest.raises(VerificationError):
            verify_consistency(old, new, _flip(old_root, 0), new_root, proof)
        with pytest.raises(VerificationError):
            verify_consistency(old, new, old_root, _flip(new_root, 0), proof)


@settings(max_examples=30)
@given(st.integers(min_value=1, max_value=3000), st.data())
def test_proofs_use_logarithmically_many_reader_calls(n: int, draw: st.DataObject) -> None:
    leaves = [leaf_hash(i.to_bytes(2, "big")) for i in range(n)]
    inner = list_reader(leaves)
    calls = 0

    def counting(level: int, index: int) -> bytes:
        nonlocal calls
        calls += 1
        return inner(level, index)

    i = draw.draw(st.integers(min_value=0, max_value=n - 1))
    inclusion_proof(i, n, counting)
    assert calls <= 2 * n.bit_length()
    calls = 0
    old = draw.draw(st.integers(min_value=0, max_value=n))
    consistency_proof(old, n, counting)
    assert calls <= 2 * n.bit_length() + 1


hashes = st.binary(min_size=32, max_size=32)
note_line = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\r\n"),
    min_size=1,
    max_size=20,
)


@given(
    st.integers(min_value=0, max_value=(1 << 64) - 1),
    st.none() | st.binary(max_size=300),
    st.lists(hashes, max_size=64),
    st.lists(note_line | st.just(""), min_size=1, max_size=8),
)
def test_proof_bundle_round_trips(
    index: int, extra: bytes | None, inclusion: list[bytes], lines: list[str]
) -> None:
    lines[0] = lines[0] or "origin"  # a checkpoint note does not start with an empty line
    bundle = ProofBundle(
        index=index, extra=extra, inclusion=inclusion, checkpoint_note="\n".join(lines) + "\n"
    )
    assert parse_proof(format_proof(bundle)) == bundle
