"""RFC 6962 / RFC 9162 Merkle tree hashing, proofs and proof verification. Pure: no I/O.

    >>> leaves = [leaf_hash(bytes([i])) for i in range(5)]
    >>> f = Frontier()
    >>> for h in leaves:
    ...     f.append(h)
    >>> f.root() == root_of(leaves)
    True
    >>> reader = list_reader(leaves)
    >>> proof = inclusion_proof(3, 5, reader)
    >>> verify_inclusion(3, 5, leaves[3], proof, f.root())  # returns None or raises

Nodes are addressed the way tiled logs store them: ``reader(level, index)`` is the hash of the
complete, aligned subtree of ``2**level`` leaves that starts at leaf ``index * 2**level``. Proof
generation asks the reader only for such nodes and makes O(log n) calls, so a reader backed by
persisted 256-wide tiles serves proofs without reading the tree back.

Verification returns ``None`` or raises :class:`~interlock.errors.VerificationError` carrying the
evidence (sizes, index, the hashes compared).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from interlock.errors import UsageError, VerificationError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "Frontier",
    "NodeReader",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "list_reader",
    "node_hash",
    "root_of",
    "subtree_hash",
    "verify_consistency",
    "verify_inclusion",
]

_sha256 = hashlib.sha256

#: SHA-256 output size; every hash in the tree and in a proof has this length
HASH_SIZE = 32

#: RFC 6962 §2.1: the hash of an empty list is the hash of an empty string
EMPTY_ROOT: bytes = _sha256(b"").digest()

#: ``reader(level, index)`` -> hash of the complete subtree of ``2**level`` leaves starting at
#: leaf ``index * 2**level``. It MUST only be asked for subtrees that are complete.
NodeReader = Callable[[int, int], bytes]


def leaf_hash(data: bytes) -> bytes:
    """The RFC 6962 leaf hash ``SHA-256(0x00 || data)``.

    Raises nothing.
    """
    # RFC 6962 §2.1: MTH({d(0)}) = SHA-256(0x00 || d(0))
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The RFC 6962 interior node hash ``SHA-256(0x01 || left || right)``.

    Raises nothing.
    """
    # RFC 6962 §2.1: MTH(D[n]) = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (``n > 1``), RFC 6962 §2.1's ``k``."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over a list of leaf hashes, written as RFC 6962 §2.1's recursive definition.

    This is the reference implementation: O(n) hashes, used by tests and for small trees.

    Raises nothing.
    """
    n = len(leaf_hashes)
    if n == 0:
        return EMPTY_ROOT

    def mth(lo: int, hi: int) -> bytes:
        # RFC 6962 §2.1: split at the largest power of two smaller than the size.
        if hi - lo == 1:
            return leaf_hashes[lo]
        k = _split(hi - lo)
        return node_hash(mth(lo, lo + k), mth(lo + k, hi))

    return mth(0, n)


class Frontier:
    """The right edge of a Merkle tree (a "compact range" from 0 to ``size``).

    ``hashes`` are the roots of the perfect subtrees that make up the tree, left to right,
    largest first: one per set bit of ``size``. Appending is O(1) amortized; ``root()`` is
    O(log n). The writer uses it to compute checkpoint roots without reading the tree back.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._hashes: list[bytes] = []

    @classmethod
    def from_hashes(cls, size: int, hashes: Sequence[bytes]) -> Frontier:
        """Rebuild a frontier from its ``size`` and perfect-subtree roots (left to right).

        Raises:
            UsageError: if ``size`` is negative, the number of hashes is not the number of set
                bits of ``size``, or a hash is not 32 bytes.
        """
        if size < 0:
            raise UsageError("a tree size cannot be negative", size=size)
        if len(hashes) != size.bit_count():
            raise UsageError(
                "a frontier of this size has one hash per set bit of the size",
                size=size,
                hashes=len(hashes),
            )
        for h in hashes:
            if len(h) != HASH_SIZE:
                raise UsageError("frontier hashes are 32 bytes", length=len(h))
        f = cls()
        f._size = size
        f._hashes = [bytes(h) for h in hashes]
        return f

    @property
    def size(self) -> int:
        """The number of leaves appended."""
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """The perfect-subtree roots, left to right."""
        return tuple(self._hashes)

    def append(self, leaf: bytes) -> None:
        """Append one leaf hash.

        Raises nothing (the caller passes a 32-byte hash).
        """
        # Each trailing 1-bit of the old size is a perfect subtree the new leaf completes.
        hashes = self._hashes
        size = self._size
        h = leaf
        while size & 1:
            h = _sha256(b"\x01" + hashes.pop() + h).digest()
            size >>= 1
        hashes.append(h)
        self._size += 1

    def root(self) -> bytes:
        """MTH of the leaves appended so far.

        Raises nothing.
        """
        hashes = self._hashes
        if not hashes:
            return EMPTY_ROOT
        # RFC 6962 §2.1: the smaller right-hand subtrees are combined first, right to left.
        r = hashes[-1]
        for h in reversed(hashes[:-1]):
            r = _sha256(b"\x01" + h + r).digest()
        return r

    def copy(self) -> Frontier:
        """An independent copy.

        Raises nothing.
        """
        f = Frontier()
        f._size = self._size
        f._hashes = list(self._hashes)
        return f

    def __repr__(self) -> str:
        return f"Frontier(size={self._size})"


def _is_tree_range(start: int, end: int) -> bool:
    """Whether ``D[start:end]`` is a subtree in RFC 6962 §2.1's recursion (or the whole tree)."""
    if start == 0:
        return end >= 0
    # A subtree starting at ``start`` spans at most the alignment of ``start``.
    return 0 < end - start <= (start & -start)


def subtree_hash(reader: NodeReader, start: int, end: int) -> bytes:
    """MTH(D[start:end]) from complete aligned subtrees supplied by ``reader``.

    Valid ranges are those RFC 6962 §2.1's recursion produces: ``start == 0`` (any ``end``), or
    ``0 < end - start <= 2**k`` where ``2**k`` is the largest power of two dividing ``start``.
    Makes one reader call per set bit of ``end - start``.

    Raises:
        UsageError: if the range is not a subtree of the RFC 6962 recursion.
    """
    if not _is_tree_range(start, end):
        raise UsageError("not a Merkle subtree range", start=start, end=end)
    if start == end:
        return EMPTY_ROOT
    # Decompose into perfect subtrees, largest first; each is aligned because ``start`` is
    # aligned to a power of two at least as large as the first.
    parts: list[bytes] = []
    pos = start
    remaining = end - start
    while remaining:
        level = remaining.bit_length() - 1
        parts.append(reader(level, pos >> level))
        pos += 1 << level
        remaining -= 1 << level
    # RFC 6962 §2.1: MTH(D[n]) = HASH(0x01 || MTH(D[0:k]) || MTH(D[k:n])) — fold right to left.
    r = parts[-1]
    for h in reversed(parts[:-1]):
        r = _sha256(b"\x01" + h + r).digest()
    return r


def list_reader(leaf_hashes: Sequence[bytes]) -> NodeReader:
    """A :data:`NodeReader` over an in-memory list of leaf hashes (a snapshot of it).

    Each level is computed once, on first use, and cached; fast enough for tests and
    benchmarks up to about a million leaves.

    Raises nothing; the returned reader raises ``UsageError`` for a node outside the
    complete part of the tree.
    """
    levels: list[list[bytes]] = [list(leaf_hashes)]

    def reader(level: int, index: int) -> bytes:
        while len(levels) <= level:
            below = levels[-1]
            levels.append(
                [
                    _sha256(b"\x01" + below[i] + below[i + 1]).digest()
                    for i in range(0, len(below) - 1, 2)
                ]
            )
        row = levels[level] if level >= 0 else []
        if not 0 <= index < len(row):
            raise UsageError("node is not a complete subtree of the tree", level=level, index=index)
        return row[index]

    return reader


def inclusion_proof(index: int, size: int, reader: NodeReader) -> list[bytes]:
    """The audit path for leaf ``index`` in the tree of ``size`` leaves.

    RFC 6962 §2.1.1 PATH(m, D[n]) / RFC 9162 §2.1.3.1. Makes O(log n) reader calls.

    Raises:
        UsageError: unless ``0 <= index < size``.
    """
    if not 0 <= index < size:
        raise UsageError("leaf index is outside the tree", index=index, size=size)
    siblings: list[bytes] = []
    offset, m, n = 0, index, size
    while n > 1:
        # RFC 6962 §2.1.1: PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n])        for m < k
        #                                = PATH(m - k, D[k:n]) : MTH(D[0:k])    for m >= k
        k = _split(n)
        if m < k:
            siblings.append(subtree_hash(reader, offset + k, offset + n))
            n = k
        else:
            siblings.append(subtree_hash(reader, offset, offset + k))
            offset += k
            m -= k
            n -= k
    siblings.reverse()  # the recursion appends outer siblings last: leaf's sibling first
    return siblings


def consistency_proof(old: int, new: int, reader: NodeReader) -> list[bytes]:
    """The consistency proof between the trees of ``old`` and ``new`` leaves.

    RFC 6962 §2.1.2 SUBPROOF / RFC 9162 §2.1.4.1. Empty when ``old == 0`` or ``old == new``
    (nothing to prove). Makes O(log n) reader calls.

    Raises:
        UsageError: unless ``0 <= old <= new``.
    """
    if not 0 <= old <= new:
        raise UsageError("consistency needs 0 <= old <= new", old=old, new=new)
    if old == 0 or old == new:
        return []
    nodes: list[bytes] = []
    offset, m, n, complete = 0, old, new, True
    while m != n:
        # RFC 6962 §2.1.2: SUBPROOF(m, D[n], b) = SUBPROOF(m, D[0:k], b) : MTH(D[k:n])  m <= k
        #                                       = SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])
        k = _split(n)
        if m <= k:
            nodes.append(subtree_hash(reader, offset + k, offset + n))
            n = k
        else:
            nodes.append(subtree_hash(reader, offset, offset + k))
            offset += k
            m -= k
            n -= k
            complete = False
    if not complete:
        # SUBPROOF(m, D[m], false) = {MTH(D[m])}: the old tree is not itself a subtree root.
        nodes.append(subtree_hash(reader, offset, offset + n))
    nodes.reverse()
    return nodes


def _check_hash(name: str, value: bytes, **evidence: object) -> None:
    if len(value) != HASH_SIZE:
        raise VerificationError(f"{name} is not a 32-byte hash", length=len(value), **evidence)


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Verify that ``leaf`` (a leaf hash) is at ``index`` in the tree of ``size`` with ``root``.

    RFC 9162 §2.1.3.2.

    Raises:
        VerificationError: if the index is outside the tree, a hash has the wrong length, the
            proof has the wrong number of hashes, or the computed root differs from ``root``.
    """
    _check_hash("leaf hash", leaf, index=index, size=size)
    _check_hash("root hash", root, index=index, size=size)
    for i, p in enumerate(proof):
        _check_hash("inclusion proof element", p, position=i, index=index, size=size)
    # RFC 9162 §2.1.3.2 step 1: leaf_index must be < tree_size.
    if not 0 <= index < size:
        raise VerificationError("leaf index is outside the tree", index=index, size=size)
    # Step 2-3.
    fn, sn = index, size - 1
    r = leaf
    # Step 4.
    for p in proof:
        # 4a: a proof longer than the path fails.
        if sn == 0:
            raise VerificationError(
                "inclusion proof has more hashes than the tree has levels",
                index=index,
                size=size,
                proof_len=len(proof),
            )
        if fn & 1 or fn == sn:
            # 4b: r = HASH(0x01 || p || r), then shift until LSB(fn) is set or fn is 0.
            r = _sha256(b"\x01" + p + r).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _sha256(b"\x01" + r + p).digest()
        # 4c.
        fn >>= 1
        sn >>= 1
    # Step 5.
    if sn != 0:
        raise VerificationError(
            "inclusion proof has fewer hashes than the tree has levels",
            index=index,
            size=size,
            proof_len=len(proof),
        )
    if r != root:
        raise VerificationError(
            "inclusion proof does not lead to the root",
            index=index,
            size=size,
            computed=r.hex(),
            root=root.hex(),
        )


def verify_consistency(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Verify that the tree of ``new`` leaves with ``new_root`` extends the tree of ``old``.

    RFC 9162 §2.1.4.2, plus the two cases with nothing to prove, which need an empty proof:
    ``old == new`` (the roots must be equal) and ``old == 0`` (``old_root`` must be the empty
    tree's root, SHA-256 of the empty string).

    Raises:
        VerificationError: if ``old > new``, a hash has the wrong length, the proof has the
            wrong shape, or either recomputed root differs.
    """
    ev: dict[str, object] = {"old": old, "new": new}
    _check_hash("old root", old_root, **ev)
    _check_hash("new root", new_root, **ev)
    for i, p in enumerate(proof):
        _check_hash("consistency proof element", p, position=i, **ev)
    if not 0 <= old <= new:
        raise VerificationError("consistency needs 0 <= old <= new", **ev)
    if old == new or old == 0:
        if proof:
            raise VerificationError("consistency proof must be empty", proof_len=len(proof), **ev)
        if old == new and old_root != new_root:
            raise VerificationError(
                "two different roots for the same tree size",
                old_root=old_root.hex(),
                new_root=new_root.hex(),
                **ev,
            )
        if old == 0 and old_root != EMPTY_ROOT:
            raise VerificationError("the root of an empty tree must be SHA-256('')", **ev)
        return
    # RFC 9162 §2.1.4.2 step 1.
    if not proof:
        raise VerificationError("consistency proof is empty", **ev)
    path = list(proof)
    # Step 2: if first is a power of two, the old root is a node of the new tree.
    if old & (old - 1) == 0:
        path.insert(0, old_root)
    # Step 3-4.
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # Step 5.
    fr = sr = path[0]
    # Step 6.
    for c in path[1:]:
        # 6a.
        if sn == 0:
            raise VerificationError(
                "consistency proof has more hashes than needed", proof_len=len(proof), **ev
            )
        if fn & 1 or fn == sn:
            # 6b.
            fr = _sha256(b"\x01" + c + fr).digest()
            sr = _sha256(b"\x01" + c + sr).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = _sha256(b"\x01" + sr + c).digest()
        # 6c.
        fn >>= 1
        sn >>= 1
    # Step 7.
    if sn != 0:
        raise VerificationError(
            "consistency proof has fewer hashes than needed", proof_len=len(proof), **ev
        )
    if fr != old_root:
        raise VerificationError(
            "consistency proof does not lead to the old root",
            computed=fr.hex(),
            old_root=old_root.hex(),
            **ev,
        )
    if sr != new_root:
        raise VerificationError(
            "consistency proof does not lead to the new root",
            computed=sr.hex(),
            new_root=new_root.hex(),
            **ev,
        )
