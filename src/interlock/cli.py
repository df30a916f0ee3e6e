"""The ``interlock`` command line: the only place that prints or exits.

Exit codes (DESIGN §9): 0 allow/success, 1 deny or verification failure, 2 usage error.
Every command that prints a result takes ``--json``. Every command calls a function that the
tests also call; nothing here decides anything.
"""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from interlock.errors import Error

app = typer.Typer(
    name="interlock",
    help="Fail-closed execution governance for AI agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
token_app = typer.Typer(
    help="Issue, attenuate, inspect and revoke capability tokens.", no_args_is_help=True
)
policy_app = typer.Typer(help="Sign, validate, test and diff policy bundles.", no_args_is_help=True)
ledger_app = typer.Typer(help="Verify, prove, export and replay the ledger.", no_args_is_help=True)
receipt_app = typer.Typer(help="Verify evidence bundles offline.", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(policy_app, name="policy")
app.add_typer(ledger_app, name="ledger")
app.add_typer(receipt_app, name="receipt")
quarantine_app = typer.Typer(
    help="Quarantine principals: every action they request is denied.", no_args_is_help=True
)
kill_switch_app = typer.Typer(
    help="The kill switch: deny every action and terminate every supervised run.",
    no_args_is_help=True,
)
app.add_typer(quarantine_app, name="quarantine")
app.add_typer(kill_switch_app, name="kill-switch")
attest_app = typer.Typer(
    help="Runtime attestation: measure, verify and trust this node's environment.",
    no_args_is_help=True,
)
boundary_app = typer.Typer(
    help="Trust boundaries ([[boundaries]] in interlock.toml) and restrictions.",
    no_args_is_help=True,
)
app.add_typer(attest_app, name="attest")
app.add_typer(boundary_app, name="boundary")
trust_app = typer.Typer(
    help="Trust settings: kept on the ledger, changed only by records signed with the root key.",
    no_args_is_help=True,
)
app.add_typer(trust_app, name="trust")

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

HomeOpt = Annotated[
    Path | None,
    typer.Option(
        "--home",
        help="Governance home (default: $INTERLOCK_HOME or ./.interlock).",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]

EXIT_OK, EXIT_DENY, EXIT_USAGE = 0, 1, 2


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def _emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True) + "\n")


def _gate(home: Path | None) -> Any:
    from interlock.gate import Gate

    try:
        return Gate.open(home)
    except Error as exc:
        _fail(exc.diagnostics())


def _audit(home: Path | None, *, sign: bool = False) -> Any:
    """The ledger without a gate (no policy reload, no appends). A ledger that cannot be
    opened, or (for signing) fails its check, is a verification failure: exit 1."""
    from interlock.audit import open_for_audit
    from interlock.errors import ConfigError

    try:
        return open_for_audit(home, sign=sign)
    except ConfigError as exc:
        _fail(exc.diagnostics())
    except Error as exc:
        _fail(exc.diagnostics(), EXIT_DENY)


_TTL_RE = re.compile(r"^(\d+)([smhd])\Z")


def parse_ttl(text: str) -> timedelta:
    """``30s``, ``15m``, ``2h``, ``7d`` → timedelta.

    Raises:
        typer.BadParameter: on anything else.
    """
    m = _TTL_RE.match(text.strip())
    if not m:
        raise typer.BadParameter(f"{text!r} is not a duration like 30s, 15m, 2h or 7d")
    n, unit = int(m.group(1)), m.group(2)
    return timedelta(**{{"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[unit]: n})


def _read_token(value: str) -> str:
    if value == "-":
        return sys.stdin.read().strip()
    if value.startswith("@"):
        try:
            return Path(value[1:]).read_text(encoding="utf-8").strip()
        except OSError as exc:
            _fail(f"cannot read token file {value[1:]}: {exc.strerror}")
    return value.strip()


# -- init ------------------------------------------------------------------------------------------


@app.command()
def init(
    home: HomeOpt = None,
    origin: Annotated[
        str | None, typer.Option(help="Log origin (default interlock.local/<id>).")
    ] = None,
    durability: Annotated[str, typer.Option(help="full (fsync per commit) or process.")] = "full",
    json_: JsonOpt = False,
) -> None:
    """Create a home: keys (0600), interlock.toml, a signed default policy, the ledger."""
    from interlock.bootstrap import init_home
    from interlock.home import default_home

    path = default_home(home)
    try:
        h = init_home(path, origin=origin, durability=durability)
    except Error as exc:
        _fail(exc.diagnostics())
    from interlock.gate import Gate

    with Gate.open(h.path) as gate:
        vkey = gate.vkey
    if json_:
        _emit_json({"home": str(h.path), "origin": h.config.origin, "vkey": vkey})
        return
    out.print(f"[green]Initialised[/] Interlock home at [bold]{h.path}[/]")
    out.print(f"  log origin     {h.config.origin}")
    out.print(f"  verifier key   {vkey}")
    out.print("  policy         signed default bundle (version 1) in policy/")
    out.print(
        f"Next: interlock token issue --home {h.path} --principal spiffe://acme.test/agent/researcher"
        " --right 'tool.call:Tool::*' --ttl 15m"
    )


# -- decide ----------------------------------------------------------------------------------------


def _print_decision(d: Any) -> None:
    colour = "green" if d.allowed else "red"
    out.print(f"[bold {colour}]{d.effect.value.upper()}[/]")
    for r in d.reasons:
        pol = f" [dim](policy {r.policy})[/]" if r.policy else ""
        out.print(f"  [bold]{r.code.value}[/]: {r.detail}{pol}")
    out.print(f"  decision hash  {d.decision_hash}")
    idx = "not recorded" if d.ledger_index is None else str(d.ledger_index)
    out.print(f"  ledger index   {idx}")
    out.print(f"  request id     {d.request_id}")
    if d.break_glass is not None:
        bg = d.break_glass
        err.print(
            f"[bold yellow]WARNING: BREAK-GLASS[/] this allow overrode"
            f" {bg.get('overrode', {}).get('code')} (scope {bg.get('scope')}, reason"
            f" {bg.get('reason')!r}, signer {str(bg.get('signer'))[:16]}…); it is on the ledger",
            soft_wrap=True,
        )


@app.command()
def decide(
    file: Annotated[str, typer.Argument(help="Request JSON file, or - for stdin.")] = "-",
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Decide one action request and record it. Exit 0 allow, 1 deny, 2 usage error."""
    if file == "-":
        raw = sys.stdin.buffer.read()
    else:
        try:
            raw = Path(file).read_bytes()
        except OSError as exc:
            _fail(f"cannot read {file}: {exc.strerror}")
    from interlock.errors import HomeMissing
    from interlock.gate import Gate

    try:
        gate = Gate.open(home)
    except HomeMissing as exc:
        _fail(exc.diagnostics())
    except Error as exc:
        # no gate, no decision: a deny with the code of what stopped it (never a traceback)
        _open_denied(exc, json_)
        raise typer.Exit(EXIT_DENY) from None
    with gate:
        d = gate.decide(raw)
    if json_:
        _emit_json(d.to_json())
    else:
        _print_decision(d)
    raise typer.Exit(EXIT_OK if d.allowed else EXIT_DENY)


def _reason_code(exc: Error) -> str:
    from interlock.core.model import ReasonCode

    return ReasonCode.of(exc).value


def _open_denied(exc: Error, json_: bool) -> None:
    """Report a home that could not be opened as a deny, with its reason code."""
    code = _reason_code(exc)
    if json_:
        _emit_json(
            {
                "effect": "deny",
                "reasons": [{"code": code, "detail": exc.diagnostics()}],
                "ledger_index": None,
                "recorded": False,
            }
        )
    else:
        out.print("[bold red]DENY[/]")
        out.print(f"  [bold]{code}[/]: {exc.diagnostics()}", soft_wrap=True)
        out.print("  ledger index   not recorded (the home could not be opened)")


# -- approve ---------------------------------------------------------------------------------------


@app.command()
def approve(
    digest: Annotated[
        str, typer.Argument(help="The request digest named by the APPROVAL_REQUIRED denial.")
    ],
    key: Annotated[
        Path,
        typer.Option(
            "--key", help="The approver's Ed25519 private key (PEM, mode 0600).", show_default=False
        ),
    ],
    ttl: Annotated[str, typer.Option(help="How long the approval is valid: 30s, 10m, 2h.")] = "10m",
    json_: JsonOpt = False,
) -> None:
    """Sign an approval of one exact request; resubmit the request with it in "approval".

    The approver's public key (hex) must be listed in interlock.toml [approvals] keys.
    """
    from interlock.trust import keys
    from interlock.trust.approval import make_approval

    try:
        duration = parse_ttl(ttl)
    except typer.BadParameter as exc:
        _fail(str(exc))
    if duration.total_seconds() <= 0:
        _fail("--ttl must be positive")
    try:
        private = keys.load_private_key(key)
    except Error as exc:
        _fail(exc.diagnostics())
    expires = datetime.now(UTC) + duration
    expires_at = int(expires.timestamp())
    try:
        text = make_approval(digest.strip(), private, expires_at=expires_at)
    except ValueError as exc:
        _fail(str(exc))
    if json_:
        _emit_json(
            {
                "approval": text,
                "request_digest": digest.strip(),
                "approver": keys.public_raw(private).hex(),
                "expires": datetime.fromtimestamp(expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        )
        return
    sys.stdout.write(text + "\n")


@app.command("break-glass")
def break_glass(
    scope: Annotated[
        str,
        typer.Option(help="ACTION:TYPE::ID the override covers (* for any action, TYPE::* ids)."),
    ],
    reason: Annotated[str, typer.Option(help="Why (recorded with every use).")],
    key: Annotated[
        Path,
        typer.Option(
            "--key",
            help="A break-glass Ed25519 private key (PEM, mode 0600) listed in [break_glass] keys.",
            show_default=False,
        ),
    ],
    ttl: Annotated[str, typer.Option(help="How long it is valid: 5m, 15m, 1h (at most 24h).")] = (
        "15m"
    ),
    json_: JsonOpt = False,
) -> None:
    """Sign a short-lived override of policy denials within one scope; put it in a request's
    "break_glass" (or `interlock exec --break-glass`).

    It lifts POLICY_NO_PERMIT, POLICY_FORBID and APPROVAL_REQUIRED only — never a bad
    capability, quarantine, boundary, untrusted environment, kill switch or ledger failure.
    Every use is recorded on the ledger and printed as a warning.
    """
    from interlock.trust import keys
    from interlock.trust.breakglass import MAX_TTL_S, make_break_glass

    try:
        duration = parse_ttl(ttl)
    except typer.BadParameter as exc:
        _fail(str(exc))
    if not 0 < duration.total_seconds() <= MAX_TTL_S:
        _fail("--ttl must be positive and at most 24h: break-glass is for an incident")
    try:
        private = keys.load_private_key(key)
    except Error as exc:
        _fail(exc.diagnostics())
    issued_at = int(datetime.now(UTC).timestamp())
    expires_at = issued_at + int(duration.total_seconds())
    try:
        text = make_break_glass(scope, reason, private, issued_at=issued_at, expires_at=expires_at)
    except ValueError as exc:
        _fail(str(exc))
    err.print(
        f"[bold yellow]WARNING: BREAK-GLASS[/] override for {scope} signed, valid {ttl};"
        " every use is recorded on the ledger",
        soft_wrap=True,
    )
    if json_:
        _emit_json(
            {
                "break_glass": text,
                "scope": scope,
                "reason": reason,
                "signer": keys.public_raw(private).hex(),
                "expires": datetime.fromtimestamp(expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        )
        return
    sys.stdout.write(text + "\n")


# -- attest ----------------------------------------------------------------------------------------


def _attestation_view(home: Path | None) -> dict[str, Any]:
    """Measure now, and compare with the trusted set and the newest ``node.attested`` record
    (its node signature checked)."""
    from interlock.gate import verify_governance
    from interlock.home import CONFIG_NAME, Home, default_home
    from interlock.policy.bundle import load_bundle
    from interlock.trust import keys
    from interlock.trust.attestation import measure

    try:
        h = Home.load(default_home(home))
    except Error as exc:
        _fail(exc.diagnostics())
    try:
        bundle_digest: str | None = load_bundle(h.policy_dir, h.trusted_policy_keys()).digest
    except (Error, OSError):
        bundle_digest = None
    try:
        m = measure(h.path / CONFIG_NAME, bundle_digest)
    except (Error, OSError) as exc:
        _fail(f"cannot measure this environment: {exc}", EXIT_DENY)
    node_key = h.private_key("node")
    view = _audit(home)
    try:
        last: dict[str, Any] | None = None
        last_index: int | None = None
        for idx in range(view.ledger.size() - 1, -1, -1):
            rec = json.loads(view.ledger.entry(idx))
            if rec.get("type") == "governance" and rec.get("event") == "node.attested":
                last, last_index = rec, idx
                break
    finally:
        view.close()
    recorded: dict[str, Any] | None = None
    if last is not None:
        try:
            verify_governance(last, keys.public_raw(node_key))
            sig_ok = True
        except Error:
            sig_ok = False
        recorded = {
            "index": last_index,
            "platform": last.get("platform"),
            "digest": last.get("digest"),
            "ts": last.get("ts"),
            "problem": last.get("problem"),
            "signature_ok": sig_ok,
        }
    return {
        "measurement": m.to_json(),
        "platform": m.platform,
        "digest": m.digest,
        "trusted": m.platform in h.config.trusted_platforms,
        "enforce": h.config.attestation_enforce,
        "recorded": recorded,
    }


@attest_app.command("show")
def attest_show(home: HomeOpt = None, json_: JsonOpt = False) -> None:
    """Measure this node now: Interlock's files, interlock.toml, the policy bundle, Python."""
    v = _attestation_view(home)
    if json_:
        _emit_json(v)
        return
    m = v["measurement"]
    verdict = "[green]trusted[/]" if v["trusted"] else "[red]not trusted[/]"
    out.print(f"platform     {v['platform']}  {verdict}")
    out.print(f"measurement  {v['digest']}")
    out.print(f"  interlock  {m['interlock']}")
    out.print(f"  config     {m['config']}")
    out.print(f"  policy     {m['policy']}")
    out.print(f"  python     {m['python']}")
    rec = v["recorded"]
    if rec is not None:
        out.print(f"last attested at ledger index {rec['index']} ({rec['ts']})")


@attest_app.command("verify")
def attest_verify(home: HomeOpt = None, json_: JsonOpt = False) -> None:
    """Exit 0 when the measured platform is trusted and equals the last node-signed
    attestation on the ledger; else 1, saying what differs."""
    v = _attestation_view(home)
    problems: list[str] = []
    if not v["trusted"]:
        problems.append(
            f"platform {v['platform']} is not in [attestation] trusted (run `interlock attest"
            " trust` if this environment is intended)"
        )
    rec = v["recorded"]
    if rec is None:
        problems.append("no node.attested record on the ledger (start a gate once)")
    else:
        if not rec["signature_ok"]:
            problems.append(
                f"the attestation at index {rec['index']} is not signed by the node key"
            )
        if rec["platform"] != v["platform"]:
            problems.append(
                f"the platform differs from the one attested at index {rec['index']}"
                f" ({str(rec['platform'])[:16]}…); a running gate denies ENVIRONMENT_UNTRUSTED"
            )
        elif rec["problem"]:
            problems.append(f"the last attestation recorded a problem: {rec['problem']}")
    ok = not problems
    if json_:
        _emit_json({**v, "ok": ok, "problems": problems})
    else:
        if ok:
            out.print(f"[bold green]OK[/] platform {v['platform']} is trusted and attested")
        for p in problems:
            out.print(f"[bold red]FAIL[/] {p}", soft_wrap=True)
    raise typer.Exit(EXIT_OK if ok else EXIT_DENY)


@attest_app.command("trust")
def attest_trust(home: HomeOpt = None, json_: JsonOpt = False) -> None:
    """Add this node's current platform digest to [attestation] trusted (after an intended
    upgrade or config change); running gates re-attest when restarted."""
    from interlock.home import CONFIG_NAME, default_home
    from interlock.trust.attestation import trust_current

    cfg = default_home(home) / CONFIG_NAME
    try:
        digest = trust_current(cfg)
    except (Error, OSError) as exc:
        _fail(f"cannot update {cfg}: {exc}")
    # the trusted platforms are a trust setting: on the ledger, signed with the root key
    from interlock.home import Home

    trusted = sorted(Home.load(default_home(home)).config.trusted_platforms)
    with _audit(home, sign=True) as view:
        import time

        from interlock.governance import record_trust

        try:
            record_trust(
                view.ledger, view.home, {"attestation.trusted": trusted}, ns=time.time_ns()
            )
        except Error as exc:
            _fail(exc.diagnostics(), EXIT_DENY)
    if json_:
        _emit_json({"trusted": digest})
    else:
        out.print(f"trusted platform {digest} (recorded on the ledger)")


# -- boundaries ------------------------------------------------------------------------------------


@boundary_app.command("list")
def boundary_list(home: HomeOpt = None, json_: JsonOpt = False) -> None:
    """The configured boundaries and the principals restricted under them."""
    from interlock.home import Home, default_home

    try:
        h = Home.load(default_home(home))
    except Error as exc:
        _fail(exc.diagnostics())
    view = _audit(home)
    try:
        restricted = sorted(view.ledger.restrictions())
    finally:
        view.close()
    if json_:
        _emit_json(
            {
                "boundaries": [b.to_json() for b in h.config.boundaries],
                "restricted": [{"principal": p, "boundary": b} for p, b in restricted],
            }
        )
        return
    t = Table(title="Trust boundaries")
    for col in ("name", "principals", "actions", "resources", "attested", "on violation"):
        t.add_column(col)
    for b in h.config.boundaries:
        t.add_row(
            b.name,
            "\n".join(b.principals),
            ", ".join(b.actions),
            ", ".join(b.resources),
            "yes" if b.attested else "no",
            b.on_violation
            + (f" → {', '.join(b.restricted_actions)}" if b.restricted_actions else ""),
        )
    out.print(t)
    for p, b in restricted:
        out.print(f"restricted: {p} under {b}")


@boundary_app.command("release")
def boundary_release(
    principal: Annotated[str, typer.Argument(help="The restricted SPIFFE ID.")],
    boundary: Annotated[str, typer.Option(help="The boundary it is restricted under.")],
    reason: Annotated[str, typer.Option(help="Why (recorded).")] = "",
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Lift a restriction a boundary violation put on a principal (node-signed record)."""
    with _gate(home) as gate:
        try:
            index = gate.release_restriction(principal, boundary, reason)
        except Error as exc:
            _fail(exc.diagnostics())
    if json_:
        _emit_json({"principal": principal, "boundary": boundary, "ledger_index": index})
    else:
        out.print(f"released {principal} from boundary {boundary} (ledger index {index})")


# -- exec ------------------------------------------------------------------------------------------

_SECONDS_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s)?\Z")


def parse_seconds(text: str) -> float:
    """``1s``, ``200ms``, ``0.2s`` or a bare number of seconds → seconds.

    Raises:
        typer.BadParameter: on anything else.
    """
    m = _SECONDS_RE.match(text.strip())
    if not m:
        raise typer.BadParameter(f"{text!r} is not a duration like 1s, 0.2s or 200ms")
    value = float(m.group(1))
    return value / 1000 if m.group(2) == "ms" else value


def parse_resource(text: str) -> dict[str, str]:
    """``Host::localhost`` or ``Host::"localhost"`` (Cedar's form) → ``{type, id}``.

    Raises:
        typer.BadParameter: without a ``TYPE::`` prefix or with an empty id.
    """
    if text.endswith('"') and '::"' in text:
        rtype, _, rid = text[:-1].partition('::"')
    else:
        rtype, _, rid = text.rpartition("::")
    if not rtype or not rid:
        raise typer.BadParameter(f"{text!r} is not a resource like Host::localhost")
    return {"type": rtype, "id": rid}


@app.command(
    "exec",
    context_settings={"allow_interspersed_args": False},
)
def exec_(
    command: Annotated[
        list[str], typer.Argument(help="The command and its arguments (after --).", metavar="CMD")
    ],
    capability: Annotated[
        str,
        typer.Option(
            envvar="INTERLOCK_CAPABILITY",
            help="Token, @file, or - for stdin (or $INTERLOCK_CAPABILITY: keeps it out of ps).",
        ),
    ],
    principal: Annotated[
        str | None,
        typer.Option(
            envvar="INTERLOCK_PRINCIPAL", help="SPIFFE ID (default $INTERLOCK_PRINCIPAL)."
        ),
    ] = None,
    parent: Annotated[
        str | None,
        typer.Option(
            envvar="INTERLOCK_EXECUTION_ID",
            help="Parent execution id (default $INTERLOCK_EXECUTION_ID, set by a supervisor).",
        ),
    ] = None,
    resource: Annotated[str, typer.Option(help="TYPE::ID the command acts on.")] = (
        'Host::"localhost"'
    ),
    interval: Annotated[str, typer.Option(help="Re-verification interval: 1s, 200ms.")] = "1s",
    grace: Annotated[str, typer.Option(help="SIGTERM-to-SIGKILL grace period.")] = "2s",
    approval: Annotated[
        str | None,
        typer.Option(help="A signed approval from `interlock approve` (or @file), when required."),
    ] = None,
    break_glass_: Annotated[
        str | None,
        typer.Option(
            "--break-glass", help="A break-glass override from `interlock break-glass` (or @file)."
        ),
    ] = None,
    home: HomeOpt = None,
) -> None:
    """Run CMD only if shell.exec is allowed; re-verify it while it runs; kill it when not.

    Exit: the command's own code (128+N for signal N); 126 denied or not started (the reason is
    on stderr), 127 command not found, 2 usage error.
    """
    import os

    from interlock.runtime.supervisor import EXIT_CANNOT_EXECUTE, environment_digest, run_command

    if not principal:
        _fail("no principal: give --principal or set INTERLOCK_PRINCIPAL")
    every = parse_seconds(interval)
    patience = parse_seconds(grace)
    if every <= 0:
        _fail("--interval must be positive")
    request: dict[str, Any] = {
        "principal": principal,
        "action": "shell.exec",
        "resource": parse_resource(resource),
        "args": {"argv": list(command), "cwd": os.getcwd(), "env_sha256": environment_digest()},
        "capability": _read_token(capability),
    }
    if parent:
        request["parent"] = parent
    if approval:
        request["approval"] = _read_token(approval)
    if break_glass_:
        request["break_glass"] = _read_token(break_glass_)
    from interlock.gate import Gate

    try:
        gate = Gate.open(home)
    except Error as exc:  # no decision possible: the command does not run
        err.print(
            f"[bold red]interlock exec: denied[/] [bold]{_reason_code(exc)}[/]:"
            f" {exc.diagnostics()} [dim](not recorded: the home could not be opened)[/]",
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_CANNOT_EXECUTE) from None
    with gate:
        outcome = run_command(
            gate,
            request,
            command,
            interval=every,
            grace=patience,
            stdout=sys.stdout.buffer,
            stderr=sys.stderr.buffer,
        )
    r = outcome.reason
    bg = outcome.decision.break_glass
    if bg is not None:
        err.print(
            f"[bold yellow]interlock exec: WARNING: BREAK-GLASS[/] allowed by an override of"
            f" {bg.get('overrode', {}).get('code')} (scope {bg.get('scope')}, reason"
            f" {bg.get('reason')!r}); recorded on the ledger",
            soft_wrap=True,
        )
    if outcome.status in ("denied", "not_started") and r is not None:
        what = "denied" if outcome.status == "denied" else "not started"
        err.print(
            f"[bold red]interlock exec: {what}[/] [bold]{r.code.value}[/]: {r.detail}"
            f" [dim](request {outcome.request_id})[/]",
            soft_wrap=True,
        )
    elif outcome.status == "terminated" and r is not None:
        sent = " then ".join(outcome.signals) or "exited"
        err.print(
            f"[bold red]interlock exec: terminated[/] [bold]{r.code.value}[/]: {r.detail}"
            f" [dim](execution {outcome.request_id}, {sent})[/]",
            soft_wrap=True,
        )
    if outcome.record_error:
        err.print(
            f"[bold red]interlock exec: not recorded[/]: {outcome.record_error}", soft_wrap=True
        )
    raise typer.Exit(outcome.exit_code)


# -- tokens ----------------------------------------------------------------------------------------


def _parse_rights(rights: list[str]) -> list[Any]:
    from interlock.capability import Right

    try:
        return [Right.parse(r) for r in rights]
    except Error as exc:
        _fail(
            f"{exc.message} (a right looks like ACTION:TYPE::ID, e.g. tool.call:Tool::web_search)"
        )


@token_app.command("issue")
def token_issue(
    principal: Annotated[str, typer.Option(help="SPIFFE ID the token is bound to.")],
    right: Annotated[
        list[str], typer.Option("--right", help="ACTION:TYPE::ID (repeatable; * wildcards).")
    ],
    ttl: Annotated[str, typer.Option(help="Lifetime: 30s, 15m, 2h, 7d.")] = "15m",
    check: Annotated[
        list[str] | None, typer.Option("--check", help="Extra Datalog check (repeatable).")
    ] = None,
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Issue a capability token signed by the home's Biscuit root key."""
    from interlock.capability import CapabilityIssuer
    from interlock.home import Home, default_home
    from interlock.trust import keys

    rights = _parse_rights(right)
    try:
        h = Home.load(default_home(home))
        issuer = CapabilityIssuer(keys.private_raw(h.private_key("biscuit-root")))
        now = datetime.now(UTC)
        expires = now + parse_ttl(ttl)
        token = issuer.issue(
            principal=principal, rights=rights, expires_at=expires, checks=check or (), now=now
        )
    except Error as exc:
        _fail(exc.diagnostics())
    if json_:
        _emit_json({"token": token, "principal": principal, "expires_at": expires.isoformat()})
    else:
        sys.stdout.write(token + "\n")


@token_app.command("attenuate")
def token_attenuate(
    token: Annotated[str, typer.Argument(help="Token, @file, or - for stdin.")],
    right: Annotated[
        list[str] | None, typer.Option("--right", help="Narrower right (repeatable).")
    ] = None,
    ttl: Annotated[str | None, typer.Option(help="Shorter lifetime from now.")] = None,
    parent: Annotated[str | None, typer.Option(help="Bind to a parent execution id.")] = None,
    delegate_to: Annotated[
        str | None, typer.Option(help="Sub-agent principal (a SPIFFE ID under the holder's path).")
    ] = None,
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Narrow a token for a sub-agent (no private key needed; a token can only be narrowed)."""
    from interlock.capability import attenuate
    from interlock.home import Home, default_home
    from interlock.trust import keys

    rights = _parse_rights(right) if right else None
    now = datetime.now(UTC)
    expires = now + parse_ttl(ttl) if ttl else None
    try:
        # biscuit-python verifies a token before appending to it: the root *public* key
        root = keys.public_raw(Home.load(default_home(home)).private_key("biscuit-root"))
        child = attenuate(
            _read_token(token),
            root_public_raw=root,
            rights=rights,
            expires_at=expires,
            now=now,
            parent=parent,
            delegate_to=delegate_to,
        )
    except Error as exc:
        _fail(exc.diagnostics())
    if json_:
        _emit_json({"token": child})
    else:
        sys.stdout.write(child + "\n")


@token_app.command("inspect")
def token_inspect(
    token: Annotated[str, typer.Argument(help="Token, @file, or - for stdin.")],
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Show a token's principal, rights, expiry, parent binding and revocation ids."""
    from interlock.capability import inspect
    from interlock.home import Home, default_home
    from interlock.trust import keys

    root = None
    try:
        h = Home.load(default_home(home))
        root = keys.public_raw(h.private_key("biscuit-root"))
    except Error:
        root = None  # inspect without a home: shown as unverified
    try:
        info = inspect(_read_token(token), root)
    except Error as exc:
        _fail(exc.diagnostics(), EXIT_DENY)
    data = info.to_json()
    if json_:
        _emit_json(data)
        return
    t = Table(title="Capability token", show_header=False)
    for k, v in data.items():
        t.add_row(k, json.dumps(v) if not isinstance(v, str) else v)
    out.print(t)


@token_app.command("revoke")
def token_revoke(
    token: Annotated[str, typer.Argument(help="Token, @file, or - for stdin.")],
    reason: Annotated[str, typer.Option(help="Why (recorded on the ledger).")] = "",
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Revoke a token (and every token attenuated from it) by its revocation ids."""
    from interlock.capability import revocation_ids

    try:
        ids = revocation_ids(_read_token(token))
    except Error as exc:
        _fail(exc.diagnostics())
    with _gate(home) as gate:
        try:
            index = gate.revoke(ids, reason=reason)
        except Error as exc:
            _fail(exc.diagnostics(), EXIT_DENY)
    if json_:
        _emit_json({"revoked": list(ids), "ledger_index": index})
    else:
        out.print(
            f"[green]Revoked[/] {len(ids)} revocation id(s); recorded at ledger index {index}"
        )


# -- quarantine and kill switch --------------------------------------------------------------------

ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (recorded on the ledger).")]


def _spiffe(principal: str) -> str:
    from interlock.core.model import is_spiffe_id

    if not is_spiffe_id(principal):
        _fail(f"not a SPIFFE ID: {principal!r} (expected spiffe://trust-domain/path)")
    return principal


def _set_quarantine(principal: str, reason: str, on: bool, home: Path | None, json_: bool) -> None:
    principal = _spiffe(principal)
    if not reason.strip():
        _fail("--reason is required")
    with _gate(home) as gate:
        try:
            index = gate.quarantine(principal, reason, on=on)
        except Error as exc:
            _fail(exc.diagnostics(), EXIT_DENY)
    if json_:
        _emit_json({"principal": principal, "quarantined": on, "ledger_index": index})
    else:
        what = "[red]Quarantined[/]" if on else "[green]Released[/]"
        out.print(f"{what} {principal}; recorded at ledger index {index}")


@quarantine_app.command("add")
def quarantine_add(
    principal: Annotated[str, typer.Argument(help="SPIFFE ID of the principal.")],
    reason: ReasonOpt = "",
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Quarantine a principal: its requests and running executions are denied
    (PRINCIPAL_QUARANTINED)."""
    _set_quarantine(principal, reason, True, home, json_)


@quarantine_app.command("remove")
def quarantine_remove(
    principal: Annotated[str, typer.Argument(help="SPIFFE ID of the principal.")],
    reason: ReasonOpt = "",
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Release a quarantined principal."""
    _set_quarantine(principal, reason, False, home, json_)


@quarantine_app.command("list")
def quarantine_list(home: HomeOpt = None, json_: JsonOpt = False) -> None:
    """List the quarantined principals and the ledger index that quarantined each."""
    with _audit(home) as view:
        rows = [(p, i) for p, active, i in view.ledger.quarantines() if active]
    if json_:
        _emit_json([{"principal": p, "ledger_index": i} for p, i in rows])
        return
    if not rows:
        out.print("No principal is quarantined.")
        return
    t = Table(title="Quarantined principals")
    t.add_column("principal")
    t.add_column("ledger index", justify="right")
    for p, i in rows:
        t.add_row(p, str(i))
    out.print(t)


def _set_kill_switch(on: bool, reason: str, home: Path | None, json_: bool) -> None:
    if not reason.strip():
        _fail("--reason is required")
    with _gate(home) as gate:
        try:
            index = gate.kill_switch(on, reason)
        except Error as exc:
            _fail(exc.diagnostics(), EXIT_DENY)
    if json_:
        _emit_json({"kill_switch": on, "ledger_index": index})
    elif on:
        out.print(
            "[bold red]Kill switch ON[/]: every action is denied and supervised runs are"
            f" terminated; recorded at ledger index {index}"
        )
    else:
        out.print(f"[green]Kill switch off[/]; recorded at ledger index {index}")


@kill_switch_app.command("on")
def kill_switch_on(reason: ReasonOpt = "", home: HomeOpt = None, json_: JsonOpt = False) -> None:
    """Deny every action (POLICY_FORBID, policy kill-switch) and terminate every supervised
    run."""
    _set_kill_switch(True, reason, home, json_)


@kill_switch_app.command("off")
def kill_switch_off(reason: ReasonOpt = "", home: HomeOpt = None, json_: JsonOpt = False) -> None:
    """Turn the kill switch off: decisions are made by the pipeline again."""
    _set_kill_switch(False, reason, home, json_)


@kill_switch_app.command("status")
def kill_switch_status(home: HomeOpt = None, json_: JsonOpt = False) -> None:
    """Whether the kill switch is on."""
    with _audit(home) as view:
        on = view.ledger.trust_state()[3]
    if json_:
        _emit_json({"kill_switch": on})
    else:
        out.print("[bold red]Kill switch ON[/]" if on else "Kill switch off")


# -- policy ----------------------------------------------------------------------------------------


def _policy_dir(directory: Path | None, home: Path | None) -> Path:
    if directory is not None:
        return directory
    from interlock.home import default_home

    return default_home(home) / "policy"


@policy_app.command("sign")
def policy_sign(
    directory: Annotated[
        Path | None, typer.Argument(help="Bundle folder (default: <home>/policy).")
    ] = None,
    version: Annotated[int | None, typer.Option(help="Version (default: previous + 1).")] = None,
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Write manifest.json and its signature with the home's policy key."""
    from interlock.home import Home, default_home
    from interlock.policy.bundle import sign_bundle

    d = _policy_dir(directory, home)
    try:
        h = Home.load(default_home(home))
        manifest = sign_bundle(d, h.private_key("policy"), version=version)
    except Error as exc:
        _fail(exc.diagnostics())
    data = manifest.to_json()
    if json_:
        _emit_json(data)
    else:
        out.print(
            f"[green]Signed[/] {d} as version {data.get('version')}"
            f" ({len(data.get('files', {}))} files)"
        )


@policy_app.command("validate")
def policy_validate(
    directory: Annotated[
        Path | None, typer.Argument(help="Bundle folder (default: <home>/policy).")
    ] = None,
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Validate policies against the bundle's schema."""
    from interlock.policy.bundle import validate_bundle

    d = _policy_dir(directory, home)
    try:
        problems = validate_bundle(d)
    except Error as exc:
        _fail(exc.diagnostics(), EXIT_DENY)
    if json_:
        _emit_json({"valid": not problems, "errors": problems})
    elif problems:
        for p in problems:
            err.print(f"[red]✗[/] {p}")
    else:
        out.print(f"[green]✓[/] {d}: policies validate against the schema")
    raise typer.Exit(EXIT_DENY if problems else EXIT_OK)


@policy_app.command("test")
def policy_test(
    directory: Annotated[
        Path | None, typer.Argument(help="Bundle folder with tests/*.json.")
    ] = None,
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Run the request/expected-decision cases stored beside the policies."""
    from interlock.policy.testing import run_policy_tests

    d = _policy_dir(directory, home)
    try:
        results = run_policy_tests(d)
    except Error as exc:
        _fail(exc.diagnostics())
    failed = [r for r in results if not r.passed]
    if json_:
        _emit_json(
            {
                "passed": len(results) - len(failed),
                "failed": len(failed),
                "cases": [r.to_json() for r in results],
            }
        )
    else:
        t = Table(title=f"Policy tests: {d}")
        for col in ("case", "expected", "got", ""):
            t.add_column(col)
        for r in results:
            expected = r.expect + (f" {r.expect_code.value}" if r.expect_code else "")
            got = "allow" if r.result.permitted else f"deny {r.result.code}"
            t.add_row(r.name, expected, got, "[green]✓[/]" if r.passed else "[red]✗[/]")
        out.print(t)
        out.print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    raise typer.Exit(EXIT_DENY if failed or not results else EXIT_OK)


@policy_app.command("diff")
def policy_diff(
    old: Annotated[Path, typer.Argument(help="Old bundle folder.")],
    new: Annotated[Path, typer.Argument(help="New bundle folder.")],
    requests: Annotated[
        Path | None, typer.Option(help="JSON list of requests (default: recorded ones).")
    ] = None,
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Which requests change decision between two bundles (given, or recorded on the ledger)."""
    from interlock.policy.testing import diff_bundles

    if requests is not None:
        try:
            reqs = json.loads(requests.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            _fail(f"cannot read requests from {requests}: {exc}")
        if not isinstance(reqs, list):
            _fail("--requests must hold a JSON list of requests")
    else:
        from interlock.audit import recorded_requests

        with _audit(home) as view:
            reqs = recorded_requests(view.ledger)
    # the same request files `decide` takes: the gate-only fields do not reach Cedar
    reqs = [
        {k: v for k, v in r.items() if k not in ("capability", "parent", "traceparent")}
        if isinstance(r, dict)
        else r
        for r in reqs
    ]
    try:
        rows = diff_bundles(old, new, reqs)
    except Error as exc:
        _fail(exc.diagnostics())
    if json_:
        _emit_json({"requests": len(reqs), "changed": [r.to_json() for r in rows]})
    else:
        t = Table(title=f"{len(rows)} of {len(reqs)} request(s) change decision")
        for col in ("principal", "action", "resource", "old", "new"):
            t.add_column(col)
        for r in rows:
            j = r.to_json()
            req = j["request"]
            res = req.get("resource", {})
            t.add_row(
                str(req.get("principal")),
                str(req.get("action")),
                f"{res.get('type')}::{res.get('id')}",
                str(j["old"]),
                str(j["new"]),
            )
        out.print(t)
    raise typer.Exit(EXIT_DENY if rows else EXIT_OK)


# -- ledger ----------------------------------------------------------------------------------------


def _progress() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )


@ledger_app.command("verify")
def ledger_verify(
    home: HomeOpt = None,
    anchor: Annotated[
        list[Path] | None,
        typer.Option(
            "--checkpoint",
            help="A signed checkpoint kept outside the home (repeatable); the ledger must match.",
        ),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Recompute every hash, tile and checkpoint, and the governance state from the log;
    exit 1 naming the first bad index or state row."""
    from interlock.audit import home_anchor, verify_ledger

    anchors: list[str] = []
    for f in anchor or []:
        try:
            anchors.append(f.read_text(encoding="utf-8"))
        except OSError as exc:
            _fail(f"cannot read checkpoint {f}: {exc.strerror}")
    with _audit(home) as view:
        keys_ = (view.node_public, view.root_public)
        try:
            anchors.extend(home_anchor(view))
            if json_:
                rep = verify_ledger(view.ledger, view.vkey, anchors=anchors, state_keys=keys_)
            else:
                with _progress() as prog:
                    task = prog.add_task("verifying ledger", total=view.ledger.size() or 1)
                    rep = verify_ledger(
                        view.ledger,
                        view.vkey,
                        anchors=anchors,
                        progress=lambda n, t: prog.update(task, completed=n, total=t or 1),
                        state_keys=keys_,
                    )
        except Error as exc:
            index = exc.evidence.get("index")
            table, row = exc.evidence.get("table"), exc.evidence.get("row")
            if json_:
                _emit_json(
                    {
                        "ok": False,
                        "error": exc.message,
                        "index": index,
                        "table": table,
                        "row": row,
                        "code": _reason_code(exc)
                        if exc.reason_code != "INTERNAL_ERROR"
                        else "LEDGER_CORRUPT",
                    }
                )
            else:
                where = f"state table {table}, " if table else ""
                err.print(
                    f"[bold red]✗ ledger verification FAILED[/] at {where}index {index}:"
                    f" {exc.message}",
                    soft_wrap=True,
                )
            raise typer.Exit(EXIT_DENY) from None
    uncovered = rep.size - rep.covered
    data = {
        "ok": True,
        "entries": rep.entries,
        "checkpoints": rep.checkpoints,
        "root": rep.root.hex(),
        "size": rep.size,
        "covered": rep.covered,
        "uncovered": uncovered,
    }
    if json_:
        _emit_json(data)
        return
    out.print(
        f"[bold green]✓ ledger verified[/]: {rep.entries} entries,"
        f" {rep.checkpoints} signed checkpoints, root {rep.root.hex()[:16]}…; the governance"
        " state matches the log"
    )
    if uncovered:
        err.print(
            f"[yellow]![/] the last {uncovered} entries are not yet under a signed checkpoint"
            " (a running gate signs one within a second): only their hashes were checked"
        )


@ledger_app.command("vkey")
def ledger_vkey(
    node: Annotated[
        bool, typer.Option("--node", help="Print the node key that signs receipts instead.")
    ] = False,
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Print the log's C2SP verifier key (give it to auditors), or with --node the hex Ed25519
    public key that signs decision receipts."""
    from interlock.trust import keys

    with _audit(home) as view:
        v = view.vkey
        try:
            node_key = keys.public_raw(view.home.private_key("node")).hex()
        except Error as exc:
            _fail(exc.diagnostics())
    if json_:
        _emit_json({"vkey": v, "node_key": node_key})
    else:
        sys.stdout.write((node_key if node else v) + "\n")


@ledger_app.command("checkpoint")
def ledger_checkpoint(home: HomeOpt = None, json_: JsonOpt = False) -> None:
    """Print the latest signed checkpoint (signing a fresh one if entries are uncovered).

    Save it somewhere else: `ledger verify --checkpoint FILE` later proves the log still holds
    everything it covered."""
    with _audit(home, sign=True) as view:
        try:
            cp = view.ledger.latest_checkpoint()
            if cp is None or cp.size < view.ledger.size():
                cp = view.ledger.checkpoint()
        except Error as exc:
            _fail(exc.diagnostics(), EXIT_DENY)
    if cp is None:
        _fail("the ledger is empty: no checkpoint yet", EXIT_DENY)
    if json_:
        _emit_json({"size": cp.size, "root": cp.root.hex(), "note": cp.note, "created": cp.created})
    else:
        sys.stdout.write(cp.note)


@ledger_app.command("show")
def ledger_show(
    index: Annotated[int, typer.Argument(help="Entry index.")],
    raw: Annotated[bool, typer.Option("--raw", help="Print the exact stored bytes.")] = False,
    receipt: Annotated[
        bool, typer.Option("--receipt", help="Print the decision's DSSE receipt (node-signed).")
    ] = False,
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Print one ledger entry, or with --receipt its signed decision receipt."""
    from interlock.audit import decision_receipt
    from interlock.trust.receipt import encode_receipt

    with _audit(home) as view:
        try:
            data = view.ledger.entry(index)
            envelope = decision_receipt(view, index) if receipt else None
        except Error as exc:
            _fail(exc.diagnostics(), EXIT_DENY)
    if envelope is not None:
        if json_:
            _emit_json(envelope)
        else:
            sys.stdout.write(encode_receipt(envelope) + "\n")
        return
    if raw:
        sys.stdout.buffer.write(data + b"\n")
        return
    rec = json.loads(data)
    if json_:
        _emit_json({"index": index, "record": rec})
    else:
        out.print_json(data.decode())


@ledger_app.command("tail")
def ledger_tail(
    n: Annotated[int, typer.Option("-n", help="How many entries.")] = 10,
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Show the last N entries."""
    with _audit(home) as view:
        size = view.ledger.size()
        rows = [(i, json.loads(d)) for i, _h, d in view.ledger.iter_entries(max(0, size - n))]
    if json_:
        _emit_json([{"index": i, "record": r} for i, r in rows])
        return
    t = Table(title=f"Last {len(rows)} of {size} entries")
    for col in ("#", "time", "type", "principal / event", "action", "resource", "effect", "reason"):
        t.add_column(col)
    for i, r in rows:
        req = r.get("request", {})
        res = req.get("resource") or {}
        reasons = ",".join(x["code"] for x in r.get("reasons", []))
        eff = r.get("effect", "")
        colour = "green" if eff == "allow" else "red" if eff == "deny" else "white"
        t.add_row(
            str(i),
            r.get("ts", "")[11:23],
            r.get("type", ""),
            req.get("principal", r.get("event", "")),
            req.get("action", ""),
            f"{res.get('type')}::{res.get('id')}" if res else "",
            f"[{colour}]{eff}[/]",
            reasons,
        )
    out.print(t)


@ledger_app.command("consistency")
def ledger_consistency(
    old: Annotated[int, typer.Argument(help="Older tree size.")],
    new: Annotated[int, typer.Argument(help="Newer tree size.")],
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Print (and check) an RFC 9162 consistency proof between two tree sizes."""
    from interlock.ledger import merkle

    with _audit(home) as view:
        try:
            proof = view.ledger.consistency_proof(old, new)
            old_root, new_root = view.ledger.root_at(old), view.ledger.root_at(new)
            merkle.verify_consistency(old, new, old_root, new_root, proof)
        except Error as exc:
            _fail(exc.diagnostics(), EXIT_DENY)
    data = {
        "old": old,
        "new": new,
        "old_root": old_root.hex(),
        "new_root": new_root.hex(),
        "proof": [p.hex() for p in proof],
    }
    if json_:
        _emit_json(data)
    else:
        out.print(f"[green]✓ consistent[/]: {old} → {new}")
        for p in proof:
            out.print(f"  {p.hex()}")


@ledger_app.command("proof")
def ledger_proof(
    index: Annotated[int, typer.Argument(help="Entry index.")],
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write the tlog-proof file here.")
    ] = None,
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Write a C2SP tlog-proof@v1 evidence bundle (entry + inclusion proof + checkpoint); for a
    decision, its DSSE receipt goes beside it as FILE.receipt.json."""
    from interlock.audit import decision_receipt, proof_bundle
    from interlock.trust import keys
    from interlock.trust.receipt import encode_receipt

    envelope: dict[str, Any] | None = None
    with _audit(home, sign=True) as view:
        try:
            text = proof_bundle(view.ledger, index)
            if b'"type":"decision"' in view.ledger.entry(index):
                envelope = decision_receipt(view, index)
            node_key = keys.public_raw(view.home.private_key("node")).hex()
        except Error as exc:
            _fail(exc.diagnostics(), EXIT_DENY)
        vkey = view.vkey
    if out_file is not None:
        out_file.write_text(text, encoding="utf-8")
        receipt_file = _receipt_path(out_file)
        if envelope is not None:
            receipt_file.write_text(encode_receipt(envelope) + "\n", encoding="utf-8")
        if json_:
            _emit_json(
                {
                    "index": index,
                    "file": str(out_file),
                    "receipt": str(receipt_file) if envelope is not None else None,
                    "vkey": vkey,
                    "node_key": node_key,
                }
            )
        else:
            out.print(f"[green]Wrote[/] evidence bundle for entry {index} to {out_file}")
            if envelope is not None:
                out.print(f"[green]Wrote[/] its signed decision receipt to {receipt_file}")
            out.print(
                f"Verify offline: interlock receipt verify {out_file} --vkey '{vkey}'"
                f" --node-key {node_key}"
            )
    elif json_:
        _emit_json({"index": index, "proof": text, "vkey": vkey})
    else:
        sys.stdout.write(text)


@ledger_app.command("export-tiles")
def ledger_export_tiles(
    directory: Annotated[Path, typer.Argument(help="Output folder (C2SP tlog-tiles layout).")],
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Export the ledger as C2SP tlog-tiles (checkpoint, tile/L/N, tile/entries/N)."""
    from interlock.audit import export_ledger_tiles

    with _audit(home, sign=True) as view:
        try:
            n = export_ledger_tiles(view.ledger, directory)
        except Error as exc:
            _fail(exc.diagnostics(), EXIT_DENY)
    if json_:
        _emit_json({"directory": str(directory), "files": n})
    else:
        out.print(f"[green]Exported[/] {n} files to {directory}")


@ledger_app.command("replay")
def ledger_replay(home: HomeOpt = None, json_: JsonOpt = False) -> None:
    """Re-decide every recorded request with its pinned snapshot; exit 0 only with 0 mismatches."""
    from interlock.audit import replay
    from interlock.trust.keys import public_raw

    with _audit(home) as view:
        keys = view.home.trusted_policy_keys()
        try:
            node_public = public_raw(view.home.private_key("node"))
            if json_:
                rep = replay(view.ledger, keys, node_public=node_public)
            else:
                with _progress() as prog:
                    task = prog.add_task("replaying decisions", total=view.ledger.size() or 1)
                    rep = replay(
                        view.ledger,
                        keys,
                        node_public=node_public,
                        progress=lambda n, t: prog.update(task, completed=n, total=t or 1),
                    )
        except Error as exc:
            _fail(f"replay stopped: {exc.diagnostics()}", EXIT_DENY)
    if json_:
        _emit_json(rep.to_json())
    else:
        colour = "green" if rep.ok else "red"
        out.print(
            f"[bold {colour}]{'✓' if rep.ok else '✗'} replay[/]: {rep.replayed} re-decided,"
            f" {rep.matched} byte-identical, {len(rep.mismatches)} mismatches,"
            f" {len(rep.unverifiable)} unverifiable,"
            f" {rep.skipped_stage} intake/gate denials not re-decided"
        )
        for m in rep.mismatches[:20]:
            err.print(
                f"  mismatch at {m['index']}: recorded {m['recorded']} replayed {m['replayed']}"
            )
        for u in rep.unverifiable[:20]:
            err.print(f"  unverifiable at {u['index']}: {u['why']}")
    raise typer.Exit(EXIT_OK if rep.ok else EXIT_DENY)


@ledger_app.command("rebuild-state")
def ledger_rebuild_state(home: HomeOpt = None, json_: JsonOpt = False) -> None:
    """Recompute the governance state (revocations, quarantines, executions, ...) from the log
    alone and replace the stored tables: after a restore, or for a ledger of an older version.
    The log is verified first; nothing is replaced if it does not verify."""
    from interlock.audit import open_for_audit, rebuild_state

    try:
        view = open_for_audit(home, upgrade=True)
    except Error as exc:
        _fail(exc.diagnostics(), EXIT_DENY)
    with view:
        try:
            if json_:
                size = rebuild_state(view)
            else:
                with _progress() as prog:
                    task = prog.add_task("rebuilding state", total=view.ledger.size() or 1)
                    size = rebuild_state(
                        view, progress=lambda n, t: prog.update(task, completed=n, total=t or 1)
                    )
        except Error as exc:
            _fail(f"state not rebuilt: {exc.diagnostics()}", EXIT_DENY)
    if json_:
        _emit_json({"ok": True, "entries": size})
    else:
        out.print(f"[bold green]✓ state rebuilt[/] from {size} ledger entries")


# -- trust settings --------------------------------------------------------------------------------


@trust_app.command("show")
def trust_show(home: HomeOpt = None, json_: JsonOpt = False) -> None:
    """Show each trust setting on the ledger beside interlock.toml; exit 1 if they disagree."""
    from interlock.governance import config_settings, log_settings, mismatches
    from interlock.ledger.projection import TRUST_SETTINGS

    with _audit(home) as view:
        try:
            on_log = log_settings(view.ledger.settings())
        except Error as exc:
            _fail(exc.diagnostics(), EXIT_DENY)
        shown = config_settings(view.home.config)
        problems = mismatches(view.home.config, on_log)
    if json_:
        _emit_json({"log": on_log, "config": shown, "problems": problems, "ok": not problems})
    else:
        table = Table("setting", "on the ledger", "interlock.toml")
        for name in TRUST_SETTINGS:
            table.add_row(
                name, json.dumps(on_log.get(name, "(not recorded)")), json.dumps(shown[name])
            )
        out.print(table)
        for p in problems:
            err.print(f"[bold red]✗[/] {p}", soft_wrap=True)
    raise typer.Exit(EXIT_DENY if problems else EXIT_OK)


def _record_trust(home: Path | None, changes: dict[str, Any] | None, json_: bool) -> None:
    """Record ``changes`` (None: what ``interlock.toml`` says differently from the ledger)."""
    import time

    from interlock.governance import adopt_changes, record_trust

    with _audit(home, sign=True) as view:
        try:
            if changes is None:
                changes = adopt_changes(view.ledger, view.home)
            indices = record_trust(view.ledger, view.home, changes, ns=time.time_ns())
        except Error as exc:
            _fail(exc.diagnostics(), EXIT_DENY)
    if json_:
        _emit_json({"recorded": changes, "indices": indices})
    elif not changes:
        out.print("trust settings already match the ledger")
    else:
        for (name, value), idx in zip(sorted(changes.items()), indices, strict=True):
            out.print(f"trust setting {name} = {json.dumps(value)} recorded at ledger index {idx}")


@trust_app.command("set")
def trust_set(
    name: Annotated[str, typer.Argument(help="policy.trusted_keys, approvals.keys, ...")],
    values: Annotated[list[str] | None, typer.Argument(help="The new value(s).")] = None,
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Change a trust setting: a record signed with the home's root key goes on the ledger,
    then interlock.toml is updated to show it. Key lists are replaced whole (none = empty)."""
    from interlock.governance import parse_setting

    try:
        value = parse_setting(name, values or [])
    except Error as exc:
        _fail(exc.message)
    _record_trust(home, {name: value}, json_)


@trust_app.command("adopt")
def trust_adopt(home: HomeOpt = None, json_: JsonOpt = False) -> None:
    """Record on the ledger every trust setting where interlock.toml differs from it (for a
    home made before trust settings moved to the ledger, or an intended hand edit); signed with
    the home's root key."""
    _record_trust(home, None, json_)


# -- receipts --------------------------------------------------------------------------------------


def _receipt_path(proof_file: Path) -> Path:
    return proof_file.with_name(proof_file.name + ".receipt.json")


@receipt_app.command("verify")
def receipt_verify(
    file: Annotated[Path, typer.Argument(help="A .tlog-proof evidence bundle.")],
    vkey: Annotated[str | None, typer.Option(help="The log's verifier key (C2SP vkey).")] = None,
    vkey_file: Annotated[Path | None, typer.Option(help="File holding the verifier key.")] = None,
    node_key: Annotated[
        str | None,
        typer.Option(help="Hex node key (`interlock ledger vkey --node`): check the receipt too."),
    ] = None,
    receipt: Annotated[
        Path | None, typer.Option(help="The DSSE receipt (default: FILE.receipt.json).")
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Verify evidence offline, with no home: the checkpoint signature, the inclusion proof and
    the entry bytes; with --node-key also the signed decision receipt for that entry."""
    from interlock.ledger.verify import verify_proof_bundle
    from interlock.trust import keys
    from interlock.trust.receipt import verify_receipt

    if vkey is None and vkey_file is None:
        _fail(
            "give the log's verifier key with --vkey or --vkey-file"
            " (interlock ledger vkey prints it)"
        )
    key = vkey if vkey is not None else vkey_file.read_text(encoding="utf-8").strip()  # type: ignore[union-attr]
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        _fail(f"cannot read {file}: {exc.strerror}")
    receipt_file = receipt if receipt is not None else _receipt_path(file)
    if receipt is not None and not receipt.exists():
        _fail(f"no receipt at {receipt}")
    if node_key is not None:
        try:
            node_public = keys.public_from_raw(bytes.fromhex(node_key))
        except (ValueError, Error):
            _fail("--node-key must be the 64-hex-digit key `interlock ledger vkey --node` prints")
        if not receipt_file.exists():
            _fail(f"--node-key given but there is no receipt at {receipt_file}")
    receipt_checked = False
    try:
        entry = verify_proof_bundle(text, key)
        if node_key is not None:
            verify_receipt(
                receipt_file.read_text(encoding="utf-8"), public_key=node_public, record=entry.data
            )
            receipt_checked = True
    except Error as exc:
        if json_:
            _emit_json({"ok": False, "error": exc.message})
        else:
            err.print(f"[bold red]✗ evidence does NOT verify[/]: {exc.message}")
        raise typer.Exit(EXIT_DENY) from None
    try:
        rec = json.loads(entry.data)
    except ValueError:
        rec = None
    if json_:
        _emit_json(
            {
                "ok": True,
                "index": entry.index,
                "tree_size": entry.tree_size,
                "receipt_verified": receipt_checked,
                "record": rec,
            }
        )
        return
    out.print(
        f"[bold green]✓ evidence verified[/]: entry {entry.index} is in the log of size"
        f" {entry.tree_size} signed by {entry.checkpoint.origin}"
    )
    if receipt_checked:
        out.print(f"[bold green]✓ decision receipt verified[/]: signed by node key {node_key}")
    elif receipt_file.exists():
        err.print(f"[yellow]![/] {receipt_file} not checked: give --node-key to verify it")
    if isinstance(rec, dict):
        req = rec.get("request", {})
        out.print(
            f"  {rec.get('type')} {rec.get('effect', rec.get('event', ''))}"
            f"  {req.get('principal', '')}"
            f" {req.get('action', '')} {json.dumps(req.get('resource'))}  at {rec.get('ts')}"
        )


# -- mcp-proxy (issue 4 §3) -------------------------------------------------------------------


def parse_listen(text: str) -> tuple[str, int]:
    """``127.0.0.1:8765``, ``localhost:0`` or ``[::1]:8765`` → ``(host, port)``.

    Raises:
        typer.BadParameter: without a host or a port, or with a port outside 0-65535.
    """
    host, sep, port = text.strip().rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise typer.BadParameter(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:8765)")
    return host, int(port)


@app.command("mcp-proxy", context_settings={"allow_interspersed_args": False})
def mcp_proxy(
    command: Annotated[
        list[str] | None,
        typer.Argument(
            help="The upstream MCP server's command and arguments (after --), spoken to over"
            " stdio.",
            metavar="UPSTREAM_CMD",
            show_default=False,
        ),
    ] = None,
    capability: Annotated[
        str,
        typer.Option(
            envvar="INTERLOCK_CAPABILITY",
            help="Token or @file (or $INTERLOCK_CAPABILITY: keeps it out of ps). Never passed to"
            " the upstream.",
        ),
    ] = "",
    principal: Annotated[
        str | None,
        typer.Option(
            envvar="INTERLOCK_PRINCIPAL", help="SPIFFE ID (default $INTERLOCK_PRINCIPAL)."
        ),
    ] = None,
    upstream_url: Annotated[
        str | None,
        typer.Option(
            "--upstream-url", help="A streamable-HTTP upstream (instead of UPSTREAM_CMD)."
        ),
    ] = None,
    listen: Annotated[
        str | None,
        typer.Option(
            help="Serve streamable HTTP at http://HOST:PORT/mcp instead of stdio (loopback only;"
            " port 0 picks a free one, printed on stderr)."
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            help="The server name in McpServer/McpTool ids (default: the upstream's"
            " serverInfo.name; pin it when policies rely on it)."
        ),
    ] = None,
    parent: Annotated[
        str | None,
        typer.Option(
            envvar="INTERLOCK_EXECUTION_ID",
            help="Parent execution of the session (default $INTERLOCK_EXECUTION_ID).",
        ),
    ] = None,
    timeout: Annotated[
        str, typer.Option(help="How long to wait for each upstream answer: 30s, 500ms.")
    ] = "30s",
    startup_timeout: Annotated[
        str, typer.Option(help="How long the upstream may take to start and initialize.")
    ] = "60s",
    interval: Annotated[str, typer.Option(help="Re-verification interval: 1s, 200ms.")] = "1s",
    hide_denied: Annotated[
        bool,
        typer.Option(
            "--hide-denied",
            help="List only the tools the capability and policy could allow (probed with empty"
            " arguments, not recorded).",
        ),
    ] = False,
    home: HomeOpt = None,
) -> None:
    """Serve MCP to an agent's client; govern every tools/call, resources/read and prompts/get.

    Each request is decided and recorded before it reaches the upstream server.

    Nothing is printed on stdout: in stdio mode it is the MCP channel.

    Exit: 0 the session ended; 1 session denied or upstream failed; 2 usage error.
    """
    from rich.markup import escape

    from interlock.adapters.mcp_proxy import (
        ProxyOptions,
        Upstream,
        UpstreamError,
        run_proxy,
    )
    from interlock.errors import Denied, UsageError

    if not principal:
        _fail("no principal: give --principal or set INTERLOCK_PRINCIPAL")
    if not capability:
        _fail("no capability: give --capability or set INTERLOCK_CAPABILITY")
    if capability.strip() == "-":
        _fail("--capability - is not available: stdin is the MCP channel (use @file)")
    if bool(command) == (upstream_url is not None):
        _fail("give the upstream as -- UPSTREAM_CMD ARGS... or as --upstream-url (exactly one)")
    try:
        addr = parse_listen(listen) if listen is not None else None
        upstream = Upstream(command=tuple(command or ()), url=upstream_url)
        options = ProxyOptions(
            principal=principal,
            capability=_read_token(capability),
            name=name,
            parent=parent or None,
            timeout=parse_seconds(timeout),
            startup_timeout=parse_seconds(startup_timeout),
            interval=parse_seconds(interval),
            hide_denied=hide_denied,
            listen=listen,
        )
    except typer.BadParameter as exc:
        _fail(str(exc))
    except UsageError as exc:
        _fail(exc.diagnostics())

    def ready(proxy: Any, url: str | None) -> None:
        where = f"listening on {url}" if url else "serving MCP on stdio"
        server = f'McpServer::"{proxy.server_name}"'
        err.print(
            f"[bold green]interlock mcp-proxy:[/] session {proxy.session_id} for"
            f" {escape(str(principal))} on {escape(server)}, {escape(where)}",
            soft_wrap=True,
        )

    with _gate(home) as gate:
        try:
            run_proxy(gate, upstream, options, listen=addr, on_ready=ready)
        except Denied as exc:
            d = exc.decision
            err.print(
                f"[bold red]interlock mcp-proxy: session denied[/] {escape(exc.message)}"
                f" [dim](decision {d.decision_hash}, request {d.request_id})[/]",
                soft_wrap=True,
            )
            raise typer.Exit(EXIT_DENY) from None
        except UpstreamError as exc:
            err.print(
                f"[bold red]interlock mcp-proxy: upstream failed[/] {escape(exc.diagnostics())}",
                soft_wrap=True,
            )
            raise typer.Exit(EXIT_DENY) from None
        except UsageError as exc:
            _fail(exc.diagnostics())
        except OSError as exc:
            _fail(f"cannot listen on {listen}: {exc.strerror or exc}", EXIT_DENY)
        except Error as exc:
            err.print(
                f"[bold red]interlock mcp-proxy:[/] {escape(exc.diagnostics())}", soft_wrap=True
            )
            raise typer.Exit(EXIT_DENY) from None


# -- end mcp-proxy ---------------------------------------------------------------------------------

# -- serve (issue 4 §4) ----------------------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[
        str, typer.Option(help="Address to bind. Anything but loopback exposes the API.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=0, max=65535)] = 8750,
    log_level: Annotated[
        str, typer.Option(help="critical, error, warning, info or debug.")
    ] = "info",
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-host",
            help="Also accept this name in the Host header (repeatable; '*.example.com' for "
            "subdomains, '*' for any). Always accepted: localhost, 127.0.0.1, [::1] and --host.",
        ),
    ] = None,
    execution_lease: Annotated[
        float | None,
        typer.Option(
            help="Terminate an HTTP-started execution whose runner has not reported (GET with "
            "its capability, or the PATCH end) for this many seconds. Default: no lease.",
            min=0.1,
        ),
    ] = None,
    home: HomeOpt = None,
) -> None:
    """Serve the HTTP API (decisions, executions, ledger, C2SP tiles, admin, /readyz, /metrics)
    until interrupted. See the README, "HTTP API"."""
    from rich.markup import escape

    from interlock.server import serve as serve_http
    from interlock.server.guards import allowed_hosts, is_loopback

    if log_level not in ("critical", "error", "warning", "info", "debug"):
        _fail(f"--log-level must be critical, error, warning, info or debug, not {log_level!r}")
    extra = allowed_host or []
    try:
        allowed_hosts(host, extra)
    except ValueError as exc:
        _fail(f"--host/--allowed-host: {escape(str(exc))}")
    if not is_loopback(host):
        err.print(
            f"[bold yellow]warning:[/] binding {escape(host)}: the API is plain HTTP with no TLS;"
            " put it behind a TLS-terminating proxy and keep admin tokens off untrusted networks"
            + (
                ""
                if extra
                else "; clients must send a Host header this server accepts (--allowed-host)"
            ),
            soft_wrap=True,
        )
    with _gate(home) as gate:
        serve_http(
            gate,
            host=host,
            port=port,
            log_level=log_level,
            allowed_hosts=extra,
            execution_lease=execution_lease,
        )


# -- end serve -------------------------------------------------------------------------------------

# -- demo and bench --------------------------------------------------------------------------------


@app.command()
def demo(json_: JsonOpt = False) -> None:
    """Run the scripted scenario in a fresh home: allows, denials, a verified ledger."""
    from interlock.demo import run_demo

    result = run_demo(console=None if json_ else out)
    if json_:
        _emit_json(result.to_json())
    raise typer.Exit(EXIT_OK if result.ok else EXIT_DENY)


@app.command()
def bench(
    json_: JsonOpt = False,
    quick: Annotated[bool, typer.Option(help="Smaller sizes (for smoke tests).")] = False,
) -> None:
    """Measure DESIGN §10 figures, each beside a baseline measured in the same run."""
    from interlock.bench import run_benchmarks

    results = run_benchmarks(quick=quick, console=None if json_ else err)
    if json_:
        _emit_json(results)
        return
    from interlock.bench import results_table

    out.print(results_table(results))


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except Error as exc:  # a bug that escaped a command: still a clear message, never a traceback
        err.print(f"[bold red]error:[/] {exc.diagnostics()}")
        sys.exit(EXIT_USAGE)


if __name__ == "__main__":
    main()
