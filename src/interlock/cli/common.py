"""What every command module shares: the Typer apps, the consoles, the common options, exit
codes and the helpers that read arguments and print results."""

from __future__ import annotations

import json
import re
import sys
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

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


def _parse_rights(rights: list[str]) -> list[Any]:
    from interlock.capability import Right

    try:
        return [Right.parse(r) for r in rights]
    except Error as exc:
        _fail(
            f"{exc.message} (a right looks like ACTION:TYPE::ID, e.g. tool.call:Tool::web_search)"
        )


ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (recorded on the ledger).")]


def _spiffe(principal: str) -> str:
    from interlock.core.model import is_spiffe_id

    if not is_spiffe_id(principal):
        _fail(f"not a SPIFFE ID: {principal!r} (expected spiffe://trust-domain/path)")
    return principal


def _progress() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )


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
