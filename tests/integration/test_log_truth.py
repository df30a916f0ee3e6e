"""Issue 9: the state the gate reads is the projection of the log, and an edit of either is
caught — by `interlock ledger verify` (exit 1, naming the row or entry), by a gate that opens
(LEDGER_CORRUPT before any allow) and by a running gate within its check interval.

Every attack here edits the real SQLite file of a real home, as a governed process with the
home's file permissions could; nothing is mocked.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from interlock.capability import revocation_ids
from interlock.errors import LedgerCorrupt
from interlock.gate import Gate
from interlock.home import Home
from interlock.ledger import merkle
from interlock.policy.bundle import sign_bundle
from tests.conftest import RESEARCHER, SUMMARIZER, edit_config, tool_request

EXE = [sys.executable, "-m", "interlock.cli"]


def cli(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "INTERLOCK_HOME"}
    return subprocess.run(
        [*EXE, *args, "--home", str(home)],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def sql(home: Path, *statements: str) -> None:
    """Edit the ledger database directly, as an attacker with the home's permissions can."""
    conn = sqlite3.connect(home / "ledger.db", isolation_level=None)
    try:
        for s in statements:
            conn.execute(s)
    finally:
        conn.close()


def verify_fails(home: Path) -> dict[str, Any]:
    r = cli(home, "ledger", "verify", "--json")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    out: dict[str, Any] = json.loads(r.stdout)
    assert out["ok"] is False
    return out


def opens_corrupt(home: Path, token: str) -> None:
    """A gate opened on ``home`` denies LEDGER_CORRUPT and records nothing."""
    with Gate.open(home) as gate:
        size = gate.ledger.size()
        d = gate.decide(tool_request(token))
        assert d.codes == ("LEDGER_CORRUPT",)
        assert d.ledger_index is None
        assert gate.ledger.size() == size


@pytest.fixture
def watched(home: Path) -> Path:
    """A home whose running gates re-check the ledger every 100 ms."""
    edit_config(home, "ledger_check_interval_ms = 5000", "ledger_check_interval_ms = 100")
    return home


def turns_to_deny(gate: Gate, token: str, within: float = 5.0) -> None:
    """The running ``gate`` denies LEDGER_CORRUPT within ``within`` seconds."""
    deadline = time.monotonic() + within
    while gate.corrupt is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gate.corrupt is not None, "the running gate did not notice the edit"
    assert gate.decide(tool_request(token)).codes == ("LEDGER_CORRUPT",)


def test_a_clean_home_verifies_and_its_state_matches(home: Path, issue: Any) -> None:
    token = issue()
    with Gate.open(home) as gate:
        assert gate.decide(tool_request(token)).allowed
        gate.revoke(tuple(revocation_ids(issue())))
        gate.quarantine(SUMMARIZER, "x", on=True)
        gate.check_ledger()
    r = cli(home, "ledger", "verify", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["ok"] is True


@pytest.mark.parametrize(
    ("edit", "table", "row"),
    [
        ("DELETE FROM revocations", "revocations", None),
        ("UPDATE quarantines SET active = 0", "quarantines", RESEARCHER),
        ("UPDATE state SET v = 'false' WHERE k = 'kill_switch'", "settings", "kill_switch"),
    ],
    ids=["unrevoke", "lift-quarantine", "kill-switch-off"],
)
def test_editing_the_state_tables_is_caught_everywhere(
    watched: Path, issue: Any, edit: str, table: str, row: str | None
) -> None:
    token, revoked = issue(), issue()
    with Gate.open(watched) as gate:
        gate.revoke(tuple(revocation_ids(revoked)))
        if table == "quarantines":
            gate.quarantine(RESEARCHER, "x", on=True)
        if table == "settings":
            gate.kill_switch(True, "incident")
            gate.kill_switch(False, "over")
            gate.kill_switch(True, "again")
        assert not gate.decide(tool_request(revoked)).allowed
        sql(watched, edit)
        turns_to_deny(gate, token)
    out = verify_fails(watched)
    assert out["table"] == table
    if row is not None:
        assert out["row"] == row
    assert isinstance(out["index"], int)  # the entry the row should come from
    opens_corrupt(watched, token)
    # the revoked token never ran on the way
    assert not any(
        json.loads(d)["effect"] == "allow"
        for _i, _lh, d in _entries(watched)
        if json.loads(d).get("type") == "decision"
        and json.loads(d)["request"].get("capability_sha256") == _sha(revoked)
    )


def _entries(home: Path) -> Iterator[tuple[int, bytes, bytes]]:
    conn = sqlite3.connect(home / "ledger.db")
    try:
        yield from conn.execute("SELECT idx, leaf_hash, data FROM entries ORDER BY idx")
    finally:
        conn.close()


def _sha(token: str) -> str:
    import hashlib

    return hashlib.sha256(token.encode()).hexdigest()


def test_deleting_the_policy_version_row_cannot_roll_the_policy_back(
    home: Path, issue: Any
) -> None:
    h = Home.load(home)
    policy_key = h.private_key("policy")
    old = home.parent / "v2"
    import shutil

    shutil.copytree(home / "policy", old)
    sign_bundle(old, policy_key, version=2)
    sign_bundle(home / "policy", policy_key, version=3)
    with Gate.open(home) as gate:
        assert gate.snapshot.descriptor["policy_version"] == 3
    sql(home, "DELETE FROM state WHERE k IN ('policy_version', 'policy_digest')")
    out = verify_fails(home)
    assert out["table"] == "settings"
    assert out["row"] in ("policy_digest", "policy_version")
    opens_corrupt(home, issue())
    # put the state back from the log: the floor is the log's, and version 2 is refused
    r = cli(home, "ledger", "rebuild-state", "--json")
    assert r.returncode == 0, r.stderr
    shutil.rmtree(home / "policy")
    shutil.copytree(old, home / "policy")
    with Gate.open(home) as gate:
        d = gate.decide(tool_request(issue()))
        assert d.codes == ("POLICY_UNAVAILABLE",)
        assert "version" in d.reasons[0].detail


def test_reviving_a_terminated_parent_is_caught(home: Path, issue: Any) -> None:
    token = issue()
    with Gate.open(home) as gate:
        with gate.execution(tool_request(token)) as run:
            parent = run.id
        # the parent ended: its children are refused
        assert gate.decide(tool_request(token, parent=parent)).codes == ("LINEAGE_BROKEN",)
    sql(home, f"UPDATE executions SET status = 'running' WHERE id = '{parent}'")
    out = verify_fails(home)
    assert out["table"] == "executions"
    assert out["row"] == parent
    opens_corrupt(home, token)


def test_a_parent_of_another_principal_is_refused(home: Path, issue: Any) -> None:
    lead, sub = issue(RESEARCHER), issue(SUMMARIZER)
    with Gate.open(home) as gate:
        # the lead may not hang its actions under its sub-agent's execution ...
        with gate.execution(tool_request(sub, principal=SUMMARIZER)) as run:
            d = gate.decide(tool_request(lead, parent=run.id))
            assert d.codes == ("LINEAGE_BROKEN",)
            assert "another principal" in d.reasons[0].detail
        # ... while the sub-agent may act under the lead's (delegation goes down the path)
        with gate.execution(tool_request(lead)) as run:
            d = gate.decide(tool_request(sub, principal=SUMMARIZER, parent=run.id))
            assert d.allowed, d.reasons


def test_an_entry_edited_with_its_leaf_hash_recomputed_is_caught(watched: Path, issue: Any) -> None:
    token = issue(RESEARCHER, "tool.call:Tool::web_search")
    with Gate.open(watched) as gate:
        denied = gate.decide(tool_request(token, "send_email"))
        assert not denied.allowed
        for _ in range(3):
            assert gate.decide(tool_request(token)).allowed
        gate.ledger.checkpoint()
        idx = denied.ledger_index
        assert idx is not None
        rec = json.loads(gate.ledger.entry(idx))
        rec["effect"], rec["reasons"] = "allow", []
        data = json.dumps(rec, sort_keys=True, separators=(",", ":")).encode()
        sql(
            watched,
            "DROP TRIGGER entries_no_update",
            f"UPDATE entries SET data = x'{data.hex()}',"
            f" leaf_hash = x'{merkle.leaf_hash(data).hex()}' WHERE idx = {idx}",
        )
        turns_to_deny(gate, token)
    out = verify_fails(watched)
    assert out["index"] is not None
    opens_corrupt(watched, token)


def test_editing_trust_settings_in_the_config_denies_and_names_the_setting(
    home: Path, issue: Any
) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from interlock.trust import keys
    from interlock.trust.breakglass import make_break_glass

    token = issue()
    cfg = home / "interlock.toml"
    attacker = Ed25519PrivateKey.generate()
    text = cfg.read_text()
    section = text.index("[break_glass]")
    at = text.index("keys = []", section)
    cfg.write_text(text[:at] + f'keys = ["{keys.public_raw(attacker).hex()}"]' + text[at + 9 :])
    now = int(time.time())
    glass = make_break_glass(
        "tool.call:Tool::*", "mine now", attacker, issued_at=now - 1, expires_at=now + 600
    )
    with Gate.open(home) as gate:
        size = gate.ledger.size()
        d = gate.decide(tool_request(token, "delete_database", break_glass=glass))
        assert d.codes == ("ENVIRONMENT_UNTRUSTED",)
        assert "[break_glass] keys" in d.reasons[0].detail
        assert d.break_glass is None
        assert gate.ledger.size() == size + 1  # the deny is recorded


def test_turning_attestation_off_in_the_config_denies(home: Path, issue: Any) -> None:
    cfg = home / "interlock.toml"
    cfg.write_text(cfg.read_text().replace("enforce = true", "enforce = false"))
    with Gate.open(home) as gate:
        d = gate.decide(tool_request(issue()))
        assert d.codes == ("ENVIRONMENT_UNTRUSTED",)
        assert "[attestation] enforce" in d.reasons[0].detail
    r = cli(home, "trust", "show", "--json")
    assert r.returncode == 1
    assert any("[attestation] enforce" in p for p in json.loads(r.stdout)["problems"])


def test_trust_set_changes_a_setting_on_the_log_and_in_the_file(home: Path, issue: Any) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from interlock.trust import keys

    approver = keys.public_raw(Ed25519PrivateKey.generate()).hex()
    r = cli(home, "trust", "set", "approvals.keys", approver, "--json")
    assert r.returncode == 0, r.stderr
    assert approver in (home / "interlock.toml").read_text()
    r = cli(home, "trust", "show", "--json")
    assert r.returncode == 0, r.stdout
    assert json.loads(r.stdout)["log"]["approvals.keys"] == [approver]
    with Gate.open(home) as gate:
        assert bytes.fromhex(approver) in gate.snapshot.approvers
    # a record not signed by the root key changes nothing
    assert cli(home, "ledger", "verify").returncode == 0


@pytest.mark.parametrize("how", ["deleted", "emptied", "replaced"])
def test_a_missing_or_replaced_ledger_is_corrupt_and_never_recreated(
    home: Path, issue: Any, how: str
) -> None:
    token = issue()
    db = home / "ledger.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    (home / "checkpoint").unlink(missing_ok=True)
    if how == "emptied":
        os.close(os.open(db, os.O_WRONLY | os.O_CREAT, 0o600))
    elif how == "replaced":
        from interlock.ledger.note import NoteSigner
        from interlock.ledger.storage.sqlite import SqliteLedger

        h = Home.load(home)
        SqliteLedger(
            db, signer=NoteSigner(h.config.origin, h.private_key("log")), create=True
        ).close()
        db.chmod(0o600)
    r = cli(home, "decide", "--json", stdin=json.dumps(tool_request(token)))
    assert r.returncode == 1, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["effect"] == "deny"
    assert out["reasons"][0]["code"] == "LEDGER_CORRUPT"
    assert db.exists() == (how != "deleted")  # a gate never creates a ledger
    assert cli(home, "ledger", "verify").returncode == 1


def test_a_clock_set_back_denies_and_records_nothing(home: Path, issue: Any) -> None:
    from datetime import timedelta

    token = issue(RESEARCHER, "tool.call:Tool::*", ttl=timedelta(seconds=2))
    with Gate.open(home) as gate:
        assert gate.decide(tool_request(token)).allowed
    time.sleep(2.2)  # the token has expired on the log's clock
    hour = 3600 * 10**9
    with Gate.open(home, clock_ns=lambda: time.time_ns() - hour) as gate:
        size = gate.ledger.size()
        d = gate.decide(tool_request(token))
        assert d.codes == ("ENVIRONMENT_UNTRUSTED",)
        assert "behind the last timestamp on the log" in d.reasons[0].detail
        assert d.ledger_index is None and gate.ledger.size() == size


def test_timestamps_on_the_log_never_go_backwards(home: Path, issue: Any) -> None:
    from interlock.ledger.projection import ts_micros

    token = issue()
    with Gate.open(home) as gate:
        for _ in range(20):
            gate.decide(tool_request(token))
    stamps = [ts_micros(json.loads(d)["ts"]) for _i, _lh, d in _entries(home)]
    assert stamps == sorted(stamps)


def test_rebuild_state_restores_a_deleted_state_and_verify_passes(home: Path, issue: Any) -> None:
    with Gate.open(home) as gate:
        gate.revoke(tuple(revocation_ids(issue())))
        gate.quarantine(RESEARCHER, "x", on=True)
        before = gate.ledger.dump_state()
    sql(home, "DELETE FROM revocations", "DELETE FROM quarantines", "DELETE FROM executions")
    assert cli(home, "ledger", "verify").returncode == 1
    r = cli(home, "ledger", "rebuild-state")
    assert r.returncode == 0, r.stderr
    assert cli(home, "ledger", "verify").returncode == 0
    with Gate.open(home) as gate:
        assert gate.ledger.dump_state() == before
        gate.check_ledger()


def test_check_ledger_names_the_row_and_entry(home: Path, issue: Any) -> None:
    with Gate.open(home) as gate:
        gate.revoke(tuple(revocation_ids(issue())), reason="leaked")
        sql(home, "UPDATE revocations SET idx = idx + 1")
        with pytest.raises(LedgerCorrupt) as info:
            gate.check_ledger()
    ev = info.value.evidence
    assert ev["table"] == "revocations"
    assert isinstance(ev["index"], int)


def test_a_ledger_of_the_older_schema_is_upgraded_by_rebuild_state(home: Path, issue: Any) -> None:
    """A home made before the state was a projection: schema 1, no ``state`` table. Opening
    it denies and says what to run; ``rebuild-state`` brings it up to date from the log."""
    token = issue()
    sql(home, "UPDATE meta SET v = '1' WHERE k = 'schema'", "DROP TABLE state")
    r = cli(home, "decide", "--json", stdin=json.dumps(tool_request(token)))
    assert r.returncode == 1, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["reasons"][0]["code"] == "LEDGER_UNAVAILABLE"
    assert "rebuild-state" in out["reasons"][0]["detail"]
    r = cli(home, "ledger", "rebuild-state", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert cli(home, "ledger", "verify").returncode == 0
    r = cli(home, "decide", "--json", stdin=json.dumps(tool_request(token)))
    assert r.returncode == 0, r.stdout + r.stderr
