"""Hypothesis state machines for the gate's safety and the ledger store's evidence.

``GateSafety`` drives a real gate (real home, real SQLite ledger) through decisions,
revocations, quarantines, the kill switch, fresh tokens and policy reloads — valid re-signed
bundles, a bundle that forbids a tool, and tampered bundles that must not load — in any order.
After every step: no allow while the principal is quarantined, its token revoked or the kill
switch on, nor for a tool the active policy forbids; every allow has a ledger index whose entry
is its decision record; and ``ledger verify`` passes (every leaf, checkpoint and the
governance state rebuilt from the log). An allow that every model says should happen does
happen, so a gate that denied everything would fail too.

``LedgerStore`` drives the SQLite store through appends, checkpoints, reopenings and proofs:
indices are contiguous, the size never shrinks, every checkpoint is signed over the model's
root, every inclusion proof and every consistency proof between any two checkpoints verifies.
(``tests/property/test_projection_props.py`` has the machine for the projection: the state
tables are always the fold of the log.)
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from interlock.audit import verify_ledger
from interlock.bootstrap import init_home
from interlock.capability import CapabilityIssuer, Right, revocation_ids
from interlock.gate import Gate
from interlock.ledger import merkle
from interlock.ledger.note import NoteSigner, NoteVerifier, open_checkpoint
from interlock.ledger.protocols import Append
from interlock.ledger.storage import open_store
from interlock.policy.bundle import sign_bundle
from interlock.trust import keys
from tests.conftest import RESEARCHER, edit_config, tool_request

SUMMARIZER = "spiffe://acme.test/agent/researcher/summarizer"
PRINCIPALS = st.sampled_from([RESEARCHER, SUMMARIZER])
TOOLS = st.sampled_from(["web_search", "summarize", "send_email", "delete_database"])

#: which tools the default policy lets each principal call (policies.cedar)
DEFAULT_PERMITS = {
    RESEARCHER: {"web_search", "summarize", "send_email", "read_file"},
    SUMMARIZER: {"web_search", "summarize", "read_file"},
}
FORBID_WEB_SEARCH = """
@id("sm-no-web-search")
forbid (principal, action == Action::"tool.call", resource == Tool::"web_search");
"""


class GateSafety(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="interlock-sm-"))
        home = init_home(self.folder / "home", origin="interlock.test/sm-gate")
        # a changed config is a changed measurement: edit_config trusts it, as an operator would
        edit_config(home.path, "deadline_ms = 50", "deadline_ms = 5000")
        self.home = home
        self.policy_key = home.private_key("policy")
        self.version = 1
        self.vkey = NoteSigner(home.config.origin, home.private_key("log")).vkey
        self.gate = Gate.open(home.path)
        self.issuer = CapabilityIssuer(keys.private_raw(home.private_key("biscuit-root")))
        # the model
        self.tokens = {p: self._issue(p) for p in (RESEARCHER, SUMMARIZER)}
        self.revoked: set[str] = set()
        self.quarantined: set[str] = set()
        self.kill_switch_on = False
        self.forbid_web_search = False
        self.allows = 0

    def _issue(self, principal: str) -> str:
        return self.issuer.issue(
            principal=principal,
            rights=[Right.parse("tool.call:Tool::*")],
            expires_at=datetime.now(UTC) + timedelta(hours=1),
        )

    # -- rules ------------------------------------------------------------------------------

    @rule(principal=PRINCIPALS, tool=TOOLS)
    def decide(self, principal: str, tool: str) -> None:
        token = self.tokens[principal]
        d = self.gate.decide(tool_request(token, tool, principal=principal))
        permitted = tool in DEFAULT_PERMITS[principal] and not (
            self.forbid_web_search and tool == "web_search"
        )
        # a quarantine covers the principal's descendants (SPIFFE path below it) too
        quarantined = any(principal == q or principal.startswith(q + "/") for q in self.quarantined)
        blocked = self.kill_switch_on or quarantined or token in self.revoked
        if d.allowed:
            self.allows += 1
            assert not self.kill_switch_on, "an allow while the kill switch is on"
            assert not quarantined, "an allow for a quarantined principal"
            assert token not in self.revoked, "an allow with a revoked token"
            assert permitted, f"an allow of {tool} for {principal} that the policy forbids"
            # I1: the allow is on the ledger, as its decision record
            assert d.ledger_index is not None
            entry = self.gate.ledger.entry(d.ledger_index)
            record = json.loads(entry)
            assert record["type"] == "decision" and record["effect"] == "allow"
            assert record["id"] == d.request_id
            assert hashlib.sha256(entry).hexdigest() == d.decision_hash
        else:
            assert d.codes, "a deny without a reason code"
            assert blocked or not permitted, f"a wrongful deny: {d.codes}"

    @rule(principal=PRINCIPALS)
    def revoke(self, principal: str) -> None:
        token = self.tokens[principal]
        self.gate.revoke(tuple(revocation_ids(token)), reason="state machine")
        self.revoked.add(token)

    @rule(principal=PRINCIPALS)
    def new_token(self, principal: str) -> None:
        self.tokens[principal] = self._issue(principal)

    @rule(principal=PRINCIPALS, on=st.booleans())
    def quarantine(self, principal: str, on: bool) -> None:
        self.gate.quarantine(principal, "state machine", on=on)
        if on:
            self.quarantined.add(principal)
        else:
            self.quarantined.discard(principal)

    @rule(on=st.booleans())
    def kill_switch(self, on: bool) -> None:
        self.gate.kill_switch(on, "state machine")
        self.kill_switch_on = on

    @rule(forbid=st.booleans())
    def reload_signed_policy(self, forbid: bool) -> None:
        extra = self.home.policy_dir / "sm.cedar"
        if forbid:
            extra.write_text(FORBID_WEB_SEARCH, encoding="utf-8")
        else:
            extra.unlink(missing_ok=True)
        self.version += 1
        sign_bundle(self.home.policy_dir, self.policy_key, version=self.version)
        self.gate.reload_policy()
        self.forbid_web_search = forbid

    @rule(how=st.sampled_from(["unsigned-permit", "edited-file", "foreign-key", "older"]))
    def reload_tampered_policy(self, how: str) -> None:
        """A bundle that must not load: the active policy stays what it was."""
        policy = self.home.policy_dir
        backup = self.folder / "policy-backup"
        shutil.copytree(policy, backup)
        try:
            if how == "unsigned-permit":
                (policy / "zz.cedar").write_text("permit (principal, action, resource);")
            elif how == "edited-file":
                (policy / "policies.cedar").write_text("permit (principal, action, resource);")
            elif how == "foreign-key":
                (policy / "policies.cedar").write_text("permit (principal, action, resource);")
                sign_bundle(policy, Ed25519PrivateKey.generate(), version=self.version + 1)
            else:  # a validly signed bundle of an older version
                (policy / "policies.cedar").write_text("permit (principal, action, resource);")
                (policy / "manifest.json").unlink()
                sign_bundle(policy, self.policy_key, version=1)
            self.gate.reload_policy()
        finally:
            shutil.rmtree(policy)
            shutil.move(backup, policy)

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def the_ledger_verifies(self) -> None:
        assert self.gate.corrupt is None
        report = verify_ledger(
            self.gate.ledger,
            self.vkey,
            state_keys=(self.gate._node_public, self.gate._root_public),
        )
        assert report.size == self.gate.ledger.size()

    def teardown(self) -> None:
        self.gate.close()
        shutil.rmtree(self.folder, ignore_errors=True)


GateSafety.TestCase.settings = settings(
    max_examples=6, stateful_step_count=20, deadline=None, suppress_health_check=list(HealthCheck)
)
test_the_gate_never_allows_what_its_state_forbids = GateSafety.TestCase


class LedgerStore(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="interlock-sm-ledger-"))
        self.path = self.folder / "ledger.db"
        self.signer = NoteSigner("interlock.test/sm-ledger", Ed25519PrivateKey.generate())
        self.verifier = NoteVerifier.from_vkey(self.signer.vkey)
        self.ledger = open_store(self.path, signer=self.signer, durability="full", create=True)
        self.leaves: list[bytes] = []
        self.checkpoints: dict[int, bytes] = {}  # size -> root, as signed
        self.seen_size = 0

    @rule(n=st.integers(1, 6), size=st.integers(0, 300))
    def append(self, n: int, size: int) -> None:
        records = [
            json.dumps({"i": len(self.leaves) + k, "pad": "x" * size}).encode() for k in range(n)
        ]
        results = self.ledger.append([Append(record=r) for r in records])
        assert [r.index for r in results] == list(range(len(self.leaves), len(self.leaves) + n))
        self.leaves += [merkle.leaf_hash(r) for r in records]

    @rule()
    def checkpoint(self) -> None:
        cp = self.ledger.checkpoint()
        if not self.leaves:
            return
        assert cp is not None and cp.size == len(self.leaves)
        opened = open_checkpoint(cp.note, self.verifier)
        assert opened.size == cp.size
        assert opened.root_hash == merkle.root_of(self.leaves) == cp.root
        self.checkpoints[cp.size] = cp.root

    @rule()
    def reopen(self) -> None:
        self.ledger.close()
        self.ledger = open_store(self.path, signer=self.signer, durability="full")

    @precondition(lambda self: self.checkpoints)
    @rule(data=st.data())
    def inclusion(self, data: st.DataObject) -> None:
        size = data.draw(st.sampled_from(sorted(self.checkpoints)))
        index = data.draw(st.integers(0, size - 1))
        proof = self.ledger.inclusion_proof(index, size)
        merkle.verify_inclusion(index, size, self.leaves[index], proof, self.checkpoints[size])

    @precondition(lambda self: self.checkpoints)
    @rule(data=st.data())
    def consistency(self, data: st.DataObject) -> None:
        sizes = sorted(self.checkpoints)
        old = data.draw(st.sampled_from(sizes))
        new = data.draw(st.sampled_from([s for s in sizes if s >= old]))
        proof = self.ledger.consistency_proof(old, new)
        merkle.verify_consistency(old, new, self.checkpoints[old], self.checkpoints[new], proof)

    @invariant()
    def size_is_monotonic_and_matches(self) -> None:
        size = self.ledger.size()
        assert size >= self.seen_size
        assert size == len(self.leaves)
        self.seen_size = size
        if size:
            assert self.ledger.root_at(size) == merkle.root_of(self.leaves)

    def teardown(self) -> None:
        self.ledger.close()
        shutil.rmtree(self.folder, ignore_errors=True)


LedgerStore.TestCase.settings = settings(
    max_examples=25, stateful_step_count=30, deadline=None, suppress_health_check=list(HealthCheck)
)
test_ledger_proofs_always_verify = LedgerStore.TestCase
