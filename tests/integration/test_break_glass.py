"""Break-glass overrides (issue 3 §5): allowed in scope, recorded and loud; refused out of
scope, expired, from an untrusted key, and for every integrity failure."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from interlock.gate import Gate
from interlock.replay import replay
from interlock.trust import keys
from interlock.trust.breakglass import make_break_glass
from tests.conftest import RESEARCHER, SUMMARIZER, tool_request, trust_config


@pytest.fixture
def glass_key(home: Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    cfg = home / "interlock.toml"
    text = cfg.read_text()
    section = text.index("[break_glass]")
    at = text.index("keys = []", section)
    cfg.write_text(text[:at] + f'keys = ["{keys.public_raw(key).hex()}"]' + text[at + 9 :])

    trust_config(home)
    return key


def _glass(key: Ed25519PrivateKey, scope: str, ttl: int = 600) -> str:
    now = int(time.time())
    if ttl <= 0:  # already expired: issued in the past
        return make_break_glass(
            scope, "incident 42", key, issued_at=now - 3600, expires_at=now + ttl
        )
    return make_break_glass(scope, "incident 42", key, issued_at=now, expires_at=now + ttl)


def test_break_glass_overrides_a_policy_denial_in_scope_and_is_recorded(
    home: Path, issue: Any, glass_key: Ed25519PrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    tok = issue(SUMMARIZER)  # the summarizer has no permit for send_email: POLICY_NO_PERMIT
    req = tool_request(tok, tool="send_email", principal=SUMMARIZER)
    with Gate.open(home) as gate:
        assert gate.decide(req).codes == ("POLICY_NO_PERMIT",)
        glass = _glass(glass_key, "tool.call:Tool::send_email")
        with caplog.at_level(logging.WARNING, logger="interlock"):
            d = gate.decide({**req, "break_glass": glass})
        assert d.allowed, d.reasons
        assert d.break_glass is not None and d.break_glass["overrode"]["code"] == "POLICY_NO_PERMIT"
        assert "BREAK-GLASS" in caplog.text
        assert d.ledger_index is not None
        rec = json.loads(gate.ledger.entry(d.ledger_index))
        assert rec["break_glass"]["reason"] == "incident 42"
        assert rec["break_glass"]["signer"] == keys.public_raw(glass_key).hex()
        assert len(rec["request"]["break_glass_sha256"]) == 64
        # wildcard scope works too; another resource is out of scope
        assert gate.decide({**req, "break_glass": _glass(glass_key, "tool.call:Tool::*")}).allowed
        other = tool_request(tok, tool="delete_database", principal=SUMMARIZER)
        out = gate.decide({**other, "break_glass": glass})
        assert out.codes == ("POLICY_FORBID",)
        assert "scoped to tool.call:Tool::send_email" in out.reasons[0].detail
        rep = replay(
            gate.ledger,
            gate.home.trusted_policy_keys(),
            node_public=keys.public_raw(gate.home.private_key("node")),
        )
        assert rep.ok and rep.mismatches == [], rep.to_json()


def test_break_glass_refused_when_expired_or_untrusted(
    home: Path, issue: Any, glass_key: Ed25519PrivateKey
) -> None:
    tok = issue(SUMMARIZER)
    req = tool_request(tok, tool="send_email", principal=SUMMARIZER)
    stranger = Ed25519PrivateKey.generate()
    with Gate.open(home) as gate:
        expired = gate.decide({**req, "break_glass": _glass(glass_key, "*:*", ttl=-1)})
        assert expired.codes == ("POLICY_NO_PERMIT",) and "expired" in expired.reasons[0].detail
        untrusted = gate.decide({**req, "break_glass": _glass(stranger, "*:*")})
        assert untrusted.codes == ("POLICY_NO_PERMIT",)
        assert "not a trusted break-glass key" in untrusted.reasons[0].detail
        garbage = gate.decide({**req, "break_glass": "AAAA"})
        assert garbage.codes == ("POLICY_NO_PERMIT",)


def test_break_glass_never_overrides_integrity_failures(
    home: Path, issue: Any, glass_key: Ed25519PrivateKey
) -> None:
    glass = _glass(glass_key, "*:*")
    good = issue(SUMMARIZER)
    with Gate.open(home) as gate:
        # a capability bound to another principal
        bad = tool_request(issue(RESEARCHER), principal=SUMMARIZER)
        assert gate.decide({**bad, "break_glass": glass}).codes == ("IDENTITY_UNVERIFIED",)
        # no capability at all
        none = tool_request(None, principal=SUMMARIZER)
        assert gate.decide({**none, "break_glass": glass}).codes == ("IDENTITY_UNVERIFIED",)
        req = {**tool_request(good, tool="send_email", principal=SUMMARIZER), "break_glass": glass}
        # quarantine
        gate.quarantine(SUMMARIZER, "q", on=True)
        assert gate.decide(req).codes == ("PRINCIPAL_QUARANTINED",)
        gate.quarantine(SUMMARIZER, "q", on=False)
        # the kill switch is the operator's forbid: not a policy a break-glass key may lift
        gate.kill_switch(True, "stop")
        assert gate.decide(req).codes == ("POLICY_FORBID",)
        gate.kill_switch(False, "go")
        # untrusted environment
        gate._set_env(gate.snapshot.env and dict(gate.snapshot.env), "injected: untrusted")
        assert gate.decide(req).codes == ("ENVIRONMENT_UNTRUSTED",)
        gate._attest()
        assert gate.decide(req).allowed  # and back: the override itself was fine
        # corrupt ledger
        gate._corrupt = "injected corruption"
        assert gate.decide(req).codes == ("LEDGER_CORRUPT",)


def test_break_glass_never_lifts_an_unknown_obligation(
    home: Path, issue: Any, glass_key: Ed25519PrivateKey
) -> None:
    """approval + an obligation this version does not know: POLICY_ERROR, override or not."""
    from interlock.home import Home
    from interlock.policy.bundle import sign_bundle

    pol = home / "policy" / "policies.cedar"
    pol.write_text(
        pol.read_text().replace(
            '@id("lead-any-tool")\n', '@id("lead-any-tool")\n@obligation("approval")\n'
        )
        + '\n@id("mfa")\n@obligation("mfa")\npermit (principal, action == Action::"tool.call",'
        ' resource == Tool::"send_email");\n'
    )
    sign_bundle(home / "policy", Home.load(home).private_key("policy"), version=2)
    tok = issue()
    req = tool_request(tok, tool="send_email")
    with Gate.open(home) as gate:
        assert gate.decide(req).codes == ("POLICY_ERROR",)
        d = gate.decide({**req, "break_glass": _glass(glass_key, "*:*")})
        assert d.codes == ("POLICY_ERROR",) and "mfa" in d.reasons[0].detail


def test_a_standing_or_future_override_is_refused_at_use(
    home: Path, issue: Any, glass_key: Ed25519PrivateKey
) -> None:
    from interlock.trust.breakglass import BREAK_GLASS_TYPE
    from interlock.trust.sealed import format_expiry, seal

    now = int(time.time())

    def rogue(issued: int, expires: int, **over: Any) -> str:
        body: dict[str, Any] = {
            "v": 1,
            "type": BREAK_GLASS_TYPE,
            "scope": "*:*",
            "reason": "forever",
            "issued": format_expiry(issued),
            "expires": format_expiry(expires),
        }
        body.update(over)
        return seal(body, glass_key, signer_field="signer")

    tok = issue(SUMMARIZER)
    req = tool_request(tok, tool="send_email", principal=SUMMARIZER)
    with Gate.open(home) as gate:
        assert gate.decide({**req, "break_glass": rogue(now - 60, now + 3600)}).allowed
        standing = gate.decide({**req, "break_glass": rogue(now - 60, now + 48 * 3600)})
        assert standing.codes == ("POLICY_NO_PERMIT",)
        assert "more than 24 hours" in standing.reasons[0].detail
        future = gate.decide({**req, "break_glass": rogue(now + 7200, now + 9000)})
        assert "not valid yet" in future.reasons[0].detail
        # a signed artifact with a non-integer version is refused, not an internal error
        odd = gate.decide({**req, "break_glass": rogue(now - 60, now + 600, v=True)})
        assert odd.codes == ("POLICY_NO_PERMIT",) and "version" in odd.reasons[0].detail
