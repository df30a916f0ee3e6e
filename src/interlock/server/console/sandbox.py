"""The Runtime Governance Demo's throwaway home: a real governance home of its own, in a private
temporary folder, where a scenario's request passes the real gate and switches break things
for real.

    sandbox = Sandbox.create()                       # its own keys, signed policy, ledger
    trace = sandbox.run("allowed", Switches(revoke=True))
    trace["decision"]["effect"], trace["executed"]
    # ('deny', False)
    sandbox.remove()

It never opens the serving node's home: everything here is under the folder
:meth:`Sandbox.create` made (``tempfile.mkdtemp``, mode 0700). Each run opens a gate on the
throwaway home — as a node starting with the files the switches left — decides one request
through :meth:`interlock.gate.Gate.execution` (so the demo's harmless in-process action runs
only after an allow committed to the ledger), then undoes the switches' edits.

The switches, each done for real in the throwaway home:

* ``revoke``: the scenario's capability is revoked on the home's ledger before it is presented
  (CAPABILITY_REVOKED).
* ``stale_policy``: the policy folder holds the home's *previous* signed bundle (version 1)
  while its log has activated version 2; the gate refuses the rollback and, with no valid
  bundle, denies POLICY_UNAVAILABLE. (POLICY_STALE is a fleet node's lost freshness lease;
  a SQLite home has none.)
* ``locked_ledger``: a second SQLite connection holds the ledger's write lock while the gate
  appends; the append cannot commit before ``[gate] ledger_timeout_ms`` (LEDGER_UNAVAILABLE).
* ``changed_config``: ``interlock.toml`` is edited without re-attesting; the measured platform is
  no longer a trusted one (ENVIRONMENT_UNTRUSTED).

:func:`stages_of` turns the gate's :class:`~interlock.core.model.Decision` into the pipeline's
stages (DESIGN §2 order), each passed, denied or not reached.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from interlock.audit import open_for_audit
from interlock.bootstrap import init_home
from interlock.capability import CapabilityIssuer, Right, attenuate, revocation_ids
from interlock.core.model import Decision, Reason, ReasonCode, Stage
from interlock.errors import Denied
from interlock.gate import Gate
from interlock.governance import adopt_changes, record_trust
from interlock.policy.bundle import sign_bundle
from interlock.trust import keys
from interlock.trust.attestation import trust_current

__all__ = [
    "SCENARIOS",
    "STAGES",
    "SWITCHES",
    "Sandbox",
    "Scenario",
    "Switches",
    "stages_of",
]

RESEARCHER = "spiffe://acme.test/agent/researcher"
SUMMARIZER = "spiffe://acme.test/agent/researcher/summarizer"
ORIGIN = "interlock.local/demo"

#: a throwaway home's gate settings: a deadline no loaded machine misses by accident and no
#: background watches (each run opens a gate of its own). The ledger wait stays the default
#: 2 s: a shorter one made an ordinary append (the revoke switch's, an allow's record) miss it
#: when a loaded machine's fsync stalled; the locked-ledger switch answers after it.
_SETTINGS = (
    ("deadline_ms = 50", "deadline_ms = 5000"),
    ("ledger_check_interval_ms = 5000", "ledger_check_interval_ms = 0"),
    ("interval_ms = 5000", "interval_ms = 0"),
)
#: the changed-config switch's edit, made without re-attesting
CONFIG_EDIT = ("max_lineage_depth = 16", "max_lineage_depth = 64")


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """One request to send through the gate, and what it shows with no switch flipped."""

    id: str
    title: str
    description: str
    expected: str  # "allow" or a DESIGN §3 code

    def to_json(self) -> dict[str, str]:
        return {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "expected": self.expected,
        }


SCENARIOS: Mapping[str, Scenario] = {
    s.id: s
    for s in (
        Scenario(
            id="allowed",
            title="An allowed tool call",
            description="The lead researcher calls Tool::web_search with a valid capability."
            " Every check passes, the decision is recorded, then the search runs.",
            expected="allow",
        ),
        Scenario(
            id="sub-agent",
            title="A sub-agent inside its attenuated capability",
            description="The researcher's summarizer calls Tool::summarize with a capability"
            " narrowed to that one tool, as a child of the researcher's allowed execution.",
            expected="allow",
        ),
        Scenario(
            id="forbidden",
            title="Forbidden by policy",
            description="The researcher calls Tool::delete_database: a Cedar forbid overrides"
            " every permit.",
            expected=ReasonCode.POLICY_FORBID.value,
        ),
        Scenario(
            id="no-permit",
            title="No policy permits it",
            description="The summarizer calls Tool::send_email: its capability covers it, but no"
            " Cedar policy permits it.",
            expected=ReasonCode.POLICY_NO_PERMIT.value,
        ),
        Scenario(
            id="denied-parent",
            title="The child of a denied parent",
            description="The researcher calls Tool::web_search as a child of its own denied"
            " delete_database request: only a live, allowed execution can have children.",
            expected=ReasonCode.LINEAGE_BROKEN.value,
        ),
        Scenario(
            id="expired",
            title="An expired capability",
            description="The researcher presents a capability that expired a minute ago.",
            expected=ReasonCode.CAPABILITY_EXPIRED.value,
        ),
        Scenario(
            id="malformed",
            title="A malformed request",
            description="Raw bytes with a resource that is not {type, id} and an unknown field:"
            " intake refuses them.",
            expected=ReasonCode.MALFORMED_REQUEST.value,
        ),
    )
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Switches:
    """What to break before the request is decided."""

    revoke: bool = False
    stale_policy: bool = False
    locked_ledger: bool = False
    changed_config: bool = False

    def to_json(self) -> dict[str, bool]:
        return {
            "revoke": self.revoke,
            "stale_policy": self.stale_policy,
            "locked_ledger": self.locked_ledger,
            "changed_config": self.changed_config,
        }


#: (id, label, what it does) of each switch, in the page's order
SWITCHES: tuple[tuple[str, str, str], ...] = (
    (
        "revoke",
        "Revoke the capability",
        "The scenario's token is revoked on the demo home's ledger before it is presented.",
    ),
    (
        "stale_policy",
        "Stale policy",
        "The policy folder is rolled back to the previous signed bundle (version 1) after"
        " version 2 was activated.",
    ),
    (
        "locked_ledger",
        "Locked ledger",
        "Another connection holds the ledger's write lock: the decision cannot be recorded"
        " in time.",
    ),
    (
        "changed_config",
        "Changed config",
        "interlock.toml is edited (max_lineage_depth 16 → 64) without re-attesting the node.",
    ),
)

#: (id, label, what it checks) of each stage, in the order the gate runs them (DESIGN §2: the
#: node's environment before lineage, the policy bundle's availability just before Cedar)
STAGES: tuple[tuple[str, str, str], ...] = (
    ("intake", "Intake", "request shape, id and time"),
    ("capability", "Capability", "signature, expiry, revocation, coverage, quarantine"),
    ("environment", "Attestation & config", "the node's measured platform is trusted"),
    ("lineage", "Lineage", "the parent is a live, allowed execution"),
    ("policy", "Policy bundle", "signed, and not older than the one activated"),
    ("cedar", "Cedar policy", "a permit and no forbid"),
    ("record", "Ledger record", "durably appended before the answer"),
)
_ORDER = [s[0] for s in STAGES]

_STAGE_OF: Mapping[ReasonCode, str] = {
    ReasonCode.MALFORMED_REQUEST: "intake",
    ReasonCode.IDENTITY_UNVERIFIED: "capability",
    ReasonCode.CAPABILITY_INVALID: "capability",
    ReasonCode.CAPABILITY_EXPIRED: "capability",
    ReasonCode.CAPABILITY_REVOKED: "capability",
    ReasonCode.CAPABILITY_INSUFFICIENT: "capability",
    ReasonCode.PRINCIPAL_QUARANTINED: "capability",
    ReasonCode.ENVIRONMENT_UNTRUSTED: "environment",
    ReasonCode.BOUNDARY_VIOLATION: "environment",
    ReasonCode.LINEAGE_BROKEN: "lineage",
    ReasonCode.POLICY_UNAVAILABLE: "policy",
    ReasonCode.POLICY_STALE: "policy",
    ReasonCode.POLICY_NO_PERMIT: "cedar",
    ReasonCode.POLICY_FORBID: "cedar",
    ReasonCode.POLICY_ERROR: "cedar",
    ReasonCode.APPROVAL_REQUIRED: "cedar",
    ReasonCode.LEDGER_UNAVAILABLE: "record",
    ReasonCode.LEDGER_CORRUPT: "record",
}
_RECORD_CODES = frozenset({ReasonCode.LEDGER_UNAVAILABLE, ReasonCode.LEDGER_CORRUPT})


def _stage_of(reason: Reason, stage: Stage) -> str | None:
    """Where in the pipeline ``reason`` was found, or None (the gate overrode the pipeline:
    DEADLINE_EXCEEDED, INTERNAL_ERROR, an adapter's refusal)."""
    if reason.code is ReasonCode.MALFORMED_REQUEST and stage is not Stage.INTAKE:
        return "cedar"  # args that do not fit the bundle's schema: checked with the policy
    if reason.code is ReasonCode.POLICY_FORBID and reason.policy == "kill-switch":
        return "capability"  # the kill switch is checked right after the capability
    return _STAGE_OF.get(reason.code)


def stages_of(decision: Decision) -> list[dict[str, Any]]:
    """The pipeline's stages for ``decision``, in order: each ``{id, label, checks, status,
    code?, detail?}`` with ``status`` one of ``passed``, ``denied``, ``not_reached`` and
    ``unknown`` (the gate's deadline or an internal error replaced the pipeline's answer).

    Read from the decision alone: validators run in a fixed order and the first denial wins
    (DESIGN §2), so every stage before the denying one passed. A decision without a snapshot
    was refused before intake (its ledger could not be checked, the fleet lease was lost, the
    clock is behind the log): nothing else was reached. A record failure is the last reason of
    a decision that has no ledger index. Never raises.
    """
    out = [
        {"id": sid, "label": label, "checks": checks, "status": "not_reached"}
        for sid, label, checks in STAGES
    ]
    by_id = {s["id"]: s for s in out}

    def deny(sid: str, reason: Reason) -> None:
        by_id[sid].update(status="denied", code=reason.code.value, detail=reason.detail)

    if decision.allowed:
        for s in out:
            s["status"] = "passed"
        by_id["record"]["detail"] = f"recorded at ledger index {decision.ledger_index}"
        return out
    reasons = list(decision.reasons)
    if not reasons:  # a deny always has a reason; say so rather than guess
        by_id["record"].update(status="unknown", detail="a denial without a reason")
        return out
    if not decision.snapshot:
        first = reasons[0]
        deny(_stage_of(first, decision.stage) or "record", first)
        return out
    record_failure: Reason | None = None
    if decision.ledger_index is None and reasons[-1].code in _RECORD_CODES:
        record_failure = reasons.pop()
    if reasons:
        first = reasons[0]
        where = _stage_of(first, decision.stage)
        if where is None or where == "record":
            # the gate replaced the pipeline's answer: which checks passed is not known
            for s in out[:-1]:
                s.update(status="unknown", detail=f"the gate denied {first.code.value} instead")
            deny("record", first)
            if decision.ledger_index is not None:
                by_id["record"]["detail"] = (
                    f"{first.detail} (the denial is recorded at ledger index"
                    f" {decision.ledger_index})"
                )
            return out
        at = _ORDER.index(where)
        for s in out[:at]:
            s["status"] = "passed"
        deny(where, first)
    else:  # the pipeline allowed; the record failed
        for s in out[:-1]:
            s["status"] = "passed"
    if record_failure is not None:
        deny("record", record_failure)
    elif decision.ledger_index is not None:
        by_id["record"].update(
            status="passed",
            detail=f"the denial is recorded at ledger index {decision.ledger_index}",
        )
    return out


def _demo_action(tool: str) -> str:
    """The demo's action: a harmless in-process step that only runs after an allow."""
    return f"{tool} ran in-process and returned 3 canned results"


class Sandbox:
    """A throwaway governance home in a private temporary folder. Not thread-safe: its owner
    (:mod:`interlock.server.console.demo`) runs one request at a time per sandbox.

    Use :meth:`create`; :meth:`remove` deletes every file it made.
    """

    root: Path
    home: Path
    _v1: Path

    def __init__(self, root: Path) -> None:
        self._set_root(root)
        self._parent_allowed = ""
        self._parent_denied = ""
        self._root_private = b""
        self._root_public = b""
        #: how many times the demo action ran in this sandbox
        self.executions = 0

    def _set_root(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self._v1 = root / "policy-v1"

    @classmethod
    def create(cls) -> Sandbox:
        """Make a new throwaway home: its own four keys, its signed policy at version 2 (with
        version 1 kept beside it for the stale-policy switch), the demo's gate settings, and
        two seeded parents (an allowed and a denied decision of the researcher).

        Raises:
            OSError: the temporary folder could not be made or written.
            interlock.errors.Error: the home could not be created (the folder is removed).
        """
        root = Path(tempfile.mkdtemp(prefix="interlock-demo-"))  # mode 0700
        sandbox = cls(root)
        try:
            sandbox._build()
        except BaseException:
            sandbox.remove()
            raise
        return sandbox

    def _build(self) -> None:
        home = init_home(self.home, origin=ORIGIN)
        self._root_private = keys.private_raw(home.private_key("biscuit-root"))
        self._root_public = keys.public_raw(home.private_key("biscuit-root"))
        cfg = self.home / "interlock.toml"
        text = cfg.read_text(encoding="utf-8")
        for old, new in _SETTINGS:
            text = text.replace(old, new, 1)
        cfg.write_text(text, encoding="utf-8")
        # as an operator does after an intended edit: `interlock attest trust`, `trust adopt`
        trust_current(cfg)
        with open_for_audit(self.home, sign=True) as view:
            record_trust(
                view.ledger, view.home, adopt_changes(view.ledger, view.home), ns=time.time_ns()
            )
        shutil.copytree(self.home / "policy", self._v1)
        sign_bundle(self.home / "policy", home.private_key("policy"))  # version 2
        with Gate.open(self.home) as gate:  # records the activation of version 2
            token = self._issue(RESEARCHER)
            self._parent_allowed = gate.decide(_tool(RESEARCHER, "web_search", token)).request_id
            self._parent_denied = gate.decide(
                _tool(RESEARCHER, "delete_database", token)
            ).request_id

    def remove(self) -> None:
        """Delete the throwaway home and everything beside it. Never raises."""
        shutil.rmtree(self.root, ignore_errors=True)

    def reset(self) -> None:
        """Replace the throwaway home with a new one (new keys, an empty ledger) in a new
        private temporary folder.

        Raises:
            OSError, interlock.errors.Error: as :meth:`create` (then nothing is left).
        """
        self.remove()
        self.executions = 0
        self._set_root(Path(tempfile.mkdtemp(prefix="interlock-demo-")))
        try:
            self._build()
        except BaseException:
            self.remove()
            raise

    # -- one run -----------------------------------------------------------------------------

    def _issue(self, principal: str, *, expired: bool = False) -> str:
        issuer = CapabilityIssuer(self._root_private)
        now = datetime.now(UTC)
        if expired:
            return issuer.issue(
                principal=principal,
                rights=[Right.parse("tool.call:Tool::*")],
                expires_at=now - timedelta(minutes=1),
                now=now - timedelta(minutes=16),
            )
        return issuer.issue(
            principal=principal,
            rights=[Right.parse("tool.call:Tool::*")],
            expires_at=now + timedelta(minutes=5),
            now=now,
        )

    def _request(self, scenario: str) -> tuple[dict[str, Any] | bytes, str | None, str]:
        """The scenario's request, the capability it presents (None: none) and a summary of
        that capability."""
        if scenario == "malformed":
            raw = (
                b'{"principal": "root", "action": "tool.call", "resource": "everything",'
                b' "sudo": true}'
            )
            return raw, None, "none"
        if scenario == "sub-agent":
            root_public = self._root_public
            token = attenuate(
                self._issue(RESEARCHER),
                rights=[Right.parse("tool.call:Tool::summarize")],
                expires_at=datetime.now(UTC) + timedelta(minutes=5),
                parent=self._parent_allowed,
                delegate_to=SUMMARIZER,
                root_public_raw=root_public,
            )
            req = _tool(SUMMARIZER, "summarize", token, parent=self._parent_allowed)
            return req, token, "the researcher's, attenuated to tool.call:Tool::summarize"
        if scenario == "expired":
            token = self._issue(RESEARCHER, expired=True)
            return _tool(RESEARCHER, "web_search", token), token, "expired a minute ago"
        if scenario == "no-permit":
            token = self._issue(SUMMARIZER)
            return _tool(SUMMARIZER, "send_email", token), token, "tool.call:Tool::*, 5 min"
        token = self._issue(RESEARCHER)
        summary = "tool.call:Tool::*, 5 min"
        if scenario == "forbidden":
            return _tool(RESEARCHER, "delete_database", token), token, summary
        if scenario == "denied-parent":
            req = _tool(RESEARCHER, "web_search", token, parent=self._parent_denied)
            return req, token, summary
        return _tool(RESEARCHER, "web_search", token), token, summary

    def run(self, scenario: str, switches: Switches) -> dict[str, Any]:
        """Send ``scenario``'s request through a gate on this home with ``switches`` flipped;
        return its trace: ``scenario``, ``switches``, ``request`` (without the token),
        ``setup`` (what each switch did), ``stages`` (:func:`stages_of`), ``decision``,
        ``executed``, ``output``, ``execution_status``, ``ledger_size``, ``elapsed_ms``.

        Every switch's edit is undone before this returns (revocations stay on the log: each
        run presents fresh tokens).

        Raises:
            KeyError: an unknown scenario.
            OSError, interlock.errors.Error: the throwaway home could not be opened or edited.
        """
        spec = SCENARIOS[scenario]
        started = time.perf_counter()
        request, token, cap_summary = self._request(scenario)
        setup: list[str] = []
        executed = False
        output: str | None = None
        with self._switched_files(switches, setup), Gate.open(self.home) as gate:
            if switches.revoke:
                if token is None:
                    setup.append("revoke: this request presents no capability to revoke")
                else:
                    index = gate.revoke(revocation_ids(token), reason="demo: revoke switch")
                    setup.append(
                        f"revoke: the capability was revoked on the demo ledger (index {index})"
                    )
            with self._ledger_lock(switches.locked_ledger, setup):
                try:
                    with gate.execution(request) as run:
                        # the action runs here only: after an allow durably recorded
                        output = _demo_action(_resource_id(request))
                        executed = True
                        self.executions += 1
                    decision = run.decision
                except Denied as exc:
                    decision = exc.decision
            if decision is None:  # entered without a decision cannot happen; deny loudly
                raise RuntimeError("the execution has no decision")
            status = None
            if decision.ledger_index is not None:
                row = gate.ledger.execution(decision.request_id)
                status = row.status if row is not None else None
            size = gate.ledger.size()
        return {
            "scenario": spec.to_json(),
            "switches": switches.to_json(),
            "request": _summary(request, cap_summary),
            "setup": setup,
            "stages": stages_of(decision),
            "decision": {**decision.to_json(), "recorded": decision.ledger_index is not None},
            "executed": executed,
            "output": output,
            "execution_status": status,
            "ledger_size": size,
            "elapsed_ms": round((time.perf_counter() - started) * 1000),
        }

    @contextlib.contextmanager
    def _switched_files(self, switches: Switches, setup: list[str]) -> Iterator[None]:
        """The stale-policy and changed-config edits of the home's files, undone on exit."""
        policy = self.home / "policy"
        current = self.root / "policy-current"
        cfg = self.home / "interlock.toml"
        original: str | None = None
        swapped = False
        try:
            if switches.stale_policy:
                os.replace(policy, current)
                swapped = True
                shutil.copytree(self._v1, policy)
                setup.append(
                    "stale policy: the policy folder now holds signed version 1; the demo"
                    " ledger activated version 2"
                )
            if switches.changed_config:
                original = cfg.read_text(encoding="utf-8")
                _write_private(cfg, original.replace(*CONFIG_EDIT, 1))
                setup.append(
                    "changed config: interlock.toml now says max_lineage_depth = 64, and the"
                    " node was not re-attested"
                )
            yield
        finally:
            if original is not None:
                _write_private(cfg, original)
            if swapped:
                shutil.rmtree(policy, ignore_errors=True)
                os.replace(current, policy)

    @contextlib.contextmanager
    def _ledger_lock(self, on: bool, setup: list[str]) -> Iterator[None]:
        """Hold the home's SQLite write lock from a second connection (the locked-ledger
        switch). The one place outside a storage driver that runs SQL: it injects a fault."""
        if not on:
            yield
            return
        conn = sqlite3.connect(self.home / "ledger.db", timeout=2.0, isolation_level=None)
        try:
            conn.execute("BEGIN EXCLUSIVE")
            setup.append(
                "locked ledger: a second connection holds ledger.db's write lock while the"
                " gate appends"
            )
            yield
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            conn.close()


def _write_private(path: Path, text: str) -> None:
    """Replace ``path``'s text in place (it keeps its 0600 mode)."""
    with path.open("w", encoding="utf-8") as fh:
        fh.write(text)


def _tool(principal: str, tool: str, token: str, *, parent: str | None = None) -> dict[str, Any]:
    req: dict[str, Any] = {
        "principal": principal,
        "action": "tool.call",
        "resource": {"type": "Tool", "id": tool},
        "args": {"query": "fail-closed agent governance"},
        "capability": token,
    }
    if parent is not None:
        req["parent"] = parent
    return req


def _resource_id(request: Mapping[str, Any] | bytes) -> str:
    if isinstance(request, bytes):
        return "(raw bytes)"
    resource = request.get("resource")
    return str(resource.get("id")) if isinstance(resource, dict) else "?"


def _summary(request: Mapping[str, Any] | bytes, capability: str) -> dict[str, Any]:
    """What the page shows of the request: never the token itself."""
    if isinstance(request, bytes):
        return {"raw": request.decode("utf-8", "replace"), "capability": capability}
    out = {k: v for k, v in request.items() if k != "capability"}
    out["capability"] = capability
    return out
