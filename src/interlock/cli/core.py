"""``interlock`` init, decide, approve, break-glass and exec: the commands that decide and run."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from interlock.cli.common import (
    EXIT_DENY,
    EXIT_OK,
    HomeOpt,
    JsonOpt,
    _emit_json,
    _fail,
    _open_denied,
    _print_decision,
    _read_token,
    _reason_code,
    app,
    err,
    out,
    parse_resource,
    parse_seconds,
    parse_ttl,
)
from interlock.errors import Error


@app.command()
def init(
    home: HomeOpt = None,
    origin: Annotated[
        str | None, typer.Option(help="Log origin (default interlock.local/<id>).")
    ] = None,
    durability: Annotated[str, typer.Option(help="full (fsync per commit) or process.")] = "full",
    store: Annotated[
        str | None,
        typer.Option(
            help="A postgresql:// URL: keep the log in this (new) shared PostgreSQL database"
            " instead of the home's SQLite file."
        ),
    ] = None,
    join: Annotated[
        Path | None,
        typer.Option(
            help="Make this home another node of HOME's shared PostgreSQL log (copies its keys,"
            " interlock.toml and policy)."
        ),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Create a home: keys (0600), interlock.toml, a signed default policy, the ledger."""
    from interlock.bootstrap import init_home
    from interlock.home import default_home

    path = default_home(home)
    try:
        h = init_home(path, origin=origin, durability=durability, store=store, join=join)
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
    if h.config.store:
        from interlock.ledger.storage import describe

        out.print(f"  shared log     {describe(h.config.store)}")
    out.print(f"  verifier key   {vkey}")
    out.print("  policy         signed default bundle (version 1) in policy/")
    out.print(
        f"Next: interlock token issue --home {h.path} --principal spiffe://acme.test/agent/researcher"
        " --right 'tool.call:Tool::*' --ttl 15m"
    )


# -- decide ----------------------------------------------------------------------------------------


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
    run_as: Annotated[
        str | None,
        typer.Option(
            "--run-as",
            help="Run CMD as this unprivileged user (no_new_privs); the supervisor must be root.",
        ),
    ] = None,
    home: HomeOpt = None,
) -> None:
    """Run CMD only if shell.exec is allowed, contained (its own cgroup, the home out of its
    reach); re-verify it while it runs; kill all of it when not.

    Exit: the command's own code (128+N for signal N); 126 denied or not started (the reason is
    on stderr), 127 command not found, 2 usage error.
    """
    import os
    import shutil

    from interlock.runtime.nested import NESTED_ENV
    from interlock.runtime.supervisor import EXIT_CANNOT_EXECUTE, environment_digest, run_command

    if not principal:
        _fail("no principal: give --principal or set INTERLOCK_PRINCIPAL")
    every = parse_seconds(interval)
    patience = parse_seconds(grace)
    if every <= 0:
        _fail("--interval must be positive")
    args: dict[str, Any] = {
        "argv": list(command),
        "cwd": os.getcwd(),
        "env_sha256": environment_digest(),
    }
    # DESIGN I3: resolving the program (PATH lookup, symlinks) is I/O, so it happens here, once;
    # the request carries the result, the policy reads it (context.args.command.executable),
    # replay re-derives the same form, and the supervisor executes exactly this path. A program
    # not found is decided without it and then fails to start (127), on the record.
    found = shutil.which(command[0]) if command and command[0] else None
    if found is not None:
        args["executable"] = os.path.realpath(found)
    request: dict[str, Any] = {
        "principal": principal,
        "action": "shell.exec",
        "resource": parse_resource(resource),
        "args": args,
        "capability": _read_token(capability),
    }
    if parent:
        request["parent"] = parent
    if approval:
        request["approval"] = _read_token(approval)
    if break_glass_:
        request["break_glass"] = _read_token(break_glass_)
    relay_fd = os.environ.get(NESTED_ENV)
    if relay_fd is not None:  # inside a contained command: its supervisor decides and runs
        _exec_relayed(request, relay_fd)
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
            run_as=run_as,
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


def _exec_relayed(request: dict[str, Any], relay_fd: str) -> NoReturn:
    """``interlock exec`` inside a contained command: the supervisor decides and runs it
    (:mod:`interlock.runtime.nested`); exits with the outcome's code."""
    from interlock.runtime.nested import relay_exec
    from interlock.runtime.supervisor import EXIT_CANNOT_EXECUTE

    try:
        fd = int(relay_fd)
        outcome = relay_exec(request, fd)
    except (OSError, ValueError) as exc:
        err.print(
            "[bold red]interlock exec: denied[/] [bold]CONTAINMENT_UNAVAILABLE[/]: the"
            f" supervisor's relay ({relay_fd}) is unreachable: {exc} [dim](not recorded)[/]",
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_CANNOT_EXECUTE) from None
    reason = outcome.get("reason") or {}
    code, detail = reason.get("code"), reason.get("detail")
    status = outcome.get("status")
    if status in ("denied", "not_started") and code:
        what = "denied" if status == "denied" else "not started"
        err.print(
            f"[bold red]interlock exec: {what}[/] [bold]{code}[/]: {detail}"
            f" [dim](request {outcome.get('request_id')}, relayed)[/]",
            soft_wrap=True,
        )
    elif status == "terminated" and code:
        err.print(
            f"[bold red]interlock exec: terminated[/] [bold]{code}[/]: {detail}"
            f" [dim](execution {outcome.get('request_id')}, relayed)[/]",
            soft_wrap=True,
        )
    raise typer.Exit(int(outcome["exit_code"]))


# -- tokens ----------------------------------------------------------------------------------------
