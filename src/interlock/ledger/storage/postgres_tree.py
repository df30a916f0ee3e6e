"""The PostgreSQL driver's tree: reading tiles (C2SP tlog-tiles), subtree hashes, the right
edge, inclusion and consistency proofs (RFC 9162), the start-up self check, and the
integrator's step that persists the tiles a batch of entries completed.

Full tiles are persisted by the integrator only, in batches; a tile the integrator has not
reached yet is *derived*: at level 0 from the contiguous entries' stored leaf hashes, above
from the roots of the tiles below (persisted, or themselves derived when complete). So every
read here works for any committed size, not only the integrated one: past the integrated size
it costs the hashing of at most the tiles the integrator has not persisted yet.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import psycopg

from interlock.errors import (
    LedgerCorrupt,
    LedgerError,
    LedgerUnavailable,
    UsageError,
    VerificationError,
)
from interlock.ledger import merkle
from interlock.ledger.note import NoteVerifier, open_checkpoint
from interlock.ledger.tiles import tile_levels

if TYPE_CHECKING:
    from interlock.ledger.protocols import StoredCheckpoint

TILE = 256


def _split_tile(level: int, n: int, hashes: bytes, nodes: bytes, root: bytes) -> list[bytes]:
    """A persisted full tile's nine levels; it carries its internal levels, so a proof costs no
    hashing.

    Raises:
        LedgerCorrupt: a stored part has the wrong size.
    """
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


class TreeReads:
    """Reading the Merkle tree (mixed into
    :class:`interlock.ledger.storage.postgres.PostgresLedger`)."""

    _tile_cache: OrderedDict[tuple[int, int], list[bytes]]
    _cache_lock: threading.Lock

    if TYPE_CHECKING:

        def _reader(self) -> contextlib.AbstractContextManager[psycopg.Connection[Any]]: ...

        def size(self) -> int: ...

    def _base_hashes(self, c: psycopg.Connection[Any], level: int, n: int) -> bytes:
        """The hashes (concatenated) at Merkle level ``8*level`` that tile ``(level, n)`` has,
        contiguous from its start: at level 0 the entries' leaf hashes, above the roots of the
        tiles below, persisted or (when complete) derived."""
        lo = n * TILE
        if level == 0:
            out: list[bytes] = []
            for idx, lh in c.execute(
                "SELECT idx, leaf_hash FROM entries WHERE idx >= %s AND idx < %s ORDER BY idx",
                (lo, lo + TILE),
            ).fetchall():
                if idx != lo + len(out):
                    break
                out.append(bytes(lh))
            return b"".join(out)
        roots = dict(
            c.execute(
                "SELECT n, root FROM tiles WHERE level = %s AND n >= %s AND n < %s",
                (level - 1, lo, lo + TILE),
            ).fetchall()
        )
        found: list[bytes] = []
        for k in range(lo, lo + TILE):
            root = roots.get(k)
            if root is None:  # not integrated yet: derive it if it is complete
                below = self._base_hashes(c, level - 1, k)
                if len(below) != TILE * 32:
                    break
                root = tile_levels(below)[8]
            found.append(bytes(root))
        return b"".join(found)

    def _read_tile(self, c: psycopg.Connection[Any], level: int, n: int) -> list[bytes]:
        row = c.execute(
            "SELECT hashes, nodes, root FROM tiles WHERE level = %s AND n = %s", (level, n)
        ).fetchone()
        if row is not None:
            return _split_tile(level, n, bytes(row[0]), bytes(row[1]), bytes(row[2]))
        return tile_levels(self._base_hashes(c, level, n))

    def _expanded_tile(
        self, level: int, n: int, need: int = 0, conn: psycopg.Connection[Any] | None = None
    ) -> list[bytes]:
        """All nine levels of tile (level, n), each as concatenated 32-byte hashes. A cached
        partial tile is reused while it holds the ``need``-th base hash: complete subtrees
        never change as the log grows. ``conn``: read there (a view's or the integrator's
        transaction) instead of a pooled connection."""
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
        None (not full, or not integrated yet; for verifiers, which recompute it)."""
        with self._reader() as c:
            row = c.execute(
                "SELECT hashes, nodes, root FROM tiles WHERE level = %s AND n = %s", (level, n)
            ).fetchone()
        return None if row is None else (bytes(row[0]), bytes(row[1]), bytes(row[2]))

    def node(self, level: int, index: int) -> bytes:
        """Hash of the complete subtree of ``2**level`` leaves starting at ``index * 2**level``
        (the :data:`interlock.ledger.merkle.NodeReader` contract).

        Raises:
            LedgerError: if that subtree is not complete in the committed log.
        """
        return self._node(level, index, None)

    def _node(self, level: int, index: int, conn: psycopg.Connection[Any] | None) -> bytes:
        tile_level, r = divmod(level, 8)
        first = index << r
        n, pos = divmod(first, TILE)
        last = pos + (1 << r) - 1
        row = self._expanded_tile(tile_level, n, last, conn)[r]
        j = (pos >> r) * 32
        if j + 32 > len(row):
            raise LedgerError("requested subtree is not complete", level=level, index=index)
        return row[j : j + 32]

    def _frontier_of(
        self, size: int, conn: psycopg.Connection[Any] | None = None
    ) -> merkle.Frontier:
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
        """RFC 9162 §2.1.3.1 inclusion proof of ``index`` in the tree of ``size`` (any
        committed size)."""
        if not 0 <= index < size <= self.size():
            raise LedgerError("index/size out of range", index=index, size=size)
        return merkle.inclusion_proof(index, size, self.node)

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        """RFC 9162 §2.1.4.1 consistency proof from ``old`` to ``new`` (any committed sizes)."""
        if not 0 <= old <= new <= self.size():
            raise LedgerError("sizes out of range", old=old, new=new)
        return merkle.consistency_proof(old, new, self.node)


def persist_tiles(cur: psycopg.Cursor[Any], old: int, new: int, fresh: dict[int, bytes]) -> None:
    """Persist every tile that became full between sizes ``old`` and ``new`` (the integrator,
    in its transaction; ``fresh`` holds leaf hashes it has just checked)."""
    level = 0
    while True:
        width = TILE ** (level + 1)
        first, last = old // width, new // width
        if first == last:
            return
        rows = []
        for n in range(first, last):
            lo = n * TILE
            if level == 0:
                hashes = [fresh.get(i) for i in range(lo, lo + TILE)]
                if any(h is None for h in hashes):
                    stored = dict(
                        cur.execute(
                            "SELECT idx, leaf_hash FROM entries WHERE idx >= %s AND idx < %s",
                            (lo, lo + TILE),
                        ).fetchall()
                    )
                    hashes = [fresh.get(i) or stored.get(i) for i in range(lo, lo + TILE)]
                level_hashes = [bytes(h) for h in hashes if h is not None]
            else:
                level_hashes = [
                    bytes(r[0])
                    for r in cur.execute(
                        "SELECT root FROM tiles WHERE level = %s AND n >= %s AND n < %s ORDER BY n",
                        (level - 1, lo, lo + TILE),
                    ).fetchall()
                ]
            if len(level_hashes) != TILE:
                raise LedgerCorrupt("tile is missing hashes", level=level, n=n)
            levels = tile_levels(b"".join(level_hashes))
            rows.append((level, n, levels[0], b"".join(levels[1:8]), levels[8]))
        cur.executemany(
            "INSERT INTO tiles(level, n, hashes, nodes, root) VALUES (%s, %s, %s, %s, %s)", rows
        )
        level += 1


class TreeCheck(TreeReads):
    """The start-up self check of the stored tree (mixed into
    :class:`interlock.ledger.storage.postgres.PostgresLedger`)."""

    if TYPE_CHECKING:

        def latest_checkpoint(self) -> StoredCheckpoint | None: ...

        def iter_entries(
            self, start: int = 0, end: int | None = None
        ) -> Iterator[tuple[int, bytes, bytes]]: ...

    def self_check(self, verifier: NoteVerifier) -> None:
        """Cheap start-up check that this node may keep allowing (DESIGN I4): the latest signed
        checkpoint verifies and matches the stored tree, entries after it hash to their stored
        leaf hashes, and the stored tree matches those entries.

        Raises:
            LedgerCorrupt: on any mismatch. LedgerUnavailable: storage cannot be read.
        """
        # checkpoint first, then size: a checkpoint commits after the entries it covers and
        # the log only grows, so cp.size <= size even while writers append
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
            except LedgerUnavailable:
                raise  # storage failed: not evidence of anything
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
        except LedgerUnavailable:
            raise
        except LedgerError as exc:
            raise LedgerCorrupt(f"stored tree does not cover the entries: {exc.message}") from exc
        if frontier.size != size or frontier.root() != root:
            raise LedgerCorrupt("stored tree does not match the entries", size=size)
