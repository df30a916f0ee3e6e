"""tlog-tiles paths, entry bundles, tile contents and export."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from interlock.errors import UsageError, VerificationError
from interlock.ledger.merkle import Frontier, leaf_hash, list_reader, root_of
from interlock.ledger.note import Checkpoint, NoteSigner, sign_checkpoint
from interlock.ledger.tiles import (
    MAX_ENTRY_BYTES,
    TILE_WIDTH,
    EntryTooLarge,
    decode_entry_bundle,
    encode_entry_bundle,
    entries_path,
    export_tiles,
    tile_hashes,
    tile_path,
)

ORIGIN = "interlock.test/tiles"


@pytest.mark.parametrize(
    ("level", "n", "width", "path"),
    [
        (0, 1234067, 256, "tile/0/x001/x234/067"),  # the c2sp.org/tlog-tiles example
        (0, 0, 256, "tile/0/000"),
        (0, 999, 256, "tile/0/999"),
        (0, 1000, 256, "tile/0/x001/000"),
        (2, 1_000_000, 256, "tile/2/x001/x000/000"),
        (0, 1234, 17, "tile/0/x001/234.p/17"),
        (1, 5, 1, "tile/1/005.p/1"),
        (63, 0, 255, "tile/63/000.p/255"),
    ],
)
def test_tile_paths(level: int, n: int, width: int, path: str) -> None:
    assert tile_path(level, n, width) == path


def test_entries_paths() -> None:
    assert entries_path(1234067) == "tile/entries/x001/x234/067"
    assert entries_path(273, 112) == "tile/entries/273.p/112"
    assert entries_path(0, TILE_WIDTH) == "tile/entries/000"


@pytest.mark.parametrize(("level", "n", "width"), [(-1, 0, 1), (64, 0, 1), (0, -1, 1)])
def test_tile_path_rejects_bad_coordinates(level: int, n: int, width: int) -> None:
    with pytest.raises(UsageError):
        tile_path(level, n, width)


@pytest.mark.parametrize("width", [0, 257, -3])
def test_paths_reject_bad_widths(width: int) -> None:
    with pytest.raises(UsageError):
        tile_path(0, 0, width)
    with pytest.raises(UsageError):
        entries_path(0, width)


def test_entry_bundle_encoding() -> None:
    entries = [b"", b"a", bytes(300), b"x" * MAX_ENTRY_BYTES]
    data = encode_entry_bundle(entries)
    assert data[:5] == bytes.fromhex("0000000161")
    assert data[5:7] == (300).to_bytes(2, "big")
    assert decode_entry_bundle(data) == entries
    assert decode_entry_bundle(b"") == []


def test_entry_bundle_rejects_oversize_entry() -> None:
    with pytest.raises(EntryTooLarge) as exc:
        encode_entry_bundle([b"ok", bytes(MAX_ENTRY_BYTES + 1)])
    assert exc.value.evidence == {"position": 1, "size": MAX_ENTRY_BYTES + 1}


@pytest.mark.parametrize("data", [b"\x00", b"\x00\x02a", b"\x00\x01a\x00"])
def test_truncated_entry_bundle_is_rejected(data: bytes) -> None:
    with pytest.raises(VerificationError, match="truncated"):
        decode_entry_bundle(data)


def _leaves(n: int) -> tuple[list[bytes], list[bytes]]:
    entries = [i.to_bytes(4, "big") for i in range(n)]
    return entries, [leaf_hash(e) for e in entries]


def test_tile_hashes_full_and_partial() -> None:
    _, leaves = _leaves(256 * 3 + 10)
    reader = list_reader(leaves)
    size = len(leaves)
    assert tile_hashes(0, 0, size, reader) == b"".join(leaves[:256])
    assert tile_hashes(0, 3, size, reader) == b"".join(leaves[768:778])
    # Level 1 holds the roots of full level-0 tiles only.
    level1 = tile_hashes(1, 0, size, reader)
    assert level1 == b"".join(root_of(leaves[i * 256 : (i + 1) * 256]) for i in range(3))
    # A smaller tree sees a narrower right-most tile.
    assert tile_hashes(0, 0, 5, reader) == b"".join(leaves[:5])
    for level, n, s in [(0, 4, size), (1, 0, 255), (2, 0, size), (0, 0, 0)]:
        with pytest.raises(UsageError):
            tile_hashes(level, n, s, reader)


def _checkpoint(size: int, leaves: list[bytes]) -> str:
    key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"tiles").digest())
    f = Frontier()
    for lh in leaves[:size]:
        f.append(lh)
    return sign_checkpoint(
        Checkpoint(origin=ORIGIN, size=size, root_hash=f.root()), NoteSigner(ORIGIN, key)
    )


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_export_layout_matches_spec_example_70000(tmp_path: Path) -> None:
    # c2sp.org/tlog-tiles: "a tree of size 70,000 will be represented by 273 full level 0
    # tiles, one partial level 0 tile of width 112, one full level 1 tile, one partial level 1
    # tile of width 17, and one partial level 2 tile of width 1."
    entries, leaves = _leaves(70_000)
    note = _checkpoint(70_000, leaves)
    n = export_tiles(
        tmp_path,
        size=70_000,
        checkpoint_note=note,
        reader=list_reader(leaves),
        entry_at=entries.__getitem__,
    )
    files = _files(tmp_path)
    assert n == len(files) == 274 + 274 + 2 + 1 + 1
    level0 = {f for f in files if f.startswith("tile/0/")}
    assert len(level0) == 274
    assert "tile/0/272" in files
    assert "tile/0/273.p/112" in files
    assert "tile/entries/273.p/112" in files
    assert {f for f in files if f.startswith("tile/1/")} == {"tile/1/000", "tile/1/001.p/17"}
    assert {f for f in files if f.startswith("tile/2/")} == {"tile/2/000.p/1"}
    assert (tmp_path / "checkpoint").read_text() == note
    assert (
        decode_entry_bundle((tmp_path / "tile/entries/273.p/112").read_bytes())
        == entries[273 * 256 :]
    )
    assert (tmp_path / "tile/2/000.p/1").read_bytes() == root_of(leaves[:65536])


def test_export_size_256_has_partial_level_1(tmp_path: Path) -> None:
    # c2sp.org/tlog-tiles: "a tree of size 256 will be represented by a full level 0 tile and
    # a partial level 1 tile of width 1."
    entries, leaves = _leaves(256)
    export_tiles(
        tmp_path,
        size=256,
        checkpoint_note=_checkpoint(256, leaves),
        reader=list_reader(leaves),
        entry_at=entries.__getitem__,
    )
    assert _files(tmp_path) == {"checkpoint", "tile/0/000", "tile/entries/000", "tile/1/000.p/1"}


def test_export_of_a_prefix_and_of_an_empty_tree(tmp_path: Path) -> None:
    entries, leaves = _leaves(600)
    reader = list_reader(leaves)
    export_tiles(
        tmp_path / "p",
        size=300,
        checkpoint_note=_checkpoint(300, leaves),
        reader=reader,
        entry_at=entries.__getitem__,
    )
    assert _files(tmp_path / "p") == {
        "checkpoint",
        "tile/0/000",
        "tile/0/001.p/44",
        "tile/entries/000",
        "tile/entries/001.p/44",
        "tile/1/000.p/1",
    }
    assert (
        export_tiles(
            tmp_path / "e",
            size=0,
            checkpoint_note=_checkpoint(0, leaves),
            reader=reader,
            entry_at=entries.__getitem__,
        )
        == 1
    )
    assert _files(tmp_path / "e") == {"checkpoint"}


def test_export_refuses_mismatched_checkpoint(tmp_path: Path) -> None:
    entries, leaves = _leaves(10)
    with pytest.raises(UsageError):
        export_tiles(
            tmp_path,
            size=10,
            checkpoint_note=_checkpoint(9, leaves),
            reader=list_reader(leaves),
            entry_at=entries.__getitem__,
        )


def test_export_refuses_an_entry_that_does_not_match_its_leaf_hash(tmp_path: Path) -> None:
    entries, leaves = _leaves(300)
    tampered = list(entries)
    tampered[290] = b"tampered"
    with pytest.raises(VerificationError) as exc:
        export_tiles(
            tmp_path,
            size=300,
            checkpoint_note=_checkpoint(300, leaves),
            reader=list_reader(leaves),
            entry_at=tampered.__getitem__,
        )
    assert exc.value.evidence["index"] == 290
    assert not (tmp_path / "checkpoint").exists()


def test_export_refuses_an_entry_too_large_for_a_bundle(tmp_path: Path) -> None:
    # DESIGN §6 allows records of up to 64 KiB (65,536 bytes); a bundle carries at most 65,535.
    entries = [b"small", bytes(MAX_ENTRY_BYTES + 1)]
    leaves = [leaf_hash(e) for e in entries]
    with pytest.raises(EntryTooLarge) as exc:
        export_tiles(
            tmp_path,
            size=2,
            checkpoint_note=_checkpoint(2, leaves),
            reader=list_reader(leaves),
            entry_at=entries.__getitem__,
        )
    assert exc.value.evidence["index"] == 1
    assert not (tmp_path / "checkpoint").exists()
