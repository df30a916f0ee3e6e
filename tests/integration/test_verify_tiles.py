"""``ledger verify`` and persisted tiles: every full tile below the newest signed checkpoint
must be stored and match; past it a tile may be missing (a fleet's integrator persists tiles
with the checkpoint it signs, so nodes killed in between leave them unwritten — found by the
fault matrix's crash trials) but one that is stored must still match."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from interlock.audit import verify_ledger
from interlock.errors import VerificationError
from interlock.ledger.note import NoteSigner
from interlock.ledger.protocols import Append
from interlock.ledger.storage import open_store
from interlock.trust import keys


def _ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """300 entries whose only signed checkpoint is at size 1: tile 0 (entries 0-255) is
    stored but past the newest checkpoint."""
    from interlock.ledger.storage import sqlite_commit

    monkeypatch.setattr(sqlite_commit, "CHECKPOINT_EVERY_SECONDS", 3600.0)
    key = keys.create_key(tmp_path / "log.key")
    signer = NoteSigner("interlock.test/tiles", key)
    path = tmp_path / "ledger.db"
    store = open_store(path, signer=signer, durability="process", create=True)
    try:
        store.append([Append(record=b'{"n":0}')])
        store.append([Append(record=f'{{"n":{i}}}'.encode()) for i in range(1, 300)])
        assert [c.size for c in store.checkpoints()] == [1]
        assert store.stored_tile(0, 0) is not None
    finally:
        store.close()
    return path, signer.vkey


def _edit(path: Path, sql: str) -> None:
    conn = sqlite3.connect(path)
    for trigger in ("tiles_no_update", "tiles_no_delete"):
        conn.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    conn.execute(sql)
    conn.commit()
    conn.close()


def _verify(path: Path, vkey: str) -> None:
    store = open_store(path, signer=None, durability="process")
    try:
        verify_ledger(store, vkey)
    finally:
        store.close()


def test_a_missing_tile_past_the_signed_checkpoint_is_not_integrated_yet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, vkey = _ledger(tmp_path, monkeypatch)
    _verify(path, vkey)
    _edit(path, "DELETE FROM tiles WHERE level = 0 AND n = 0")
    _verify(path, vkey)  # passes: nothing signed vouches for that tile yet


def test_a_stored_tile_past_the_signed_checkpoint_must_still_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, vkey = _ledger(tmp_path, monkeypatch)
    _edit(path, "UPDATE tiles SET root = zeroblob(32) WHERE level = 0 AND n = 0")
    with pytest.raises(VerificationError, match="persisted tile"):
        _verify(path, vkey)


def test_a_missing_tile_below_the_signed_checkpoint_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, vkey = _ledger(tmp_path, monkeypatch)
    signer = NoteSigner("interlock.test/tiles", keys.load_private_key(tmp_path / "log.key"))
    store = open_store(path, signer=signer, durability="process")
    try:
        assert store.checkpoint() is not None  # now signed at 300: tile 0 is below it
    finally:
        store.close()
    _edit(path, "DELETE FROM tiles WHERE level = 0 AND n = 0")
    with pytest.raises(VerificationError, match="persisted tile"):
        _verify(path, vkey)
