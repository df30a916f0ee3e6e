"""The gate end to end on a real home: real keys, real Biscuit tokens, real Cedar, real SQLite.

Every denial asserts its *specific* reason code and that the decision is on the ledger (or,
for storage faults, that nothing was allowed).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from interlock.core.model import ReasonCode
from interlock.gate import Gate
from interlock.home import Home
from interlock.policy.bundle import sign_bundle
from interlock.trust import keys
from tests.conftest import RESEARCHER, SUMMARIZER, edit_config, tool_request


def _record(gate: Gate, index: int | None) -> dict[str, Any]:
    assert index is not None, "decision was not recorded"
    return json.loads(gate.ledger.entry(index))


def _assert_recorded(gate: Gate, d: Any) -> dict[str, Any]:
    data = gate.ledger.entry(d.ledger_index)
    assert hashlib.sha256(data).hexdigest() == d.decision_hash
    rec = json.loads(data)
    assert rec["id"] == d.request_id
    assert rec["effect"] == d.effect.value
    return rec


def test_allowed_decision_is_committed_before_it_is_returned(home: Path, issue: Any) -> None:
    with Gate.open(home) as gate:
        d = gate.decide(tool_request(issue()))
        assert d.allowed, d.reasons
        rec = _assert_recorded(gate, d)
        assert rec["type"] == "decision"
        assert rec["stage"] == "pipeline"
        assert rec["request"]["args_sha256"] == hashlib.sha256(b'{"q":"x"}').hexdigest()
        assert "capability" not in json.dumps(rec["request"]).replace("capability_sha256", "")


@pytest.mark.parametrize(
    ("tool", "code", "policy"),
    [
        ("delete_database", ReasonCode.POLICY_FORBID, "no-delete-database"),
    ],
)
def test_policy_forbid_names_the_policy(
    home: Path, issue: Any, tool: str, code: ReasonCode, policy: str
) -> None:
    with Gate.open(home) as gate:
        d = gate.decide(tool_request(issue(), tool))
        assert not d.allowed
        assert d.reasons[0].code is code
        assert d.reasons[0].policy == policy
        _assert_recorded(gate, d)


def test_no_permit(home: Path, issue: Any) -> None:
    token = issue(RESEARCHER, "http.request:Host::*")
    req = tool_request(token, action="http.request", resource={"type": "Host", "id": "x.test"})
    with Gate.open(home) as gate:
        d = gate.decide(req)
        assert d.codes == ("POLICY_NO_PERMIT",)
        _assert_recorded(gate, d)


def test_capability_failures_have_their_own_codes(home: Path, issue: Any) -> None:
    with Gate.open(home) as gate:
        cases = {
            "IDENTITY_UNVERIFIED": tool_request(None),
            "CAPABILITY_INVALID": tool_request("AAAAAAAA"),
            "CAPABILITY_EXPIRED": tool_request(issue(ttl=timedelta(seconds=-5))),
            "CAPABILITY_INSUFFICIENT": tool_request(issue(RESEARCHER, "tool.call:Tool::summarize")),
        }
        for code, req in cases.items():
            d = gate.decide(req)
            assert d.codes == (code,), (code, d.reasons)
            _assert_recorded(gate, d)
        # a token presented by another principal
        d = gate.decide(tool_request(issue(), principal="spiffe://acme.test/agent/mallory"))
        assert d.codes == ("IDENTITY_UNVERIFIED",)


def test_token_from_another_root_key_is_invalid(home: Path, tmp_path: Path) -> None:
    from interlock.bootstrap import init_home
    from tests.conftest import tool_request as tr

    other = init_home(tmp_path / "other", origin="interlock.test/other")
    from datetime import UTC, datetime

    from interlock.capability import CapabilityIssuer, Right
    from interlock.trust import keys

    foreign = CapabilityIssuer(keys.private_raw(other.private_key("biscuit-root"))).issue(
        principal=RESEARCHER,
        rights=[Right.parse("*:*")],
        expires_at=datetime.now(UTC) + timedelta(hours=1),
    )
    with Gate.open(home) as gate:
        assert gate.decide(tr(foreign)).codes == ("CAPABILITY_INVALID",)


def test_revocation_takes_effect_at_once_and_across_gates(home: Path, issue: Any) -> None:
    from interlock.capability import revocation_ids

    token = issue()
    with Gate.open(home) as a, Gate.open(home) as b:
        d = a.decide(tool_request(token))
        assert d.allowed, d.reasons
        d = b.decide(tool_request(token))
        assert d.allowed, d.reasons
        b.revoke(revocation_ids(token), reason="test")
        assert b.decide(tool_request(token)).codes == ("CAPABILITY_REVOKED",)
        time.sleep(0.15)  # the other gate refreshes its trust state every 100 ms
        d = a.decide(tool_request(token))
        assert d.codes == ("CAPABILITY_REVOKED",), d.reasons
        gov = [json.loads(d) for _, _, d in a.ledger.iter_entries() if b'"capability.revoked"' in d]
        assert gov
        assert gov[0]["revocation_ids"] == list(revocation_ids(token))


def test_malformed_request_is_recorded_by_digest(home: Path) -> None:
    raw = b'{"principal": "root", "sudo": true}'
    with Gate.open(home) as gate:
        d = gate.decide(raw)
        assert d.codes == ("MALFORMED_REQUEST",)
        rec = _assert_recorded(gate, d)
        assert rec["stage"] == "intake"
        assert rec["request"] == {
            "raw_sha256": hashlib.sha256(raw).hexdigest(),
            "raw_size": len(raw),
        }


def test_lineage(home: Path, issue: Any) -> None:
    token = issue()
    with Gate.open(home) as gate:
        parent = gate.decide(tool_request(token))
        denied = gate.decide(tool_request(token, "delete_database"))
        child = gate.decide(tool_request(token, parent=parent.request_id))
        assert child.allowed
        rec = _record(gate, child.ledger_index)
        assert rec["parent"] == parent.request_id
        assert rec["parent_leaf"] == gate.ledger.leaf_hash_at(parent.ledger_index).hex()
        assert rec["lineage"] == {"status": "allowed", "depth": 1}
        d = gate.decide(tool_request(token, parent=denied.request_id))
        assert d.codes == ("LINEAGE_BROKEN",)
        assert "denied" in d.reasons[0].detail
        d = gate.decide(tool_request(token, parent="0190b3f6-7a1c-7000-8000-00000000dead"))
        assert d.codes == ("LINEAGE_BROKEN",)
        assert "unknown" in d.reasons[0].detail


def test_lineage_depth_limit(home: Path, issue: Any) -> None:
    edit_config(home, "max_lineage_depth = 16", "max_lineage_depth = 2")
    token = issue()
    with Gate.open(home) as gate:
        d = gate.decide(tool_request(token))
        for _ in range(2):
            d = gate.decide(tool_request(token, parent=d.request_id))
            assert d.allowed
        d = gate.decide(tool_request(token, parent=d.request_id))
        assert d.codes == ("LINEAGE_BROKEN",)
        assert "depth" in d.reasons[0].detail


def test_sub_agent_with_attenuated_delegated_token(home: Path, issue: Any) -> None:
    from interlock.capability import Right, attenuate

    token = issue()
    with Gate.open(home) as gate:
        parent = gate.decide(tool_request(token))
        sub = attenuate(
            token,
            rights=[Right.parse("tool.call:Tool::summarize")],
            parent=parent.request_id,
            delegate_to=SUMMARIZER,
            root_public_raw=bytes.fromhex(gate.snapshot.descriptor["capability_root"]),
        )
        ok = gate.decide(
            tool_request(sub, "summarize", principal=SUMMARIZER, parent=parent.request_id)
        )
        assert ok.allowed, ok.reasons
        out = gate.decide(
            tool_request(sub, "web_search", principal=SUMMARIZER, parent=parent.request_id)
        )
        assert out.codes == ("CAPABILITY_INSUFFICIENT",)
        unbound = gate.decide(tool_request(sub, "summarize", principal=SUMMARIZER))
        assert unbound.codes == ("CAPABILITY_INSUFFICIENT",)


# -- policy bundle integrity -------------------------------------------------------------------


def test_tampered_policy_denies_everything(home: Path, issue: Any) -> None:
    token = issue()
    pol = home / "policy" / "policies.cedar"
    pol.write_text(pol.read_text().replace("forbid", "permit"))
    with Gate.open(home) as gate:
        d = gate.decide(tool_request(token))
        assert d.codes == ("POLICY_UNAVAILABLE",)
        _assert_recorded(gate, d)


def test_unsigned_extra_policy_file_denies(home: Path, issue: Any) -> None:
    (home / "policy" / "backdoor.cedar").write_text("permit(principal, action, resource);")
    with Gate.open(home) as gate:
        assert gate.decide(tool_request(issue())).codes == ("POLICY_UNAVAILABLE",)


def test_policy_versions_never_go_backwards(home: Path, issue: Any, tmp_path: Path) -> None:
    import shutil

    h = Home.load(home)
    token = issue()
    v1 = tmp_path / "v1"
    shutil.copytree(home / "policy", v1)  # the validly signed version 1, kept by an attacker
    pol = home / "policy" / "policies.cedar"
    original = pol.read_text()
    pol.write_text(original + "\n// v2\n")
    sign_bundle(home / "policy", h.private_key("policy"), version=2)
    with Gate.open(home) as gate:
        assert gate.decide(tool_request(token)).allowed
    # roll back to the old, validly signed version 1: refused
    shutil.rmtree(home / "policy")
    shutil.copytree(v1, home / "policy")
    with Gate.open(home) as gate:
        d = gate.decide(tool_request(token))
        assert d.codes == ("POLICY_UNAVAILABLE",)
        assert "version" in d.reasons[0].detail
    # a different bundle signed as version 2 again: refused too
    pol.write_text(original + "\n// v2 but different\n")
    (home / "policy" / "manifest.json").unlink()
    sign_bundle(home / "policy", h.private_key("policy"), version=2)
    with Gate.open(home) as gate:
        d = gate.decide(tool_request(token))
        assert d.codes == ("POLICY_UNAVAILABLE",)
        assert "different content" in d.reasons[0].detail
        loads = [json.loads(x) for _, _, x in gate.ledger.iter_entries() if b"policy.loaded" in x]
    assert [r["policy_version"] for r in loads] == [1, 2]


# -- storage faults (I1) -----------------------------------------------------------------------


def test_ledger_locked_past_the_timeout_denies_and_records_nothing(home: Path, issue: Any) -> None:
    edit_config(home, "ledger_timeout_ms = 2000", "ledger_timeout_ms = 200")
    token = issue()
    with Gate.open(home) as gate:
        before = gate.ledger.size()
        blocker = sqlite3.connect(home / "ledger.db", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            d = gate.decide(tool_request(token))
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert not d.allowed
        assert d.codes[-1] == "LEDGER_UNAVAILABLE"
        assert d.ledger_index is None
        time.sleep(0.3)  # a withdrawn or late record must never be an unreported allow
        for _, _, data in gate.ledger.iter_entries(before):
            assert json.loads(data)["id"] != d.request_id or json.loads(data)["effect"] == "allow"


def test_corrupt_ledger_stops_allowing(home: Path, issue: Any) -> None:
    token = issue()
    with Gate.open(home) as gate:
        assert gate.decide(tool_request(token)).allowed
        gate.ledger.checkpoint()
    conn = sqlite3.connect(home / "ledger.db")
    conn.execute("DROP TRIGGER entries_no_update")
    conn.execute("UPDATE entries SET leaf_hash = zeroblob(32) WHERE idx = 0")
    conn.commit()
    conn.close()
    with Gate.open(home) as gate:
        assert gate.corrupt is not None
        d = gate.decide(tool_request(token))
        assert d.codes == ("LEDGER_CORRUPT",)
        assert d.ledger_index is None


def test_deadline_exceeded(home: Path, issue: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    edit_config(home, "deadline_ms = 2000", "deadline_ms = 5")
    token = issue()
    with Gate.open(home) as gate:
        from interlock.policy.engine import PolicyEngine

        real = PolicyEngine.evaluate

        def slow(self: PolicyEngine, **kw: Any) -> Any:
            time.sleep(0.02)
            return real(self, **kw)

        monkeypatch.setattr(PolicyEngine, "evaluate", slow)
        d = gate.decide(tool_request(token))
        assert d.codes == ("DEADLINE_EXCEEDED",)
        rec = _assert_recorded(gate, d)
        assert rec["stage"] == "gate"


def test_an_exception_anywhere_is_a_deny(
    home: Path, issue: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = issue()
    with Gate.open(home) as gate:
        snap = gate.snapshot

        def boom(**kw: Any) -> Any:
            raise RuntimeError("biscuit exploded")

        monkeypatch.setattr(snap.capabilities, "check", boom)
        d = gate.decide(tool_request(token))
        assert d.codes == ("INTERNAL_ERROR",)
        assert not d.allowed
        assert "biscuit exploded" not in d.reasons[0].detail  # foreign messages may hold inputs
        rec = _assert_recorded(gate, d)
        assert rec["stage"] == "gate"
        assert rec["effect"] == "deny"


def test_a_failed_parent_lookup_is_recorded_with_an_unknown_lineage(
    home: Path, issue: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = issue()
    with Gate.open(home) as gate:
        parent = gate.decide(tool_request(token))

        def boom(_id: str) -> Any:
            raise RuntimeError("store exploded")

        monkeypatch.setattr(gate.ledger, "execution", boom)
        d = gate.decide(tool_request(token, parent=parent.request_id))
        assert d.codes == ("INTERNAL_ERROR",)
        rec = _assert_recorded(gate, d)
        assert rec["stage"] == "gate"
        assert rec["parent"] == parent.request_id
        assert rec["parent_leaf"] is None
        assert rec["lineage"] == {"status": "unknown", "depth": 0}
        # and a request without a parent records no lineage at all
        monkeypatch.undo()
        rec = _assert_recorded(gate, gate.decide(tool_request(token)))
        assert "lineage" not in rec
        assert rec["parent"] is None


# -- replay (I3) ---------------------------------------------------------------------------------


def test_replay_re_decides_byte_identically_and_flags_tampered_payloads(
    home: Path, issue: Any
) -> None:
    from interlock.capability import revocation_ids
    from interlock.replay import replay

    token = issue()
    with Gate.open(home) as gate:
        parent = gate.decide(tool_request(token, args={"t": 2.0, "big": 1e20, "s": "é"}))
        assert parent.allowed
        gate.decide(tool_request(token, "delete_database"))
        gate.decide(tool_request(token, parent=parent.request_id))
        gate.decide(b"garbage")
        gate.revoke(revocation_ids(token))
        assert gate.decide(tool_request(token)).codes == ("CAPABILITY_REVOKED",)
        rep = replay(
            gate.ledger,
            gate.home.trusted_policy_keys(),
            node_public=keys.public_raw(gate.home.private_key("node")),
        )
        assert rep.ok, rep.to_json()
        assert rep.replayed == 4 and rep.matched == 4 and rep.skipped_stage == 1

    # an edited payload no longer matches the digest its record committed to
    conn = sqlite3.connect(home / "ledger.db")
    conn.execute(
        "UPDATE blobs SET data = CAST(replace(CAST(data AS TEXT), 'delete_database', 'x') AS BLOB)"
    )
    key = f"req:{parent.request_id}"
    conn.execute(
        "UPDATE blobs SET data = CAST(replace(CAST(data AS TEXT), '2.0', '3.0') AS BLOB)"
        " WHERE digest = ?",
        (key,),
    )
    conn.commit()
    conn.close()
    with Gate.open(home) as gate:
        rep = replay(
            gate.ledger,
            gate.home.trusted_policy_keys(),
            node_public=keys.public_raw(gate.home.private_key("node")),
        )
        assert not rep.ok
        assert [u["id"] for u in rep.unverifiable] == [parent.request_id]


def test_admit_with_start_commits_the_allow_and_exec_start_together(home: Path, issue: Any) -> None:
    import hashlib

    with Gate.open(home) as gate:
        d, req = gate.admit(tool_request(issue()), start={"supervisor": "test"})
        assert d.allowed and req is not None and d.ledger_index is not None
        decision_bytes = gate.ledger.entry(d.ledger_index)
        start = json.loads(gate.ledger.entry(d.ledger_index + 1))
        assert start["type"] == "exec.start" and start["id"] == req.id
        assert start["supervisor"] == "test"
        assert start["decision_leaf"] == hashlib.sha256(b"\x00" + decision_bytes).hexdigest()
        row = gate.ledger.execution(req.id)
        assert row is not None and row.status == "running"
        # a deny gets no exec.start
        size = gate.ledger.size()
        denied, _ = gate.admit(tool_request(None), start={"supervisor": "test"})
        assert not denied.allowed
        assert gate.ledger.size() == size + 1


def test_null_arguments_are_absent_for_cedar(home: Path, issue: Any) -> None:
    """An optional argument left at None must not turn an allow into POLICY_ERROR."""
    tok = issue()
    with Gate.open(home) as gate:
        d = gate.decide(tool_request(tok, args={"q": "x", "lang": None}))
        assert d.allowed, d.reasons
        # a null inside a list is still not representable: argv is declared Set<String>, so
        # it is refused before Cedar (without the declaration the policy would error: deny)
        shell = issue(RESEARCHER, "shell.exec:Host::*")
        req = {
            "principal": RESEARCHER,
            "action": "shell.exec",
            "resource": {"type": "Host", "id": "localhost"},
            "args": {"argv": ["rm", None]},
            "capability": shell,
        }
        assert gate.decide(req).codes == ("MALFORMED_REQUEST",)
        # a null inside a list of an undeclared argument: the policy errors, which denies
        assert gate.decide(tool_request(tok, args={"q": ["x", None]})).codes == ("POLICY_ERROR",)
        from interlock.replay import replay

        rep = replay(
            gate.ledger,
            gate.home.trusted_policy_keys(),
            node_public=keys.public_raw(gate.home.private_key("node")),
        )
        assert rep.ok and rep.mismatches == [], rep.to_json()
