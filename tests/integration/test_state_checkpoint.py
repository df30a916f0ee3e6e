"""Issue 9: start-up checks from a node-signed state checkpoint instead of the whole log.

A full check that passed writes a ``state.checked`` record; the next gate to open checks only
the entries after it and reads the state tables once. These tests build that situation on a
real home (a real gate, real SQLite), then edit the database as a governed process with the
home's file permissions could, and show that nothing the checkpoint skips can hide an edit:
an edit of the state is caught at start-up, an edit of an entry before the checkpoint by the
running gate's first full pass, which starts at once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from interlock import watchers
from interlock.capability import revocation_ids
from interlock.core.model import RecordType
from interlock.gate import Gate
from interlock.ledger import merkle
from tests.conftest import SUMMARIZER, edit_config, tool_request
from tests.integration.test_log_truth import cli, opens_corrupt, sql, turns_to_deny


@pytest.fixture
def checkpointed(home: Path, issue: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A home whose log has a state checkpoint in the middle: history before it, and after it
    records that change rows the checkpoint saw (an execution ends, a quarantine is lifted, the
    kill switch goes on and off) beside new rows."""
    monkeypatch.setattr(watchers, "STATE_CHECKPOINT_EVERY", 1)
    token, revoked = issue(), issue()
    with Gate.open(home) as gate:
        assert gate.startup_check == "full"
        gate.revoke(tuple(revocation_ids(revoked)))
        gate.quarantine(SUMMARIZER, "x", on=True)
        done = gate.decide(tool_request(token))
        assert done.allowed
        started, req = gate.admit(tool_request(token), start={"kind": "test"})
        assert started.allowed and req is not None
        running = req.id
        # this gate wrote a checkpoint when it opened; the one below covers the history above
    with Gate.open(home) as gate:
        assert gate.startup_check == "checkpoint", (gate.corrupt, gate.ledger_check_problem())
        gate.check_ledger(background=True)
        gate.write_state_checkpoint()
        vouched = gate.ledger.settings()["state_checked"]
        # ends after the checkpoint: a row the checkpoint saw changes
        gate.record_execution(RecordType.EXEC_END, running, {"exit_status": 0})
        gate.quarantine(SUMMARIZER, "x", on=False)
        gate.kill_switch(True, "drill")
        gate.kill_switch(False, "drill over")
        after = gate.decide(tool_request(token))
        assert after.allowed
    return {
        "token": token,
        "revoked": revoked,
        "checkpoint": int(vouched[0]),
        "ended": running,
        "after": after.request_id,
        "before": done.request_id,
    }


def test_start_up_checks_from_the_newest_state_checkpoint(
    home: Path, checkpointed: dict[str, Any]
) -> None:
    with Gate.open(home) as gate:
        assert gate.startup_check == "checkpoint"
        assert gate.corrupt is None
        assert gate.decide(tool_request(checkpointed["token"])).allowed
        assert gate.decide(tool_request(checkpointed["revoked"])).codes == ("CAPABILITY_REVOKED",)
        rec = json.loads(gate.ledger.entry(gate.ledger.settings()["state_checked"][1]))
        assert rec["event"] == "state.checked"
        assert rec["signer"] == gate._node_public.hex()
    r = cli(home, "ledger", "verify", "--json")
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize(
    "edit",
    [
        # a row the checkpoint saw, unchanged since: a revocation lifted
        "DELETE FROM revocations",
        # a row changed after the checkpoint: the ended execution brought back to life
        "UPDATE executions SET status = 'running' WHERE id = '{ended}'",
        # a row added after the checkpoint, rewritten
        "UPDATE executions SET principal = '{summarizer}' WHERE id = '{after}'",
        # a row that moves itself past the checkpoint, to be left out of its digest
        "UPDATE executions SET status_idx = 1000000 WHERE id = '{before}'",
        # a forged live parent
        "INSERT INTO executions SELECT 'forged', idx, leaf_hash, effect, 'running', 999999,"
        " parent, depth, principal FROM executions WHERE id = '{before}'",
        # the pointer to the checkpoint moved to an older entry
        "UPDATE state SET idx = 0 WHERE k = 'state_checked'",
    ],
    ids=["unrevoke", "revive", "rewrite-new-row", "hide-row", "forge-row", "move-pointer"],
)
def test_an_edited_state_is_caught_at_start_up(
    home: Path, checkpointed: dict[str, Any], edit: str
) -> None:
    sql(home, edit.format(summarizer=SUMMARIZER, **checkpointed))
    opens_corrupt(home, checkpointed["token"])


@pytest.mark.parametrize(
    "edit",
    ["UPDATE state_undo SET a = 'running'", "DELETE FROM state_undo"],
    ids=["undo-lies", "undo-deleted"],
)
def test_undo_rows_only_speed_the_check_up(
    home: Path, checkpointed: dict[str, Any], edit: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the store keeps to recover the checkpoint's state is not trusted: when it lies the
    checkpoint cannot vouch, and the gate checks the whole log instead (and finds it sound)."""
    # only because the checkpoint could not vouch is a new one written (not for the growth)
    monkeypatch.setattr(watchers, "STATE_CHECKPOINT_EVERY", 10**9)
    sql(home, edit)
    with Gate.open(home) as gate:
        assert gate.startup_check == "full"
        assert gate.corrupt is None
        assert gate.decide(tool_request(checkpointed["token"])).allowed
    # that full check vouched anew: the next start-up is quick again
    with Gate.open(home) as gate:
        assert gate.startup_check == "checkpoint"


def test_an_entry_before_the_checkpoint_edited_is_caught_by_the_first_pass(
    home: Path, checkpointed: dict[str, Any]
) -> None:
    """Start-up does not re-read entries before the checkpoint; the running gate's first full
    pass does, at once, and turns the gate to deny."""
    edit_config(home, "ledger_check_interval_ms = 5000", "ledger_check_interval_ms = 100")
    with Gate.open(home) as gate:
        # fill the first tile (256 entries), so that the edited entry's leaf hash is also kept
        # in a persisted tile, and vouch for all of it
        for _ in range(260):
            gate.decide(tool_request(checkpointed["token"]))
        gate.check_ledger(background=True)
        gate.write_state_checkpoint()
        size = gate.ledger.size()
        first = next(
            i
            for i, _h, data in gate.ledger.iter_entries(0, size)
            if json.loads(data).get("id") == checkpointed["before"]
        )
        assert first < checkpointed["checkpoint"]
    sql_entry_edit(home, first)
    with Gate.open(home) as gate:
        assert gate.startup_check == "checkpoint"  # the state is sound; the evidence is not
        turns_to_deny(gate, checkpointed["token"], within=10.0)


def sql_entry_edit(home: Path, idx: int) -> None:
    """Rewrite entry ``idx`` with its leaf hash recomputed (the tiles keep the old hash)."""
    import sqlite3

    conn = sqlite3.connect(home / "ledger.db")
    (data,) = conn.execute("SELECT data FROM entries WHERE idx = ?", (idx,)).fetchone()
    conn.close()
    rec = json.loads(data)
    rec["effect"] = "deny"
    new = json.dumps(rec, sort_keys=True, separators=(",", ":")).encode()
    sql(
        home,
        "DROP TRIGGER IF EXISTS entries_no_update",
        f"UPDATE entries SET data = x'{new.hex()}', leaf_hash = x'{merkle.leaf_hash(new).hex()}'"
        f" WHERE idx = {idx}",
    )
