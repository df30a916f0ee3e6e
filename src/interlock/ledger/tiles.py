"""C2SP tlog-tiles: tile paths, entry bundles, and exporting a ledger as static tiles.

    >>> tile_path(0, 1234067)
    'tile/0/x001/x234/067'
    >>> tile_path(1, 5, width=17)
    'tile/1/005.p/17'
    >>> entries_path(0, width=3)
    'tile/entries/000.p/3'
    >>> decode_entry_bundle(encode_entry_bundle([b"a", b""]))
    [b'a', b'']

A tile at level ``L`` holds up to 256 consecutive Merkle node hashes at tree height ``8 * L``
(https://c2sp.org/tlog-tiles §Merkle Tree). Entry bundles hold the entries themselves, each
prefixed by its length as a big-endian uint16, so an entry can be at most 65,535 bytes.
Interlock caps ledger records at 64 KiB (DESIGN §6); a record of exactly 65,536 bytes cannot be
exported and :func:`export_tiles` refuses it with :class:`EntryTooLarge`.

Everything here is pure except :func:`export_tiles`, which writes files.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

from interlock.errors import Error, UsageError, VerificationError
from interlock.ledger.merkle import HASH_SIZE, NodeReader

__all__ = [
    "MAX_ENTRY_BYTES",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "EntryTooLarge",
    "decode_entry_bundle",
    "encode_entry_bundle",
    "entries_path",
    "export_tiles",
    "tile_hashes",
    "tile_levels",
    "tile_path",
]

#: c2sp.org/tlog-tiles: full tiles are 256 hashes wide
TILE_WIDTH = 256
#: tree levels spanned by one tile level (log2 of the width)
TILE_HEIGHT = 8
#: c2sp.org/tlog-tiles §Log entries: entries are uint16 length-prefixed
MAX_ENTRY_BYTES = 0xFFFF
_MAX_LEVEL = 63


class EntryTooLarge(Error):
    """An entry is larger than an entry bundle can carry (65,535 bytes)."""


def encode_index(n: int) -> str:
    # c2sp.org/tlog-tiles §Merkle Tree: zero-padded 3-digit path elements, all but the last
    # prefixed with "x"; 1234067 -> x001/x234/067.
    parts = [f"{n % 1000:03d}"]
    n //= 1000
    while n > 0:
        parts.append(f"x{n % 1000:03d}")
        n //= 1000
    return "/".join(reversed(parts))


def _suffix(n: int, width: int) -> str:
    if n < 0:
        raise UsageError("tile index cannot be negative", n=n)
    if not 1 <= width <= TILE_WIDTH:
        raise UsageError("tile width must be 1..256", width=width)
    # c2sp.org/tlog-tiles §Partial Tiles: ".p/<W>" only for partial tiles (W in 1..255).
    return encode_index(n) + (f".p/{width}" if width < TILE_WIDTH else "")


def tile_path(level: int, n: int, width: int = TILE_WIDTH) -> str:
    """The path of hash tile ``n`` at tile level ``level``: ``tile/<L>/<N>[.p/<W>]``.

    Raises:
        UsageError: if ``level`` is not 0..63, ``n`` is negative or ``width`` not 1..256.
    """
    if not 0 <= level <= _MAX_LEVEL:
        raise UsageError("tile level must be 0..63", level=level)
    return f"tile/{level}/{_suffix(n, width)}"


def entries_path(n: int, width: int = TILE_WIDTH) -> str:
    """The path of entry bundle ``n``: ``tile/entries/<N>[.p/<W>]``.

    Raises:
        UsageError: if ``n`` is negative or ``width`` not 1..256.
    """
    return f"tile/entries/{_suffix(n, width)}"


def encode_entry_bundle(entries: Sequence[bytes]) -> bytes:
    """Concatenate entries, each prefixed by its length as a big-endian uint16.

    Raises:
        EntryTooLarge: if an entry is longer than 65,535 bytes.
    """
    out = bytearray()
    for i, entry in enumerate(entries):
        if len(entry) > MAX_ENTRY_BYTES:
            raise EntryTooLarge(
                "entry is too large for a tlog-tiles entry bundle (max 65535 bytes)",
                position=i,
                size=len(entry),
            )
        out += len(entry).to_bytes(2, "big")
        out += entry
    return bytes(out)


def decode_entry_bundle(data: bytes) -> list[bytes]:
    """Split an entry bundle into its entries.

    Raises:
        VerificationError: if the bundle is truncated (a length prefix runs past the end).
    """
    entries: list[bytes] = []
    pos = 0
    end = len(data)
    while pos < end:
        if pos + 2 > end:
            raise VerificationError("entry bundle is truncated", offset=pos)
        n = int.from_bytes(data[pos : pos + 2], "big")
        pos += 2
        if pos + n > end:
            raise VerificationError("entry bundle is truncated", offset=pos, length=n)
        entries.append(bytes(data[pos : pos + n]))
        pos += n
    return entries


def _tile_width(level: int, n: int, size: int) -> int:
    """Width of tile ``(level, n)`` in a tree of ``size`` leaves, 0 if it does not exist."""
    # c2sp.org/tlog-tiles §Partial Tiles: level l has floor(s / 256**l) hashes in all.
    count = size >> (TILE_HEIGHT * level)
    return max(0, min(TILE_WIDTH, count - n * TILE_WIDTH))


def tile_hashes(level: int, n: int, size: int, reader: NodeReader) -> bytes:
    """The concatenated hashes of tile ``(level, n)`` for the tree of ``size`` leaves.

    The tile is full (256 hashes) or, if it is the right-most one, partial. Hash ``i`` is
    MTH(D[(n*256 + i) * 256**level : (n*256 + i + 1) * 256**level]), the node at tree height
    ``8 * level`` (c2sp.org/tlog-tiles §Merkle Tree).

    Raises:
        UsageError: if the level is not 0..63 or the tile is empty in a tree of this size.
    """
    if not 0 <= level <= _MAX_LEVEL or n < 0:
        raise UsageError("no such tile", level=level, n=n)
    width = _tile_width(level, n, size)
    if width == 0:
        raise UsageError("tile is empty in a tree of this size", level=level, n=n, size=size)
    height = TILE_HEIGHT * level
    first = n * TILE_WIDTH
    return b"".join(reader(height, first + i) for i in range(width))


def _write(out_dir: Path, rel: str, data: bytes) -> None:
    path = out_dir.joinpath(*rel.split("/"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def export_tiles(
    out_dir: Path,
    *,
    size: int,
    checkpoint_note: str,
    reader: NodeReader,
    entry_at: Callable[[int], bytes],
) -> int:
    """Write the tree of ``size`` leaves as a static tlog-tiles directory; return files written.

    Writes every hash tile ``tile/L/N[.p/W]`` and entry bundle ``tile/entries/N[.p/W]`` of the
    tree, then ``checkpoint`` last, so a reader never sees a checkpoint whose tiles are missing.
    Each entry's leaf hash is checked against the level-0 hash it is exported beside.
    Existing files are overwritten (tiles are immutable, so identical); stale partial tiles
    from an earlier, smaller export are left in place, as the spec allows.

    Raises:
        UsageError: if ``size`` is negative or the checkpoint's size line is not ``size``.
        EntryTooLarge: if an entry is longer than 65,535 bytes.
        VerificationError: if an entry does not hash to the leaf hash the reader returns.
        OSError: if a file cannot be written.
    """
    if size < 0:
        raise UsageError("tree size cannot be negative", size=size)
    lines = checkpoint_note.split("\n", 2)
    if len(lines) < 3 or lines[1] != str(size):
        raise UsageError("checkpoint is not for the exported tree size", size=size)
    written = 0
    # Level 0 together with the entry bundles, checking each entry against its leaf hash.
    sha256 = hashlib.sha256
    for n in range((size + TILE_WIDTH - 1) // TILE_WIDTH):
        width = _tile_width(0, n, size)
        first = n * TILE_WIDTH
        hashes = tile_hashes(0, n, size, reader)
        entries = [entry_at(first + i) for i in range(width)]
        for i, entry in enumerate(entries):
            if sha256(b"\x00" + entry).digest() != hashes[i * HASH_SIZE : (i + 1) * HASH_SIZE]:
                raise VerificationError(
                    "entry does not match its leaf hash; refusing to export", index=first + i
                )
        try:
            bundle = encode_entry_bundle(entries)
        except EntryTooLarge as exc:
            raise EntryTooLarge(
                exc.message, index=first + int(exc.evidence["position"]), size=exc.evidence["size"]
            ) from exc
        _write(out_dir, tile_path(0, n, width), hashes)
        _write(out_dir, entries_path(n, width), bundle)
        written += 2
    level = 1
    while size >> (TILE_HEIGHT * level):
        count = size >> (TILE_HEIGHT * level)
        for n in range((count + TILE_WIDTH - 1) // TILE_WIDTH):
            width = _tile_width(level, n, size)
            _write(out_dir, tile_path(level, n, width), tile_hashes(level, n, size, reader))
            written += 1
        level += 1
    _write(out_dir, "checkpoint", checkpoint_note.encode("utf-8"))
    return written + 1


def tile_levels(base: bytes) -> list[bytes]:
    """The nine levels of a tile (base hashes up to its root, RFC 6962 node hashing), each as
    concatenated 32-byte hashes; a partial tile gives the complete nodes it has."""
    levels = [base]
    sha = hashlib.sha256
    for _ in range(8):
        prev = levels[-1]
        out = bytearray()
        for i in range(0, len(prev) - 63, 64):
            out += sha(b"\x01" + prev[i : i + 64]).digest()
        levels.append(bytes(out))
    return levels
