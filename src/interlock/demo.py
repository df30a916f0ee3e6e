"""``interlock demo``: a scripted scenario in a fresh temporary home.

    result = run_demo(console=None)
    result.ok
    # True

It shows, end to end, what Interlock establishes or refuses: an allowed tool call, a forbidden
one, one with no permit, an expired capability, a sub-agent inside and then outside its
attenuated capability, the child of a denied parent, a malformed request; then a full ledger
verification, a replay, an offline evidence check — and a tampered copy of the ledger failing
verification at the right index.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from interlock.audit import proof_bundle, verify_ledger
from interlock.bootstrap import init_home
from interlock.capability import CapabilityIssuer, Right, attenuate
from interlock.core.model import Decision
from interlock.errors import VerificationError
from interlock.gate import Gate
from interlock.ledger.storage import open_store
from interlock.ledger.verify import verify_proof_bundle
from interlock.replay import replay
from interlock.trust import keys

RESEARCHER = "spiffe://acme.test/agent/researcher"
SUMMARIZER = "spiffe://acme.test/agent/researcher/summarizer"


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    scenario: str
    principal: str
    action: str
    resource: str
    expected: str  # "allow" or a reason code
    decision: Decision

    @property
    def got(self) -> str:
        return "allow" if self.decision.allowed else self.decision.reasons[0].code.value

    @property
    def ok(self) -> bool:
        return self.got == self.expected


@dataclass(slots=True)
class DemoResult:
    steps: list[Step] = field(default_factory=list)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps) and all(ok for _, ok, _ in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "steps": [
                {
                    "scenario": s.scenario,
                    "principal": s.principal,
                    "action": s.action,
                    "resource": s.resource,
                    "expected": s.expected,
                    "got": s.got,
                    "decision": s.decision.to_json(),
                }
                for s in self.steps
            ],
            "checks": [{"check": n, "ok": ok, "detail": d} for n, ok, d in self.checks],
        }


def _request(
    principal: str,
    tool: str,
    token: str,
    parent: str | None = None,
    action: str = "tool.call",
    rtype: str = "Tool",
) -> dict[str, Any]:
    req: dict[str, Any] = {
        "principal": principal,
        "action": action,
        "resource": {"type": rtype, "id": tool},
        "args": {"query": "fail-closed agent governance"},
        "capability": token,
    }
    if parent is not None:
        req["parent"] = parent
    return req


def run_demo(console: Console | None = None, workdir: Path | None = None) -> DemoResult:
    """Run the scenario; print it to ``console`` if given. Returns every decision and check."""
    tmp = Path(tempfile.mkdtemp(prefix="interlock-demo-")) if workdir is None else workdir
    try:
        return _run(tmp, console)
    finally:
        if workdir is None:
            shutil.rmtree(tmp, ignore_errors=True)


def _run(tmp: Path, console: Console | None) -> DemoResult:
    home = init_home(tmp / "home", origin="interlock.local/demo")
    result = DemoResult()
    if console:
        console.print(f"[bold]Interlock demo[/] — fresh home at {home.path}\n")
    issuer = CapabilityIssuer(keys.private_raw(home.private_key("biscuit-root")))
    now = datetime.now(UTC)
    token = issuer.issue(
        principal=RESEARCHER,
        rights=[Right.parse("tool.call:Tool::*"), Right.parse("http.request:Host::*")],
        expires_at=now + timedelta(minutes=15),
        now=now,
    )
    expired = issuer.issue(
        principal=RESEARCHER,
        rights=[Right.parse("tool.call:Tool::*")],
        expires_at=now - timedelta(minutes=1),
        now=now - timedelta(minutes=16),
    )

    with Gate.open(home.path) as gate:

        def step(scenario: str, req: dict[str, Any] | bytes, expected: str) -> Decision:
            d = gate.decide(req)
            if isinstance(req, dict):
                res = req.get("resource", {})
                who, act, what = (
                    req.get("principal", "?"),
                    req.get("action", "?"),
                    f"{res.get('type')}::{res.get('id')}",
                )
            else:
                who, act, what = "(raw bytes)", "-", "-"
            result.steps.append(
                Step(
                    scenario=scenario,
                    principal=who,
                    action=act,
                    resource=what,
                    expected=expected,
                    decision=d,
                )
            )
            return d

        allowed = step("allowed tool call", _request(RESEARCHER, "web_search", token), "allow")
        forbidden = step(
            "forbidden by policy", _request(RESEARCHER, "delete_database", token), "POLICY_FORBID"
        )
        step(
            "no policy permits it",
            _request(RESEARCHER, "api.example.com", token, action="http.request", rtype="Host"),
            "POLICY_NO_PERMIT",
        )
        step(
            "expired capability", _request(RESEARCHER, "web_search", expired), "CAPABILITY_EXPIRED"
        )
        sub_token = attenuate(
            token,
            rights=[Right.parse("tool.call:Tool::summarize")],
            expires_at=now + timedelta(minutes=5),
            parent=allowed.request_id,
            delegate_to=SUMMARIZER,
            root_public_raw=keys.public_raw(home.private_key("biscuit-root")),
            now=now,
        )
        step(
            "sub-agent inside its attenuated capability",
            _request(SUMMARIZER, "summarize", sub_token, parent=allowed.request_id),
            "allow",
        )
        step(
            "sub-agent steps outside it",
            _request(SUMMARIZER, "web_search", sub_token, parent=allowed.request_id),
            "CAPABILITY_INSUFFICIENT",
        )
        step(
            "child of a denied parent",
            _request(RESEARCHER, "web_search", token, parent=forbidden.request_id),
            "LINEAGE_BROKEN",
        )
        step(
            "malformed request",
            b'{"principal": "root", "action": "tool.call", "resource": "everything", "sudo": true}',
            "MALFORMED_REQUEST",
        )

        if console:
            _print_steps(console, result.steps)

        # the ledger: verify everything, replay every decision, prove one entry offline
        try:
            rep = verify_ledger(
                gate.ledger,
                gate.vkey,
                state_keys=(
                    keys.public_raw(gate.home.private_key("node")),
                    keys.public_raw(gate.home.private_key("biscuit-root")),
                ),
            )
            result.checks.append(
                (
                    "ledger verify",
                    True,
                    f"{rep.entries} entries, {rep.checkpoints} signed checkpoints; the"
                    " governance state is the projection of the log",
                )
            )
        except VerificationError as exc:
            result.checks.append(("ledger verify", False, exc.diagnostics()))
        rr = replay(
            gate.ledger,
            gate.home.trusted_policy_keys(),
            node_public=keys.public_raw(gate.home.private_key("node")),
        )
        result.checks.append(
            (
                "ledger replay",
                rr.ok,
                f"{rr.matched}/{rr.replayed} decisions re-decided byte-identical",
            )
        )
        attested, env, problem = gate.attestation()
        result.checks.append(
            (
                "runtime attestation",
                attested is not None and problem is None and bool(env and env["attested"]),
                f"platform {attested.platform[:16]}… trusted, node-signed record on the ledger"
                if attested is not None
                else f"not attested: {problem}",
            )
        )
        assert allowed.ledger_index is not None  # noqa: S101 - demo narrative, checked above
        evidence = proof_bundle(gate.ledger, allowed.ledger_index)
        vkey = gate.vkey
    proof_file = tmp / "allowed.tlog-proof"
    proof_file.write_text(evidence, encoding="utf-8")
    try:
        entry = verify_proof_bundle(proof_file.read_text(encoding="utf-8"), vkey)
        result.checks.append(
            (
                "offline receipt check",
                entry.data.find(allowed.request_id.encode()) >= 0,
                f"entry {entry.index} proven in a tree of {entry.tree_size}"
                " with only the verifier key",
            )
        )
    except VerificationError as exc:
        result.checks.append(("offline receipt check", False, exc.diagnostics()))

    # an attacker edits one decision in a copy of the ledger: verification names the entry
    tampered = tmp / "tampered.db"
    shutil.copy(home.ledger_path, tampered)
    for suffix in ("-wal", "-shm"):
        src = Path(str(home.ledger_path) + suffix)
        if src.exists():
            shutil.copy(src, Path(str(tampered) + suffix))
    target = forbidden.ledger_index or 0
    with sqlite3.connect(tampered) as conn:
        conn.execute("DROP TRIGGER entries_no_update")
        conn.execute(
            "UPDATE entries SET data = CAST(replace(CAST(data AS TEXT), '\"deny\"', '\"allow\"')"
            " AS BLOB) WHERE idx = ?",
            (target,),
        )
    led = open_store(tampered, signer=None, durability="full")
    try:
        verify_ledger(led, vkey)
        result.checks.append(
            ("tampered copy detected", False, "verification passed on a tampered ledger")
        )
    except VerificationError as exc:
        bad = exc.evidence.get("index")
        result.checks.append(
            (
                "tampered copy detected",
                bad == target,
                f"verification fails at index {bad}: {exc.message}",
            )
        )
    finally:
        led.close()

    if console:
        console.print()
        for name, ok, detail in result.checks:
            mark = "[bold green]✓[/]" if ok else "[bold red]✗[/]"
            console.print(f"{mark} [bold]{name}[/]: {detail}")
        console.print()
        verdict = (
            "[bold green]Demo complete: every outcome as expected.[/]"
            if result.ok
            else "[bold red]Demo FAILED[/]"
        )
        console.print(verdict)
    return result


def _print_steps(console: Console, steps: list[Step]) -> None:
    t = Table(title="Every action passes the gate before it runs")
    t.add_column("#", justify="right")
    t.add_column("scenario")
    t.add_column("agent → resource")
    t.add_column("decision", no_wrap=True)
    t.add_column("ledger", justify="right")
    for i, s in enumerate(steps, 1):
        d = s.decision
        verdict = (
            "[bold green]ALLOW[/]" if d.allowed else f"[bold red]DENY[/] {d.reasons[0].code.value}"
        )
        if not s.ok:
            verdict += " [red](unexpected)[/]"
        who = s.principal.rsplit("/", 1)[-1] if s.principal.startswith("spiffe://") else s.principal
        t.add_row(
            str(i),
            s.scenario,
            f"{who} → {s.resource}",
            verdict,
            "-" if d.ledger_index is None else str(d.ledger_index),
        )
    console.print(t)
    console.print("[dim]Why each denial happened (the detail the ledger and operator see):[/]")
    for s in steps:
        if not s.decision.allowed:
            r = s.decision.reasons[0]
            console.print(f"  [bold]{r.code.value}[/] ({s.scenario}): {r.detail}")
