"""What the SQLite driver's modules share: reading entries in chunks, and values as bytes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any


def _as_bytes(value: object) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode()


_SELECT_ENTRIES = "SELECT idx, leaf_hash, data FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx"


def _entry_chunks(
    read: Callable[[int, int], list[Any]], start: int, end: int | None, chunk: int
) -> Iterator[list[tuple[int, bytes, bytes]]]:
    """``(index, leaf hash, data)`` rows from ``start`` (to ``end``), ``chunk`` at a time, each
    chunk read by ``read(lo, hi)``."""
    pos = start
    while True:
        hi = pos + chunk if end is None else min(end, pos + chunk)
        if hi <= pos:
            return
        rows = read(pos, hi)
        if not rows:
            return
        if all(type(r[1]) is bytes and type(r[2]) is bytes for r in rows):
            yield rows
        else:  # an edited database may hold TEXT where BLOBs belong: read it as its bytes
            yield [(int(i), _as_bytes(lh), _as_bytes(d)) for i, lh, d in rows]
        pos = int(rows[-1][0]) + 1
