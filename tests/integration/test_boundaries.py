"""Trust boundaries (issue 3 §3) through real gates: each on_violation mode, its node-signed
governance record, the effect on running executions, and replay."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

import interlock
from interlock.gate import Gate
from interlock.records import verify_governance
from interlock.replay import replay
from interlock.trust import keys
from tests.conftest import RESEARCHER, SUMMARIZER, tool_request, trust_config


def _boundary(home: Path, on_violation: str, extra: str = "") -> None:
    cfg = home / "interlock.toml"
    cfg.write_text(
        cfg.read_text() + "\n[[boundaries]]\n"
        'name = "research"\n'
        f'principals = ["{RESEARCHER}"]\n'
        'actions = ["tool.call", "shell.exec"]\n'
        'resources = ["Tool::*", "Host::localhost"]\n'
        f'on_violation = "{on_violation}"\n' + extra
    )
    trust_config(home)


def _shell(token: str, host: str = "localhost", principal: str = RESEARCHER) -> dict[str, Any]:
    return {
        "principal": principal,
        "action": "shell.exec",
        "resource": {"type": "Host", "id": host},
        "args": {"argv": ["true"]},
        "capability": token,
    }


def _events(gate: Gate, event: str) -> list[dict[str, Any]]:
    out = []
    for _, _, data in gate.ledger.iter_entries():
        rec = json.loads(data)
        if rec.get("event") == event:
            verify_governance(rec, keys.public_raw(gate.home.private_key("node")))
            out.append(rec)
    return out


def _replay_ok(gate: Gate) -> None:
    rep = replay(
        gate.ledger,
        gate.home.trusted_policy_keys(),
        node_public=keys.public_raw(gate.home.private_key("node")),
    )
    assert rep.ok and rep.mismatches == [] and rep.unverifiable == [], rep.to_json()


def test_restrict_limits_the_principal_until_released(home: Path, issue: Any) -> None:
    _boundary(home, "restrict", 'restricted_actions = ["tool.call"]\n')
    tok = issue(RESEARCHER, "tool.call:Tool::*", "shell.exec:Host::*")
    with Gate.open(home) as gate:
        assert gate.decide(_shell(tok)).allowed  # inside the boundary
        d = gate.decide(_shell(tok, host="db-1"))  # outside its resources
        assert d.codes == ("BOUNDARY_VIOLATION",)
        assert d.reasons[0].policy == "boundary:research"
        (rec,) = _events(gate, "boundary.restricted")
        assert rec["principal"] == RESEARCHER and rec["request"] == d.request_id
        assert rec["restricted_actions"] == ["tool.call"]
        # now limited to tool.call, even inside the boundary
        again = gate.decide(_shell(tok))
        assert again.codes == ("BOUNDARY_VIOLATION",)
        assert "restricted" in again.reasons[0].detail
        assert len(_events(gate, "boundary.restricted")) == 1  # not restricted twice
        assert gate.decide(tool_request(tok)).allowed
        gate.release_restriction(RESEARCHER, "research", "reviewed")
        assert gate.decide(_shell(tok)).allowed
        _replay_ok(gate)


def test_isolate_quarantines_and_terminates_running_executions(home: Path, issue: Any) -> None:
    _boundary(home, "isolate")
    tok = issue(RESEARCHER, "tool.call:Tool::*", "shell.exec:Host::*")
    with Gate.open(home) as gate:
        with (  # noqa: PT012 - the run's body
            pytest.raises(interlock.Revoked) as info,
            gate.execution(tool_request(tok), interval=0.05) as run,
        ):
            run.check()
            assert gate.decide(_shell(tok, host="db-1")).codes == ("BOUNDARY_VIOLATION",)
            time.sleep(0.2)
            run.check()
        assert info.value.reason_code == "PRINCIPAL_QUARANTINED"
        (q,) = _events(gate, "principal.quarantined")
        assert q["boundary"] == "research" and q["principal"] == RESEARCHER
        assert gate.decide(tool_request(tok)).codes == ("PRINCIPAL_QUARANTINED",)
        _replay_ok(gate)


def test_terminate_denies_and_records_but_leaves_conforming_runs(home: Path, issue: Any) -> None:
    _boundary(home, "terminate")
    tok = issue(RESEARCHER, "tool.call:Tool::*", "shell.exec:Host::*")
    other = issue(SUMMARIZER, "tool.call:Tool::*")
    with Gate.open(home) as gate:
        with gate.execution(tool_request(tok), interval=0.05) as run:
            d = gate.decide(_shell(tok, host="db-1"))
            assert d.codes == ("BOUNDARY_VIOLATION",)
            time.sleep(0.2)
            run.check()  # the conforming run goes on
        (v,) = _events(gate, "boundary.violated")
        assert v["request"] == d.request_id and v["on_violation"] == "terminate"
        assert gate.decide(tool_request(tok)).allowed  # no lasting sanction
        # the summarizer is a sub-agent of the researcher: the boundary covers it too
        assert gate.decide(tool_request(other, principal=SUMMARIZER, tool="web_search")).allowed
        outside = _shell(issue(SUMMARIZER, "shell.exec:Host::*"), "db-1", principal=SUMMARIZER)
        assert gate.decide(outside).codes == ("BOUNDARY_VIOLATION",)
        _replay_ok(gate)


def test_a_boundary_that_requires_attestation_refuses_an_unattested_node(
    home: Path, issue: Any
) -> None:
    _boundary(home, "terminate", "attested = true\n")
    # trust settings change on the ledger (`interlock trust set`): not enforcing, and a trusted
    # list that does not hold this platform
    with Gate.open(home) as gate:
        gate.record_trust({"attestation.enforce": False, "attestation.trusted": ["0" * 64]})
    tok = issue()
    with Gate.open(home) as gate:
        d = gate.decide(tool_request(tok))
        assert d.codes == ("BOUNDARY_VIOLATION",)
        assert "attested" in d.reasons[0].detail


def test_sub_agents_of_a_restricted_principal_are_restricted_too(home: Path, issue: Any) -> None:
    """Delegation needs no key: a restricted holder must not escape by re-delegating."""
    _boundary(home, "restrict", 'restricted_actions = ["tool.call"]\n')
    tok = issue(RESEARCHER, "tool.call:Tool::*", "shell.exec:Host::*")
    sub = issue(SUMMARIZER, "tool.call:Tool::*", "shell.exec:Host::*")
    with Gate.open(home) as gate:
        assert gate.decide(_shell(sub, principal=SUMMARIZER)).allowed
        assert gate.decide(_shell(tok, host="db-1")).codes == ("BOUNDARY_VIOLATION",)
        d = gate.decide(_shell(sub, principal=SUMMARIZER))
        assert d.codes == ("BOUNDARY_VIOLATION",) and "restricted" in d.reasons[0].detail
        _replay_ok(gate)


def test_a_restriction_terminates_running_executions_outside_it(home: Path, issue: Any) -> None:
    _boundary(home, "restrict", 'restricted_actions = ["tool.call"]\n')
    tok = issue(RESEARCHER, "tool.call:Tool::*", "shell.exec:Host::*")
    with Gate.open(home) as gate:
        with (  # noqa: PT012 - the run's body
            pytest.raises(interlock.Revoked) as info,
            gate.execution(_shell(tok), interval=0.05) as run,
        ):
            run.check()
            assert gate.decide(_shell(tok, host="db-1")).codes == ("BOUNDARY_VIOLATION",)
            time.sleep(0.2)
            run.check()
        assert info.value.reason_code == "BOUNDARY_VIOLATION"
        # a tool call is inside the restricted set: it still runs
        with gate.execution(tool_request(tok), interval=0.05) as run:
            time.sleep(0.1)
            run.check()


def test_a_quarantined_holder_cannot_act_through_a_sub_agent(home: Path, issue: Any) -> None:
    from interlock.capability import attenuate

    tok = issue(RESEARCHER)
    with Gate.open(home) as gate:
        root = bytes.fromhex(str(gate.snapshot.descriptor["capability_root"]))
        # the holder delegates to itself/x without any key
        delegated = attenuate(tok, root_public_raw=root, delegate_to=SUMMARIZER)
        assert gate.decide(tool_request(delegated, principal=SUMMARIZER)).allowed
        gate.quarantine(RESEARCHER, "compromised", on=True)
        for t, p in ((tok, RESEARCHER), (delegated, SUMMARIZER)):
            assert gate.decide(tool_request(t, principal=p)).codes == ("PRINCIPAL_QUARANTINED",)
        _replay_ok(gate)
