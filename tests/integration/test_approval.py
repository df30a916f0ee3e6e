"""Human approvals (issue #3 §5): a permit annotated @obligation("approval") allows only with a
signed approval from a trusted approver, bound to the exact request. Real keys, real homes."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from interlock.errors import VerificationError
from interlock.gate import Gate
from interlock.home import Home
from interlock.policy.bundle import sign_bundle
from interlock.replay import replay
from interlock.trust import keys
from interlock.trust.approval import make_approval, verify_approval
from tests.conftest import edit_config, tool_request

# Tool::"send_email" is permitted to the lead researcher only by "lead-any-tool"
TOOL = "send_email"
_DIGEST_RE = re.compile(r"request digest ([0-9a-f]{64})")


def _require_approval(home: Path, approver: Ed25519PrivateKey | None) -> None:
    """Annotate the "lead-any-tool" permit with the approval obligation, re-sign the bundle,
    and trust ``approver`` in interlock.toml."""
    pol = home / "policy" / "policies.cedar"
    text = pol.read_text()
    assert '@id("lead-any-tool")\npermit' in text
    pol.write_text(
        text.replace('@id("lead-any-tool")\n', '@id("lead-any-tool")\n@obligation("approval")\n')
    )
    sign_bundle(home / "policy", Home.load(home).private_key("policy"), version=2)
    if approver is not None:
        hexkey = keys.public_raw(approver).hex()
        edit_config(home, "keys = []", f'keys = ["{hexkey}"]')


def _digest_of(detail: str) -> str:
    m = _DIGEST_RE.search(detail)
    assert m is not None, detail
    return m.group(1)


def _record(gate: Gate, index: int) -> dict[str, Any]:
    rec: dict[str, Any] = json.loads(gate.ledger.entry(index))
    return rec


def _replay_ok(gate: Gate) -> None:
    node = keys.public_raw(gate.home.private_key("node"))
    rep = replay(gate.ledger, gate.home.trusted_policy_keys(), node_public=node)
    assert rep.mismatches == [] and rep.unverifiable == [], rep.to_json()
    assert rep.ok


@pytest.fixture
def approver(home: Path) -> Ed25519PrivateKey:
    key = keys.create_key(home.parent / "approver.key")
    _require_approval(home, key)
    return key


def _approve(key: Ed25519PrivateKey, digest: str, ttl_s: int = 600) -> str:
    return make_approval(digest, key, expires_at=int(time.time()) + ttl_s)


def test_exact_match_allows_and_is_recorded(home: Path, issue: Any, approver: Any) -> None:
    token = issue()
    req = tool_request(token, TOOL, args={"to": "a@example.test"})
    with Gate.open(home) as gate:
        first = gate.decide(req)
        assert first.codes == ("APPROVAL_REQUIRED",)
        assert first.reasons[0].policy == "lead-any-tool"
        digest = _digest_of(first.reasons[0].detail)
        assert "refused" not in first.reasons[0].detail  # no approval was presented
        approval = _approve(approver, digest)
        d = gate.decide({**req, "approval": approval})
        assert d.allowed, d.reasons
        assert d.obligations == ("approval",)
        rec = _record(gate, d.ledger_index)
        assert rec["effect"] == "allow" and rec["obligations"] == ["approval"]
        assert rec["request"]["approval_sha256"] == (hashlib.sha256(approval.encode()).hexdigest())
        assert "approvers" in json.loads(gate.ledger.blob(f"snapshot:{rec['snapshot']}") or b"")
        # the approval is kept for replay, next to the arguments
        payload = json.loads(gate.ledger.blob(f"req:{rec['id']}") or b"")
        assert payload["approval"] == approval
        # a second request with the same approval is the same request: still allowed
        assert gate.decide({**req, "approval": approval}).allowed
        _replay_ok(gate)


def test_changed_args_deny(home: Path, issue: Any, approver: Any) -> None:
    token = issue()
    req = tool_request(token, TOOL, args={"to": "a@example.test"})
    with Gate.open(home) as gate:
        digest = _digest_of(gate.decide(req).reasons[0].detail)
        approval = _approve(approver, digest)
        other = {**req, "args": {"to": "attacker@example.test"}, "approval": approval}
        d = gate.decide(other)
        assert d.codes == ("APPROVAL_REQUIRED",)
        assert "another request" in d.reasons[0].detail
        # the denial names the digest of the request actually made, not the approved one
        assert _digest_of(d.reasons[0].detail) != digest
        _replay_ok(gate)


def test_expired_approval_denies(home: Path, issue: Any, approver: Any) -> None:
    token = issue()
    req = tool_request(token, TOOL)
    with Gate.open(home) as gate:
        digest = _digest_of(gate.decide(req).reasons[0].detail)
        stale = make_approval(digest, approver, expires_at=int(time.time()) - 1)
        d = gate.decide({**req, "approval": stale})
        assert d.codes == ("APPROVAL_REQUIRED",)
        assert "expired" in d.reasons[0].detail
        _replay_ok(gate)


def test_untrusted_approver_denies(home: Path, issue: Any, approver: Any) -> None:
    token = issue()
    req = tool_request(token, TOOL)
    stranger = Ed25519PrivateKey.generate()
    with Gate.open(home) as gate:
        digest = _digest_of(gate.decide(req).reasons[0].detail)
        d = gate.decide({**req, "approval": _approve(stranger, digest)})
        assert d.codes == ("APPROVAL_REQUIRED",)
        assert "not a trusted approver" in d.reasons[0].detail
        _replay_ok(gate)


def test_no_trusted_approvers_denies_every_approval(home: Path, issue: Any) -> None:
    _require_approval(home, None)
    key = Ed25519PrivateKey.generate()
    token = issue()
    req = tool_request(token, TOOL)
    with Gate.open(home) as gate:
        digest = _digest_of(gate.decide(req).reasons[0].detail)
        d = gate.decide({**req, "approval": _approve(key, digest)})
        assert d.codes == ("APPROVAL_REQUIRED",)


def _tamper(approval: str, **changes: Any) -> str:
    doc = json.loads(base64.urlsafe_b64decode(approval + "=" * (-len(approval) % 4)))
    doc.update(changes)
    raw = json.dumps(doc, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_tampered_approval_denies(home: Path, issue: Any, approver: Any) -> None:
    token = issue()
    req = tool_request(token, TOOL)
    with Gate.open(home) as gate:
        digest = _digest_of(gate.decide(req).reasons[0].detail)
        good = _approve(approver, digest, ttl_s=60)
        doc = json.loads(base64.urlsafe_b64decode(good + "=" * (-len(good) % 4)))
        sig = bytearray(base64.b64decode(doc["sig"]))
        sig[0] ^= 1
        flipped = _tamper(good, sig=base64.b64encode(bytes(sig)).decode())
        extended = _tamper(good, expires="2999-01-01T00:00:00Z")  # longer life, same sig
        for bad in (flipped, extended, _tamper(good, extra=1), "bm90LWpzb24"):
            d = gate.decide({**req, "approval": bad})
            assert d.codes == ("APPROVAL_REQUIRED",), bad
            assert "refused" in d.reasons[0].detail
        # not base64url at all: refused at intake
        assert gate.decide({**req, "approval": "not base64!"}).codes == ("MALFORMED_REQUEST",)
        assert gate.decide({**req, "approval": "A" * (8 * 1024 + 1)}).codes == (
            "MALFORMED_REQUEST",
        )
        assert gate.decide({**req, "approval": good}).allowed
        _replay_ok(gate)


def test_verify_approval_unit() -> None:
    key = Ed25519PrivateKey.generate()
    pub = keys.public_raw(key)
    text = make_approval("ab" * 32, key, expires_at=1_000)
    verify_approval(text, digest="ab" * 32, trusted=[pub], now=999)
    with pytest.raises(VerificationError, match="expired"):
        verify_approval(text, digest="ab" * 32, trusted=[pub], now=1_000)
    with pytest.raises(VerificationError, match="another request"):
        verify_approval(text, digest="cd" * 32, trusted=[pub], now=0)
    with pytest.raises(VerificationError, match="not a trusted approver"):
        verify_approval(text, digest="ab" * 32, trusted=[], now=0)
    with pytest.raises(ValueError, match="hex"):
        make_approval("xyz", key, expires_at=1)


# -- CLI -----------------------------------------------------------------------------------------

EXE = [sys.executable, "-m", "interlock.cli"]


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    env.pop("INTERLOCK_HOME", None)
    return subprocess.run(
        [*EXE, *args], input=stdin, capture_output=True, text=True, env=env, timeout=120
    )


def test_cli_approve_round_trip(home: Path, issue: Any, tmp_path: Path) -> None:
    key_file = tmp_path / "approver.key"
    approver = keys.create_key(key_file)
    _require_approval(home, approver)
    req = tool_request(issue(), TOOL, args={"to": "a@example.test"})

    r = _run("decide", "-", "--json", "--home", str(home), stdin=json.dumps(req))
    assert r.returncode == 1, r.stderr
    denied = json.loads(r.stdout)
    assert [x["code"] for x in denied["reasons"]] == ["APPROVAL_REQUIRED"]
    digest = _digest_of(denied["reasons"][0]["detail"])

    r = _run("approve", digest, "--key", str(key_file), "--ttl", "10m", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["request_digest"] == digest
    assert out["approver"] == keys.public_raw(approver).hex()

    r = _run("approve", digest, "--key", str(key_file), "--ttl", "10m")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()  # the plain form prints the bare approval token

    r = _run(
        "decide",
        "-",
        "--json",
        "--home",
        str(home),
        stdin=json.dumps({**req, "approval": out["approval"]}),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["obligations"] == ["approval"]

    # other arguments: the same approval no longer applies
    changed = {**req, "args": {"to": "b@example.test"}, "approval": out["approval"]}
    r = _run("decide", "-", "--json", "--home", str(home), stdin=json.dumps(changed))
    assert r.returncode == 1

    r = _run("ledger", "replay", "--json", "--home", str(home))
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["mismatches"] == []

    # usage errors exit 2
    assert _run("approve", "nothex", "--key", str(key_file)).returncode == 2
    assert _run("approve", digest, "--key", str(tmp_path / "missing.key")).returncode == 2
    assert _run("approve", digest, "--key", str(key_file), "--ttl", "soon").returncode == 2


@pytest.mark.parametrize(
    "line", ['keys = ["zz"]', 'keys = ["' + "AB" * 32 + '"]', "keys = 1", 'other = ["x"]']
)
def test_bad_approver_keys_are_refused(home: Path, line: str) -> None:
    from interlock.errors import ConfigError

    cfg = home / "interlock.toml"
    cfg.write_text(cfg.read_text().replace("keys = []", line))
    with pytest.raises(ConfigError, match="approvals"):
        Home.load(home)
