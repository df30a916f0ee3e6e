"""Runtime attestation (issue 3 §4) through real gates on real homes: measurement, the trusted
set, drift while running, context.env for policies, node-signed records and replay."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from interlock.containment import describe
from interlock.gate import Gate
from interlock.home import Home
from interlock.policy.bundle import sign_bundle
from interlock.records import verify_governance
from interlock.replay import replay
from interlock.trust import keys
from interlock.trust.attestation import measure, measure_config, measure_files, trust_current
from tests.conftest import edit_config, tool_request, trust_config


def _attested(gate: Gate) -> list[dict[str, Any]]:
    return [
        r
        for r in (json.loads(d) for _, _, d in gate.ledger.iter_entries())
        if r.get("event") == "node.attested"
    ]


def test_measure_files_sees_changed_added_and_removed_files(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "a.pyc").write_bytes(b"\x00")
    base = measure_files(tmp_path)
    (tmp_path / "__pycache__" / "a.pyc").write_bytes(b"\x01")  # bytecode caches do not count
    assert measure_files(tmp_path) == base
    (tmp_path / "a.py").write_text("x = 2\n")
    changed = measure_files(tmp_path)
    assert changed != base
    (tmp_path / "b.py").write_text("")
    added = measure_files(tmp_path)
    assert added not in (base, changed)
    (tmp_path / "b.py").unlink()
    assert measure_files(tmp_path) == changed


def test_config_measurement_ignores_formatting_and_the_trusted_list_only() -> None:
    a = measure_config('[gate]\ndeadline_ms = 50\n[attestation]\ntrusted = ["' + "a" * 64 + '"]\n')
    b = measure_config("# comment\n[gate]\ndeadline_ms   =   50\n")
    assert a == b
    assert measure_config("[gate]\ndeadline_ms = 51\n") != a
    assert measure_config("[gate]\ndeadline_ms = 50\n[attestation]\nenforce = false\n") != a


def test_a_fresh_home_is_attested_and_its_record_is_node_signed(home: Path, issue: Any) -> None:
    with Gate.open(home) as gate:
        assert gate.decide(tool_request(issue())).allowed
        records = _attested(gate)
        rec = records[-1]
        verify_governance(rec, keys.public_raw(gate.home.private_key("node")))
        assert rec["trusted"] is True and rec["problem"] is None
        m = measure(
            home / "interlock.toml",
            gate.snapshot.descriptor["policy_digest"],
            containment=describe(gate.home.config.exec),
        )
        assert rec["measurement"]["containment"]["mode"] == "full"
        assert rec["platform"] == m.platform and rec["digest"] == m.digest
        assert gate.snapshot.env == m.env(attested=True)
    with Gate.open(home) as gate:  # the same measurement is not recorded twice
        assert len(_attested(gate)) == len(records)


def test_an_untrusted_platform_denies_everything_and_says_what_to_do(
    home: Path, issue: Any
) -> None:
    cfg = home / "interlock.toml"
    cfg.write_text(cfg.read_text().replace("max_lineage_depth = 16", "max_lineage_depth = 8"))
    tok = issue()
    with Gate.open(home) as gate:
        d = gate.decide(tool_request(tok))
        assert d.codes == ("ENVIRONMENT_UNTRUSTED",)
        assert "interlock attest trust" in d.reasons[0].detail
        assert d.ledger_index is not None  # recorded
        (rec,) = _attested(gate)[-1:]
        assert rec["trusted"] is False and rec["problem"]
    trust_config(home)  # what `interlock attest trust` does: trust it, on the ledger too
    with Gate.open(home) as gate:
        assert gate.decide(tool_request(tok)).allowed


def test_drift_while_running_denies_and_is_recorded(home: Path, issue: Any) -> None:
    edit_config(home, "\ninterval_ms = 5000", "\ninterval_ms = 50")
    tok = issue()
    with Gate.open(home) as gate:
        assert gate.decide(tool_request(tok)).allowed
        cfg = home / "interlock.toml"
        # even a change that is itself trusted is drift: the node attested to what it started as
        edit_config(home, "max_lineage_depth = 16", "max_lineage_depth = 15")
        deadline = time.monotonic() + 5
        while gate.snapshot.env_problem is None and time.monotonic() < deadline:
            time.sleep(0.02)
        d = gate.decide(tool_request(tok))
        assert d.codes == ("ENVIRONMENT_UNTRUSTED",)
        assert "config changed since this node attested" in d.reasons[0].detail
        assert _attested(gate)[-1]["problem"] == d.reasons[0].detail
        # restoring the measured file restores trust (same measurement as at start)
        cfg.write_text(cfg.read_text().replace("max_lineage_depth = 15", "max_lineage_depth = 16"))
        deadline = time.monotonic() + 5
        while gate.snapshot.env_problem is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert gate.decide(tool_request(tok)).allowed
        rep = replay(
            gate.ledger,
            gate.home.trusted_policy_keys(),
            node_public=keys.public_raw(gate.home.private_key("node")),
        )
        assert rep.ok and rep.mismatches == [] and rep.matched == 3, rep.to_json()


def test_an_unmeasurable_node_is_untrusted(
    home: Path, issue: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    tok = issue()
    with Gate.open(home) as gate:
        assert gate.decide(tool_request(tok)).allowed

        def unreadable(*_a: object, **_k: object) -> None:
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr("interlock.watchers.measure", unreadable)
        gate._attest()
        d = gate.decide(tool_request(tok))
        assert d.codes == ("ENVIRONMENT_UNTRUSTED",)
        assert "could not be measured" in d.reasons[0].detail


def test_policies_read_context_env_when_not_enforcing(home: Path, issue: Any) -> None:
    """enforce = false: an untrusted platform is visible to policy as context.env.attested."""
    pol = home / "policy" / "policies.cedar"
    pol.write_text(
        pol.read_text()
        + '\n@id("attested-only")\nforbid (principal, action == Action::"tool.call", resource)'
        "\nunless { context.env.attested };\n"
    )
    sign_bundle(home / "policy", Home.load(home).private_key("policy"), version=2)
    tok = issue()
    with Gate.open(home) as gate:
        assert gate.decide(tool_request(tok)).allowed  # trusted: attested
    # `interlock trust set attestation.enforce false`: on the ledger, then in the file, whose
    # new measurement is not trusted
    with Gate.open(home) as gate:
        gate.record_trust({"attestation.enforce": False})
    with Gate.open(home) as gate:
        assert gate.snapshot.env is not None and gate.snapshot.env["attested"] is False
        d = gate.decide(tool_request(tok))
        assert d.codes == ("POLICY_FORBID",)
        assert d.reasons[0].policy == "attested-only"
        rep = replay(
            gate.ledger,
            gate.home.trusted_policy_keys(),
            node_public=keys.public_raw(gate.home.private_key("node")),
        )
        assert rep.ok and rep.mismatches == [], rep.to_json()


def test_a_new_policy_version_re_attests_without_re_trusting(home: Path, issue: Any) -> None:
    tok = issue()
    with Gate.open(home) as gate:
        before = _attested(gate)[-1]
        sign_bundle(home / "policy", Home.load(home).private_key("policy"), version=2)
        gate.reload_policy()
        after = _attested(gate)[-1]
        assert after["platform"] == before["platform"]
        assert after["measurement"]["policy"] != before["measurement"]["policy"]
        assert gate.decide(tool_request(tok)).allowed


def test_drift_denies_even_when_not_enforcing(home: Path, issue: Any) -> None:
    edit_config(home, "enforce = true", "enforce = false")
    edit_config(home, "\ninterval_ms = 5000", "\ninterval_ms = 50")
    tok = issue()
    with Gate.open(home) as gate:
        assert gate.decide(tool_request(tok)).allowed
        cfg = home / "interlock.toml"
        cfg.write_text(cfg.read_text().replace("max_lineage_depth = 16", "max_lineage_depth = 3"))
        deadline = time.monotonic() + 5
        while gate.snapshot.env_problem is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert gate.decide(tool_request(tok)).codes == ("ENVIRONMENT_UNTRUSTED",)


def test_a_fifo_among_the_measured_files_makes_the_node_unmeasurable(tmp_path: Path) -> None:
    import os

    (tmp_path / "a.py").write_text("")
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(OSError, match="not a regular file"):
        measure_files(tmp_path)


def test_trust_current_keeps_the_file_mode_and_other_settings(home: Path) -> None:
    import stat

    cfg = home / "interlock.toml"
    cfg.chmod(0o640)
    text = cfg.read_text()
    # a comment naming the table must not be mistaken for it
    cfg.write_text(
        "# see [attestation] below\n"
        + text.replace("max_lineage_depth = 16", "max_lineage_depth = 5")
    )
    before = measure_config(cfg.read_text())
    digest = trust_current(cfg)
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o640
    assert measure_config(cfg.read_text()) == before
    assert digest in Home.load(home).config.trusted_platforms
    assert trust_current(cfg) == digest  # idempotent
    assert cfg.read_text().count(digest) == 1
