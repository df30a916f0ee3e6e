"""The SQLite driver's tree reads: tiles (C2SP tlog-tiles, persisted when full), subtree hashes,
the right edge, inclusion and consistency proofs (RFC 9162)."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import TYPE_CHECKING

from interlock.errors import (
    LedgerCorrupt,
    LedgerError,
    UsageError,
    VerificationError,
)
from interlock.ledger import merkle
from interlock.ledger.note import NoteVerifier, open_checkpoint
from interlock.ledger.storage.sqlite_common import _as_bytes
from interlock.ledger.tiles import tile_levels

if TYPE_CHECKING:
    from interlock.ledger.protocols import StoredCheckpoint

TILE = 256


class TreeReads:
    """Reading the Merkle tree from its tiles (mixed into
    :class:`interlock.ledger.storage.sqlite.SqliteLedger`)."""

    _tile_cache: OrderedDict[tuple[int, int], list[bytes]]
    _cache_lock: threading.Lock

    if TYPE_CHECKING:

        def _reader(self) -> contextlib.AbstractContextManager[sqlite3.Connection]: ...

        def size(self) -> int: ...

    def _tile_level_hashes(self, c: sqlite3.Connection, level: int, n: int) -> bytes:
        """Hashes (concatenated) at Merkle level 8*level in the *partial* tile (level, n),
        derived: for level 0 only the contiguous run of entries from the tile's start."""
        if level == 0:
            lo = n * TILE
            out: list[bytes] = []
            for idx, lh in c.execute(
                "SELECT idx, leaf_hash FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx",
                (lo, lo + TILE),
            ).fetchall():
                if idx != lo + len(out):
                    break
                out.append(bytes(lh))
            return b"".join(out)
        rows = c.execute(
            "SELECT root FROM tiles WHERE level = ? AND n >= ? AND n < ? ORDER BY n",
            (level - 1, n * TILE, (n + 1) * TILE),
        ).fetchall()
        return b"".join(bytes(r[0]) for r in rows)

    def _read_tile(self, c: sqlite3.Connection, level: int, n: int) -> list[bytes]:
        row = c.execute(
            "SELECT hashes, nodes, root FROM tiles WHERE level = ? AND n = ?", (level, n)
        ).fetchone()
        if row is not None:
            # a full tile carries its eight internal levels: a proof costs no hashing
            hashes, nodes, root = bytes(row[0]), bytes(row[1]), bytes(row[2])
            if len(hashes) != TILE * 32 or len(nodes) != (TILE - 2) * 32 or len(root) != 32:
                raise LedgerCorrupt("persisted tile has the wrong size", level=level, n=n)
            levels = [hashes]
            pos = 0
            for r in range(1, 8):
                width = (TILE >> r) * 32
                levels.append(nodes[pos : pos + width])
                pos += width
            levels.append(root)
            return levels
        return tile_levels(self._tile_level_hashes(c, level, n))

    def _expanded_tile(
        self, level: int, n: int, need: int = 0, conn: sqlite3.Connection | None = None
    ) -> list[bytes]:
        """All nine levels of tile (level, n), each as concatenated 32-byte hashes. A cached
        partial tile is reused while it holds the ``need``-th base hash: complete subtrees
        never change as the log grows.

        ``conn`` (the write connection, holder of ``_wlock``) is read instead of the read
        connection; it must not have written anything in its open transaction, so that only
        committed state is read and cached."""
        key = (level, n)
        with self._cache_lock:
            cached = self._tile_cache.get(key)
            if cached is not None and len(cached[0]) > need * 32:
                self._tile_cache.move_to_end(key)
                return cached
        if conn is None:
            with self._reader() as c:
                levels = self._read_tile(c, level, n)
        else:
            levels = self._read_tile(conn, level, n)
        with self._cache_lock:
            cached = self._tile_cache.get(key)
            if cached is None or len(cached[0]) < len(levels[0]):
                self._tile_cache[key] = levels
                if len(self._tile_cache) > 4096:
                    self._tile_cache.popitem(last=False)
        return levels

    def stored_tile(self, level: int, n: int) -> tuple[bytes, bytes, bytes] | None:
        """The persisted full tile ``(level, n)`` as ``(hashes, internal nodes, root)``, or
        None (for verifiers, which recompute it)."""
        with self._reader() as c:
            row = c.execute(
                "SELECT hashes, nodes, root FROM tiles WHERE level = ? AND n = ?", (level, n)
            ).fetchone()
        return None if row is None else (_as_bytes(row[0]), _as_bytes(row[1]), _as_bytes(row[2]))

    def node(self, level: int, index: int) -> bytes:
        """Hash of the complete subtree of ``2**level`` leaves starting at ``index * 2**level``
        (the :data:`interlock.ledger.merkle.NodeReader` contract).

        Raises:
            LedgerError: if that subtree is not complete in the stored log.
        """
        return self._node(level, index, None)

    def _node(self, level: int, index: int, conn: sqlite3.Connection | None) -> bytes:
        tile_level, r = divmod(level, 8)
        first = index << r  # index at Merkle level 8*tile_level
        n, pos = divmod(first, TILE)
        last = pos + (1 << r) - 1  # the last base hash this subtree needs
        row = self._expanded_tile(tile_level, n, last, conn)[r]
        j = (pos >> r) * 32
        if j + 32 > len(row):
            raise LedgerError("requested subtree is not complete", level=level, index=index)
        return row[j : j + 32]

    def _frontier_of(self, size: int, conn: sqlite3.Connection | None = None) -> merkle.Frontier:
        """The right edge of the stored tree of ``size``: one complete subtree per set bit.

        Raises:
            LedgerError: a subtree is not complete; UsageError: a stored hash is malformed.
        """
        hashes = []
        pos, remaining = 0, size
        while remaining:
            level = remaining.bit_length() - 1
            hashes.append(self._node(level, pos >> level, conn))
            pos += 1 << level
            remaining -= 1 << level
        return merkle.Frontier.from_hashes(size, hashes)

    def root_at(self, size: int) -> bytes:
        """MTH of the first ``size`` entries."""
        if size == 0:
            return merkle.EMPTY_ROOT
        return merkle.subtree_hash(self.node, 0, size)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """RFC 9162 §2.1.3.1 inclusion proof of ``index`` in the tree of ``size``."""
        if not 0 <= index < size <= self.size():
            raise LedgerError("index/size out of range", index=index, size=size)
        return merkle.inclusion_proof(index, size, self.node)

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        """RFC 9162 §2.1.4.1 consistency proof from ``old`` to ``new``."""
        if not 0 <= old <= new <= self.size():
            raise LedgerError("sizes out of range", old=old, new=new)
        return merkle.consistency_proof(old, new, self.node)


class TreeCheck(TreeReads):
    """The start-up self check of the stored tree (mixed into
    :class:`interlock.ledger.storage.sqlite.SqliteLedger`)."""

    if TYPE_CHECKING:

        def latest_checkpoint(self) -> StoredCheckpoint | None: ...

        def iter_entries(
            self, start: int = 0, end: int | None = None
        ) -> Iterator[tuple[int, bytes, bytes]]: ...

    def self_check(self, verifier: NoteVerifier) -> None:
        """Cheap start-up check that this node may keep allowing (DESIGN I4): the latest signed
        checkpoint verifies and matches the stored tree, entries after it hash to their stored
        leaf hashes, and the stored tree (from which the writer derives its right edge) matches
        those entries.

        Raises:
            LedgerCorrupt: on any mismatch.
        """
        # checkpoint first, then size: a checkpoint commits with the entries it covers and the
        # log only grows, so cp.size <= size even while writers append (no false alarm)
        cp = self.latest_checkpoint()
        size = self.size()
        frontier = merkle.Frontier()
        if cp is not None:
            try:
                parsed = open_checkpoint(cp.note, verifier)
            except VerificationError as exc:
                raise LedgerCorrupt(f"latest checkpoint does not verify: {exc.message}") from exc
            if parsed.size != cp.size or parsed.size > size:
                raise LedgerCorrupt("checkpoint size disagrees with the log", checkpoint=cp.size)
            try:
                frontier = self._frontier_of(parsed.size)
            except (LedgerError, UsageError) as exc:
                raise LedgerCorrupt(f"cannot recompute checkpointed root: {exc.message}") from exc
            if frontier.root() != parsed.root_hash:
                raise LedgerCorrupt(
                    "stored tree does not match the latest checkpoint", size=cp.size
                )
        for idx, lh, data in self.iter_entries(frontier.size, size):
            if idx != frontier.size:
                raise LedgerCorrupt("entries are not contiguous", index=frontier.size)
            if merkle.leaf_hash(data) != lh:
                raise LedgerCorrupt("entry does not match its leaf hash", index=idx)
            frontier.append(lh)
        try:
            root = self.root_at(size)
        except LedgerError as exc:
            raise LedgerCorrupt(f"stored tree does not cover the entries: {exc.message}") from exc
        if frontier.size != size or frontier.root() != root:
            raise LedgerCorrupt("stored tree does not match the entries", size=size)
