"""Quarantine and the kill switch through real gates on a real home: decisions, recording,
propagation across gates, node signatures, and replay (DESIGN I3, I6)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from interlock.audit import verify_ledger
from interlock.core.canonical import canonical_bytes
from interlock.errors import LedgerCorrupt, UsageError, VerificationError
from interlock.gate import Gate
from interlock.ledger.projection import Delta, delta_of
from interlock.ledger.protocols import Append
from interlock.pipeline import KILL_SWITCH_DETAIL
from interlock.records import verify_governance
from interlock.replay import replay
from interlock.trust import keys
from tests.conftest import RESEARCHER, SUMMARIZER, tool_request


def _node_public(gate: Gate) -> bytes:
    return keys.public_raw(gate.home.private_key("node"))


def _governance(gate: Gate, event: str) -> list[dict[str, Any]]:
    return [
        r
        for r in (json.loads(d) for _, _, d in gate.ledger.iter_entries())
        if r.get("event") == event
    ]


def _replay_ok(gate: Gate) -> None:
    verify_ledger(gate.ledger, gate.vkey)
    rep = replay(gate.ledger, gate.home.trusted_policy_keys(), node_public=_node_public(gate))
    assert rep.ok, rep.to_json()
    assert rep.mismatches == []
    assert rep.replayed == rep.matched > 0


def test_quarantine_denies_only_that_principal_until_released(home: Path, issue: Any) -> None:
    researcher, summarizer = issue(RESEARCHER), issue(SUMMARIZER)
    with Gate.open(home) as gate:
        assert gate.decide(tool_request(researcher)).allowed
        index = gate.quarantine(RESEARCHER, "leaked a key", on=True)
        d = gate.decide(tool_request(researcher))
        assert d.codes == ("PRINCIPAL_QUARANTINED",)
        assert d.ledger_index is not None  # the deny is recorded
        rec = json.loads(gate.ledger.entry(d.ledger_index))
        assert rec["reasons"][0]["code"] == "PRINCIPAL_QUARANTINED"
        # a quarantine covers the principal's sub-agents (delegation needs no key)
        sub = gate.decide(tool_request(summarizer, principal=SUMMARIZER))
        assert sub.codes == ("PRINCIPAL_QUARANTINED",)
        assert gate.ledger.quarantines() == [(RESEARCHER, True, index)]

        released = gate.quarantine(RESEARCHER, "key rotated", on=False)
        assert released > index
        assert gate.decide(tool_request(researcher)).allowed
        assert gate.ledger.quarantines() == [(RESEARCHER, False, released)]
        (q,) = _governance(gate, "principal.quarantined")
        (r,) = _governance(gate, "principal.released")
        assert (q["principal"], q["reason"]) == (RESEARCHER, "leaked a key")
        assert (r["principal"], r["reason"]) == (RESEARCHER, "key rotated")
        _replay_ok(gate)


def test_quarantine_reaches_another_gate_within_the_trust_refresh(home: Path, issue: Any) -> None:
    token = issue()
    with Gate.open(home) as a, Gate.open(home) as b:
        assert a.decide(tool_request(token)).allowed
        before = a.snapshot.id
        b.quarantine(RESEARCHER, "test", on=True)
        time.sleep(0.15)  # the other gate refreshes its trust state every 100 ms
        assert a.snapshot.id != before
        assert a.decide(tool_request(token)).codes == ("PRINCIPAL_QUARANTINED",)
        b.quarantine(RESEARCHER, "test", on=False)
        time.sleep(0.15)
        assert a.decide(tool_request(token)).allowed
        _replay_ok(a)


def test_kill_switch_denies_every_action_until_turned_off(home: Path, issue: Any) -> None:
    researcher, summarizer = issue(RESEARCHER), issue(SUMMARIZER)
    with Gate.open(home) as a, Gate.open(home) as b:
        assert a.decide(tool_request(researcher)).allowed
        a.kill_switch(True, "incident 42")
        assert a.snapshot.kill_switch
        for gate in (a, b):
            if gate is b:
                time.sleep(0.15)
            for tok, who in ((researcher, RESEARCHER), (summarizer, SUMMARIZER)):
                d = gate.decide(tool_request(tok, principal=who))
                assert d.codes == ("POLICY_FORBID",)
                assert d.reasons[0].policy == "kill-switch"
                assert d.reasons[0].detail == KILL_SWITCH_DETAIL
                assert d.ledger_index is not None
        # the kill switch wins over a quarantine: one stable code while it is on
        a.quarantine(RESEARCHER, "also", on=True)
        assert a.decide(tool_request(researcher)).codes == ("POLICY_FORBID",)
        a.kill_switch(False, "resolved")
        assert not a.snapshot.kill_switch
        assert a.decide(tool_request(researcher)).codes == ("PRINCIPAL_QUARANTINED",)
        sub = a.decide(tool_request(summarizer, principal=SUMMARIZER))
        assert sub.codes == ("PRINCIPAL_QUARANTINED",)  # a sub-agent of the quarantined one
        assert [r["reason"] for r in _governance(a, "kill_switch.on")] == ["incident 42"]
        assert [r["reason"] for r in _governance(a, "kill_switch.off")] == ["resolved"]
        _replay_ok(a)


def test_every_trust_change_gives_a_new_snapshot(home: Path) -> None:
    with Gate.open(home) as gate:
        seen = {gate.snapshot.id}
        versions = [gate.snapshot.trust_version]
        for step in (
            lambda: gate.quarantine(RESEARCHER, "a", on=True),
            lambda: gate.kill_switch(True, "b"),
            lambda: gate.kill_switch(False, "c"),
            lambda: gate.quarantine(RESEARCHER, "d", on=False),
        ):
            step()
            versions.append(gate.snapshot.trust_version)
        assert versions == [0, 1, 2, 3, 4]
        # released and switched off: the same state as at the start, but a new version
        seen.add(gate.snapshot.id)
        assert len(seen) == 2


def test_governance_records_carry_a_valid_node_signature(home: Path) -> None:
    with Gate.open(home) as gate:
        gate.quarantine(RESEARCHER, "x", on=True)
        gate.kill_switch(True, "y")
        pub = _node_public(gate)
        recs = _governance(gate, "principal.quarantined") + _governance(gate, "kill_switch.on")
        assert len(recs) == 2
        for rec in recs:
            assert rec["signer"] == pub.hex()
            body = {k: v for k, v in rec.items() if k != "sig"}
            keys.verify_signature(
                keys.public_from_raw(pub), bytes.fromhex(rec["sig"]), canonical_bytes(body)
            )
            verify_governance(rec, pub)
            forged = {**rec, "reason": "changed"}
            with pytest.raises(VerificationError):
                verify_governance(forged, pub)
            unsigned = {k: v for k, v in rec.items() if k not in ("sig", "signer")}
            with pytest.raises(VerificationError):
                verify_governance(unsigned, pub)


def test_a_badly_signed_governance_record_makes_replay_unverifiable(home: Path, issue: Any) -> None:
    token = issue()
    with Gate.open(home) as gate:
        gate.quarantine(RESEARCHER, "x", on=True)
        assert gate.decide(tool_request(token)).codes == ("PRINCIPAL_QUARANTINED",)
        _replay_ok(gate)
        # a writer holding the log key but not the node key appends a kill-switch record
        (good,) = _governance(gate, "principal.quarantined")
        bad = {**good, "event": "kill_switch.on", "id": "forged"}
        bad.pop("principal")
        bad["sig"] = "00" * 64
        # ... and sets the state table the way the forged record claims
        (res,) = gate.ledger.append(
            [Append(record=canonical_bytes(bad), state=Delta(kill_switch=True))]
        )
        # the log does not back that state: the projection ignores an unsigned record, so the
        # check names the row and the entry it should come from, and the gate stops allowing
        with pytest.raises(LedgerCorrupt) as info:
            gate.check_ledger()
        # the kill switch and the trust-event count both differ from what the log produces
        assert info.value.evidence["table"] == "settings"
        assert info.value.evidence["row"] in ("kill_switch", "trust_events")
        assert isinstance(info.value.evidence["index"], int)
        rep = replay(gate.ledger, gate.home.trusted_policy_keys(), node_public=_node_public(gate))
        assert not rep.ok
        # replay refuses the record too
        assert [u["index"] for u in rep.unverifiable] == [res.index]
        assert "signature" in rep.unverifiable[0]["why"]
        assert rep.mismatches == []
        # without the node key nothing about a quarantine can be verified
        rep = replay(gate.ledger, gate.home.trusted_policy_keys())
        assert not rep.ok


def test_quarantine_refuses_a_principal_that_is_not_a_spiffe_id(home: Path) -> None:
    with Gate.open(home) as gate:
        size = gate.ledger.size()
        with pytest.raises(UsageError):
            gate.quarantine("researcher", "x", on=True)
        assert gate.ledger.size() == size


def test_in_process_execution_is_revoked_by_quarantine_and_kill_switch(
    home: Path, issue: Any
) -> None:
    import interlock

    token = issue()
    with Gate.open(home) as gate:
        for trigger, code in (
            (lambda: gate.quarantine(RESEARCHER, "q", on=True), "PRINCIPAL_QUARANTINED"),
            (lambda: gate.kill_switch(True, "k"), "POLICY_FORBID"),
        ):
            with (  # noqa: PT012 - the run's body
                pytest.raises(interlock.Revoked) as info,
                gate.execution(tool_request(token), interval=0.05) as run,
            ):
                run.check()
                trigger()
                time.sleep(0.1)
                run.check()
            assert info.value.reason_code == code
            gate.quarantine(RESEARCHER, "undo", on=False)
            gate.kill_switch(False, "undo")
        _replay_ok(gate)


def test_revocations_are_node_signed_and_a_forged_one_is_unverifiable(
    home: Path, issue: Any
) -> None:
    from interlock.capability import revocation_ids

    token, other = issue(), issue()
    with Gate.open(home) as gate:
        gate.revoke(tuple(revocation_ids(token)), reason="leaked")
        (rec,) = _governance(gate, "capability.revoked")
        verify_governance(rec, _node_public(gate))
        assert gate.decide(tool_request(token)).codes == ("CAPABILITY_REVOKED",)
        _replay_ok(gate)
        # a writer with the log key but not the node key appends an unsigned revocation
        forged = {k: v for k, v in rec.items() if k not in ("sig", "signer")}
        forged["id"], forged["revocation_ids"] = "forged", list(revocation_ids(other))
        # appended the way a gate would: its state change comes from the record itself, and
        # an unsigned revocation changes nothing
        (res,) = gate.ledger.append(
            [
                Append(
                    record=canonical_bytes(forged),
                    state=delta_of(forged, node_public=_node_public(gate), root_public=None),
                )
            ]
        )
        time.sleep(0.15)
        assert gate.decide(tool_request(other)).allowed  # the forged revocation did nothing
        gate.check_ledger()  # and state and log agree
        rep = replay(gate.ledger, gate.home.trusted_policy_keys(), node_public=_node_public(gate))
        assert not rep.ok  # replay names the forged record
        assert res.index in [u["index"] for u in rep.unverifiable]
