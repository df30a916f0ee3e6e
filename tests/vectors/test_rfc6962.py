"""RFC 6962 / RFC 9162 known-answer tests.

The test DATA (hex values only) is copied from transparency-dev/merkle, an independent Go
implementation: the leaf inputs, per-size roots and node hashes from ``testonly/constants.go``,
and the inclusion/consistency proofs from ``proof/verify_test.go``. The node positions of a few
proofs come from the comments in ``proof/proof_test.go``.
"""

from __future__ import annotations

from typing import Any

import pytest

from interlock.errors import VerificationError
from interlock.ledger.merkle import (
    EMPTY_ROOT,
    Frontier,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    list_reader,
    node_hash,
    root_of,
    subtree_hash,
    verify_consistency,
    verify_inclusion,
)

h = bytes.fromhex

# testonly/constants.go LeafInputs()
LEAVES = [
    h(""),
    h("00"),
    h("10"),
    h("2021"),
    h("3031"),
    h("40414243"),
    h("5051525354555657"),
    h("606162636465666768696a6b6c6d6e6f"),
]

# testonly/constants.go RootHashes(), indexed by tree size 0..8
ROOTS = [
    h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
    h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
    h("aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"),
    h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    h("4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4"),
    h("76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef"),
    h("ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c"),
    h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),
]

# testonly/constants.go NodeHashes(): [level][index] for the 8-leaf tree
NODES = [
    [
        h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
        h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
        h("0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7"),
        h("07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7"),
        h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        h("4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658"),
        h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
        h("46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1"),
    ],
    [
        h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
        h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
        h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
        h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
    ],
    [
        h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
    ],
    [h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")],
]

# proof/verify_test.go inclusionProofs: (0-based index, tree size, proof)
INCLUSION = [
    (
        0,
        8,
        [
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        5,
        8,
        [
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (2, 3, [h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")]),
    (
        1,
        5,
        [
            h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
]

# proof/verify_test.go consistencyProofs: (size1, size2, proof)
CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        6,
        8,
        [
            h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (
        2,
        5,
        [
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
    (
        6,
        7,
        [
            h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
]

SOME_HASH = h("abacaba000000000000000000000000000000000000000000060061e00123456")
LEAF_HASHES = [leaf_hash(d) for d in LEAVES]


def N(level: int, index: int) -> bytes:  # noqa: N802 - mirrors the reference's id(level, index)
    return NODES[level][index]


def test_hash_primitives() -> None:
    assert ROOTS[0] == EMPTY_ROOT
    assert leaf_hash(b"") == ROOTS[1]
    assert node_hash(NODES[0][0], NODES[0][1]) == NODES[1][0]


def test_leaf_hashes_match_reference_nodes() -> None:
    assert NODES[0] == LEAF_HASHES


@pytest.mark.parametrize("size", range(9))
def test_roots_for_every_size(size: int) -> None:
    leaves = LEAF_HASHES[:size]
    assert root_of(leaves) == ROOTS[size]
    f = Frontier()
    for lh in leaves:
        f.append(lh)
    assert f.root() == ROOTS[size]
    assert subtree_hash(list_reader(leaves), 0, size) == ROOTS[size]


def test_frontier_hashes_match_reference_compact_trees() -> None:
    # testonly/constants.go CompactTrees(): the perfect-subtree roots for each size
    expected = [
        [],
        [N(0, 0)],
        [N(1, 0)],
        [N(1, 0), N(0, 2)],
        [N(2, 0)],
        [N(2, 0), N(0, 4)],
        [N(2, 0), N(1, 2)],
        [N(2, 0), N(1, 2), N(0, 6)],
        [N(3, 0)],
    ]
    f = Frontier()
    assert list(f.hashes) == expected[0]
    for size in range(1, 9):
        f.append(LEAF_HASHES[size - 1])
        assert list(f.hashes) == expected[size]


def test_list_reader_serves_reference_nodes() -> None:
    reader = list_reader(LEAF_HASHES)
    for level, row in enumerate(NODES):
        for index, node in enumerate(row):
            assert reader(level, index) == node


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_inclusion_vectors(index: int, size: int, proof: list[bytes]) -> None:
    reader = list_reader(LEAF_HASHES)
    assert inclusion_proof(index, size, reader) == proof
    verify_inclusion(index, size, LEAF_HASHES[index], proof, ROOTS[size])


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY)
def test_consistency_vectors(old: int, new: int, proof: list[bytes]) -> None:
    reader = list_reader(LEAF_HASHES)
    assert consistency_proof(old, new, reader) == proof
    verify_consistency(old, new, ROOTS[old], ROOTS[new], proof)


# proof/proof_test.go TestInclusion / TestConsistency node layouts for the 7-leaf tree, with
# l = HASH(i, j) where the reference "rehashes" (i = N(1, 2), j = N(0, 6)).
L7 = node_hash(N(1, 2), N(0, 6))
INCLUSION_LAYOUTS = [
    (0, 1, []),
    (0, 2, [N(0, 1)]),
    (1, 2, [N(0, 0)]),
    (1, 3, [N(0, 0), N(0, 2)]),
    (0, 7, [N(0, 1), N(1, 1), L7]),
    (1, 7, [N(0, 0), N(1, 1), L7]),
    (2, 7, [N(0, 3), N(1, 0), L7]),
    (3, 7, [N(0, 2), N(1, 0), L7]),
    (4, 7, [N(0, 5), N(0, 6), N(2, 0)]),
    (5, 7, [N(0, 4), N(0, 6), N(2, 0)]),
    (6, 7, [N(1, 2), N(2, 0)]),
    (2, 4, [N(0, 3), N(1, 0)]),
    (3, 5, [N(0, 2), N(1, 0), N(0, 4)]),
    (3, 6, [N(0, 2), N(1, 0), N(1, 2)]),
    (4, 6, [N(0, 5), N(2, 0)]),
]
CONSISTENCY_LAYOUTS = [
    (1, 2, [N(0, 1)]),
    (1, 4, [N(0, 1), N(1, 1)]),
    (1, 6, [N(0, 1), N(1, 1), N(1, 2)]),
    (2, 3, [N(0, 2)]),
    (2, 8, [N(1, 1), N(2, 1)]),
    (3, 7, [N(0, 2), N(0, 3), N(1, 0), L7]),
    (4, 7, [L7]),
    (5, 7, [N(0, 4), N(0, 5), N(0, 6), N(2, 0)]),
    (6, 7, [N(1, 2), N(0, 6), N(2, 0)]),
    (7, 8, [N(0, 6), N(0, 7), N(1, 2), N(2, 0)]),
    (2, 4, [N(1, 1)]),
    (3, 5, [N(0, 2), N(0, 3), N(1, 0), N(0, 4)]),
    (3, 6, [N(0, 2), N(0, 3), N(1, 0), N(1, 2)]),
    (4, 6, [N(1, 2)]),
    (1, 7, [N(0, 1), N(1, 1), L7]),
]


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION_LAYOUTS)
def test_inclusion_layouts(index: int, size: int, proof: list[bytes]) -> None:
    assert inclusion_proof(index, size, list_reader(LEAF_HASHES)) == proof
    verify_inclusion(index, size, LEAF_HASHES[index], proof, ROOTS[size])


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY_LAYOUTS)
def test_consistency_layouts(old: int, new: int, proof: list[bytes]) -> None:
    assert consistency_proof(old, new, list_reader(LEAF_HASHES)) == proof
    verify_consistency(old, new, ROOTS[old], ROOTS[new], proof)


def test_every_proof_in_the_reference_tree() -> None:
    reader = list_reader(LEAF_HASHES)
    for size in range(1, 9):
        for index in range(size):
            p = inclusion_proof(index, size, reader)
            verify_inclusion(index, size, LEAF_HASHES[index], p, ROOTS[size])
        for old in range(size + 1):
            p = consistency_proof(old, size, reader)
            verify_consistency(old, size, ROOTS[old], ROOTS[size], p)


def _corrupt_inclusion(index: int, size: int, proof: list[bytes]) -> list[tuple[Any, ...]]:
    # The probes of proof/verify_test.go corruptInclusionProof.
    root, lh = ROOTS[size], LEAF_HASHES[index]
    probes: list[tuple[Any, ...]] = [
        (index - 1, size, lh, proof, root),
        (index + 1, size, lh, proof, root),
        (index ^ 2, size, lh, proof, root),
        (index, size * 2, lh, proof, root),
        (index, size // 2, lh, proof, root),
        (index, size, leaf_hash(b"WrongLeaf"), proof, root),
        (index, size, lh, proof, EMPTY_ROOT),
        (index, size, lh, proof, SOME_HASH),
        (index, size, lh, [*proof, b""], root),
        (index, size, lh, [*proof, root], root),
        (index, size, lh, [b"", *proof], root),
        (index, size, lh, [root, *proof], root),
    ]
    for i in range(len(proof)):
        wrong = list(proof)
        wrong[i] = bytes([wrong[i][0] ^ 8]) + wrong[i][1:]
        probes.append((index, size, lh, wrong, root))
    if proof:
        probes.append((index, size, lh, proof[:-1], root))
    if len(proof) > 1:
        probes.append((index, size, lh, [proof[0], SOME_HASH, *proof[1:]], root))
    return probes


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_corrupted_inclusion_proofs_fail(index: int, size: int, proof: list[bytes]) -> None:
    for probe in _corrupt_inclusion(index, size, proof):
        with pytest.raises(VerificationError):
            verify_inclusion(*probe)


def _corrupt_consistency(old: int, new: int, proof: list[bytes]) -> list[tuple[Any, ...]]:
    # The probes of proof/verify_test.go corruptConsistencyProof.
    r1, r2 = ROOTS[old], ROOTS[new]
    wrong_root = leaf_hash(b"WrongRoot")
    probes: list[tuple[Any, ...]] = [
        (old - 1, new, r1, r2, proof),
        (old + 1, new, r1, r2, proof),
        (old ^ 2, new, r1, r2, proof),
        (old, new * 2, r1, r2, proof),
        (old, new // 2, r1, r2, proof),
        (old, new, wrong_root, r2, proof),
        (old, new, r1, wrong_root, proof),
        (old, new, r2, r1, proof),
        (old, new, r1, r2, []),
        (old, new, r1, r2, [*proof, b""]),
        (old, new, r1, r2, [*proof, r1]),
        (old, new, r1, r2, [*proof, r2]),
        (old, new, r1, r2, [b"", *proof]),
        (old, new, r1, r2, [r1, *proof]),
        (old, new, r1, r2, [r2, *proof]),
        (old, new, r1, r2, [proof[0], *proof]),
        (old, new, r1, r2, proof[:-1]),
    ]
    for i in range(len(proof)):
        wrong = list(proof)
        wrong[i] = bytes([wrong[i][0] ^ 16]) + wrong[i][1:]
        probes.append((old, new, r1, r2, wrong))
    return probes


@pytest.mark.parametrize(("old", "new", "proof"), [c for c in CONSISTENCY if c[2]])
def test_corrupted_consistency_proofs_fail(old: int, new: int, proof: list[bytes]) -> None:
    for probe in _corrupt_consistency(old, new, proof):
        with pytest.raises(VerificationError):
            verify_consistency(*probe)


def test_single_entry_inclusion() -> None:
    # proof/verify_test.go TestVerifyInclusionSingleEntry
    lh = leaf_hash(b"data")
    verify_inclusion(0, 1, lh, [], lh)
    for leaf, root in [(lh, b""), (b"", lh), (b"", b"")]:
        with pytest.raises(VerificationError):
            verify_inclusion(0, 1, leaf, [], root)


@pytest.mark.parametrize(("index", "size"), [(0, 0), (0, 1), (1, 0), (2, 1)])
def test_inclusion_rejects_bad_sizes_and_roots(index: int, size: int) -> None:
    # proof/verify_test.go TestVerifyInclusion probes
    for leaf, root in [(SOME_HASH, b""), (b"", EMPTY_ROOT), (SOME_HASH, EMPTY_ROOT)]:
        with pytest.raises(VerificationError):
            verify_inclusion(index, size, leaf, [], root)


def test_consistency_edge_cases() -> None:
    # proof/verify_test.go TestVerifyConsistency, with one deliberate difference: Interlock
    # requires the root of an empty tree to be SHA-256("") rather than "don't care".
    r1, r2 = leaf_hash(b"don't care 1"), leaf_hash(b"don't care 2")
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    verify_consistency(0, 1, EMPTY_ROOT, r2, [])
    verify_consistency(1, 1, r2, r2, [])
    bad = [
        (0, 0, r1, r2, []),
        (1, 1, r1, r2, []),
        (0, 1, r1, r2, []),  # the empty tree's root must be SHA-256("")
        (1, 0, r1, r2, []),
        (2, 1, r1, r2, []),
        (1, 2, r1, r2, []),
        (0, 0, EMPTY_ROOT, r2, []),
        (1, 1, EMPTY_ROOT, r2, []),
        (0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT]),
        (0, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT]),
        (1, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT]),
    ]
    for probe in bad:
        with pytest.raises(VerificationError):
            verify_consistency(*probe)


def test_errors_carry_evidence() -> None:
    index, size, proof = INCLUSION[0]
    flipped = [bytes([proof[0][0] ^ 1]) + proof[0][1:], *proof[1:]]
    with pytest.raises(VerificationError) as exc:
        verify_inclusion(index, size, LEAF_HASHES[index], flipped, ROOTS[size])
    assert exc.value.evidence["index"] == index
    assert exc.value.evidence["size"] == size
    assert exc.value.evidence["root"] == ROOTS[size].hex()
