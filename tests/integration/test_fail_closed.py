"""Fail-closed regressions from review: each injects one failure mode and asserts the specific
deny, that it is recorded where it can be, and that nothing was allowed."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from interlock.capability import attenuate
from interlock.errors import CapabilityError, VerificationError
from interlock.gate import Gate
from interlock.trust import keys
from tests.conftest import RESEARCHER, edit_config, tool_request


def _recorded(gate: Gate, d: Any) -> dict[str, Any]:
    assert d.ledger_index is not None, f"not recorded: {d.reasons}"
    data = gate.ledger.entry(d.ledger_index)
    assert hashlib.sha256(data).hexdigest() == d.decision_hash
    return json.loads(data)


@pytest.mark.parametrize(
    "raw",
    [
        # a lone surrogate, escaped in JSON text
        b'{"principal": "spiffe://acme.test/agent/researcher", "action": "tool.call",'
        b' "resource": {"type": "Tool", "id": "\\ud800"}}',
        # an integer of 5,000 digits: Python's int parser refuses it with a ValueError
        b'{"principal": "spiffe://acme.test/agent/researcher", "action": "tool.call",'
        b' "resource": {"type": "Tool", "id": "x"}, "args": {"n": ' + b"9" * 5000 + b"}}",
    ],
)
def test_hostile_bytes_are_recorded_malformed(home: Path, raw: bytes) -> None:
    with Gate.open(home) as gate:
        d = gate.decide(raw)
        assert d.codes == ("MALFORMED_REQUEST",)
        assert _recorded(gate, d)["stage"] == "intake"


class Sneaky(str):
    def __eq__(self, other: object) -> bool:  # equal to everything
        return True

    def __ne__(self, other: object) -> bool:
        return False

    __hash__ = str.__hash__


def test_python_inputs_are_copied_to_plain_json(home: Path, issue: Any) -> None:
    token = issue()
    with Gate.open(home) as gate:
        d = gate.decide({**tool_request(token), 1: "x"})
        assert d.codes == ("MALFORMED_REQUEST",)
        _recorded(gate, d)
        # a str subclass claiming to equal every principal must not pass the identity check
        other = issue("spiffe://acme.test/agent/other")
        req = tool_request(other)
        req["principal"] = Sneaky(RESEARCHER)
        d = gate.decide(req)
        assert d.codes == ("IDENTITY_UNVERIFIED",)
        _recorded(gate, d)


def test_dot_segments_cannot_escape_the_holders_path(home: Path, issue: Any) -> None:
    token = issue()
    with Gate.open(home) as gate:
        root = bytes.fromhex(gate.snapshot.descriptor["capability_root"])
        with pytest.raises(CapabilityError, match="SPIFFE"):
            attenuate(token, root_public_raw=root, delegate_to=f"{RESEARCHER}/../../admin")
        d = gate.decide(tool_request(token, principal=f"{RESEARCHER}/../admin"))
        assert d.codes == ("MALFORMED_REQUEST",)


def test_delegation_sideways_is_refused(home: Path, issue: Any) -> None:
    token = issue()
    with Gate.open(home) as gate:
        root = bytes.fromhex(gate.snapshot.descriptor["capability_root"])
        stolen = attenuate(
            token, root_public_raw=root, delegate_to="spiffe://acme.test/agent/mallory"
        )
        d = gate.decide(tool_request(stolen, principal="spiffe://acme.test/agent/mallory"))
        assert d.codes == ("IDENTITY_UNVERIFIED",)


def test_a_stale_trust_refresh_cannot_undo_a_revocation(home: Path, issue: Any) -> None:
    from interlock.capability import revocation_ids
    from interlock.ledger.storage.sqlite import SqliteLedger

    token = issue()
    with Gate.open(home) as gate:
        stale = gate.ledger.trust_state()  # what a slow refresh read before the revocation
        gate.revoke(revocation_ids(token))
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(SqliteLedger, "trust_state", lambda self: stale)
            gate._rebuild_snapshot(force_trust=True)
        assert gate.decide(tool_request(token)).codes == ("CAPABILITY_REVOKED",)


def test_authorizer_without_verdict_is_recorded_outside_replay(
    home: Path, issue: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from interlock.capability import _biscuit
    from interlock.replay import replay

    token = issue()
    with Gate.open(home) as gate:
        monkeypatch.setattr(
            _biscuit, "authorize", lambda *a, **k: _biscuit.AuthzOutcome(ok=False, verdict=False)
        )
        d = gate.decide(tool_request(token, "never_seen_tool"))
        monkeypatch.undo()
        assert d.codes == ("CAPABILITY_INSUFFICIENT",)
        assert _recorded(gate, d)["stage"] == "gate"
        assert replay(
            gate.ledger,
            gate.home.trusted_policy_keys(),
            node_public=keys.public_raw(gate.home.private_key("node")),
        ).ok


def test_a_rust_panic_in_cedar_denies(
    home: Path, issue: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cedarpy

    class PanicException(BaseException):  # what pyo3 raises for a Rust panic
        pass

    def panic(*a: Any, **k: Any) -> Any:
        raise PanicException("thread panicked")

    token = issue()
    with Gate.open(home) as gate:
        monkeypatch.setattr(cedarpy, "is_authorized", panic)
        d = gate.decide(tool_request(token))
        assert d.codes == ("POLICY_ERROR",)
        _recorded(gate, d)


def test_verify_refuses_a_ledger_whose_checkpoints_were_removed(home: Path, issue: Any) -> None:
    from interlock.audit import open_for_audit, verify_ledger

    with Gate.open(home) as gate:
        assert gate.decide(tool_request(issue())).allowed
    conn = sqlite3.connect(home / "ledger.db")
    conn.execute("DROP TRIGGER checkpoints_no_delete")
    conn.execute("DELETE FROM checkpoints")
    conn.commit()
    conn.close()
    with open_for_audit(home) as view, pytest.raises(VerificationError, match="no signed"):
        verify_ledger(view.ledger, view.vkey)
    with Gate.open(home) as gate:
        assert gate.corrupt is not None
        assert gate.decide(tool_request(issue())).codes == ("LEDGER_CORRUPT",)


def test_an_anchor_checkpoint_catches_a_rewritten_tail(home: Path, issue: Any) -> None:
    from interlock.audit import open_for_audit, verify_ledger
    from interlock.ledger import merkle

    token = issue()
    with Gate.open(home) as gate:
        gate.decide(tool_request(token))
        first = gate.ledger.checkpoint()
        d = gate.decide(tool_request(token, "delete_database"))
        anchor = gate.ledger.checkpoint()  # an auditor keeps this one elsewhere
    assert first is not None and anchor is not None and d.ledger_index is not None
    assert first.size <= d.ledger_index < anchor.size
    # the attacker rewrites the deny and deletes every checkpoint that covered it
    conn = sqlite3.connect(home / "ledger.db")
    conn.execute("DROP TRIGGER checkpoints_no_delete")
    conn.execute("DROP TRIGGER entries_no_update")
    fake = b'{"effect":"allow","forged":true}'
    conn.execute(
        "UPDATE entries SET data = ?, leaf_hash = ? WHERE idx = ?",
        (fake, merkle.leaf_hash(fake), d.ledger_index),
    )
    conn.execute("DELETE FROM checkpoints WHERE size > ?", (first.size,))
    conn.commit()
    conn.close()
    with open_for_audit(home) as view:
        # alone, the database can only show the tail is unsigned...
        rep = verify_ledger(view.ledger, view.vkey)
        assert rep.covered == first.size < rep.size
        # ...the auditor's checkpoint proves it was rewritten
        with pytest.raises(VerificationError):
            verify_ledger(view.ledger, view.vkey, anchors=[anchor.note])
    with Gate.open(home) as gate:  # and the node itself refuses to go on allowing
        assert gate.corrupt is not None


def test_verify_catches_a_tampered_internal_tile_node(
    tmp_path: Path, signer: Any, verifier: Any
) -> None:
    from interlock.audit import verify_ledger
    from interlock.ledger.storage.sqlite import Append, SqliteLedger

    led = SqliteLedger(tmp_path / "l.db", signer=signer, create=True)
    led.append([Append(record=f'{{"i":{i}}}'.encode()) for i in range(300)])
    led.checkpoint()
    verify_ledger(led, signer.vkey)
    led.close()
    # persisted internal nodes serve proofs without hashing: a wrong one must not go unnoticed
    conn = sqlite3.connect(tmp_path / "l.db")
    conn.execute("DROP TRIGGER tiles_no_update")
    conn.execute("UPDATE tiles SET nodes = zeroblob(length(nodes)) WHERE level = 0 AND n = 0")
    conn.commit()
    conn.close()
    led = SqliteLedger(tmp_path / "l.db")
    try:
        with pytest.raises(VerificationError, match="tile") as info:
            verify_ledger(led, signer.vkey)
        assert info.value.evidence["index"] == 0
    finally:
        led.close()


def test_a_running_gate_notices_corruption_and_stops_allowing(home: Path, issue: Any) -> None:
    edit_config(home, "ledger_check_interval_ms = 5000", "ledger_check_interval_ms = 100")
    import time

    token = issue()
    with Gate.open(home) as gate:
        for _ in range(3):
            assert gate.decide(tool_request(token)).allowed
        gate.ledger.checkpoint()
        time.sleep(0.3)  # clean ledger: the watch finds nothing while decisions continue
        assert gate.corrupt is None
        assert gate.decide(tool_request(token)).allowed
        # someone with write access to the database rewrites a committed leaf hash
        conn = sqlite3.connect(home / "ledger.db")
        conn.execute("DROP TRIGGER entries_no_update")
        conn.execute("UPDATE entries SET leaf_hash = zeroblob(32) WHERE idx = 1")
        conn.commit()
        conn.close()
        deadline = time.monotonic() + 5
        while gate.corrupt is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gate.corrupt is not None
        d = gate.decide(tool_request(token))
        assert d.codes == ("LEDGER_CORRUPT",)
        assert d.ledger_index is None


def test_the_ledger_watch_raises_no_false_alarm_under_concurrent_appends(
    home: Path, issue: Any
) -> None:
    import threading
    import time

    edit_config(home, "ledger_check_interval_ms = 5000", "ledger_check_interval_ms = 20")
    token = issue()
    with Gate.open(home) as gate:
        stop = time.monotonic() + 1.5

        def worker() -> None:
            while time.monotonic() < stop:
                gate.decide(tool_request(token))

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert gate.corrupt is None
        assert gate.decide(tool_request(token)).allowed
