"""``interlock`` quarantine, kill-switch and trust: governance actions, each a ledger record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from interlock.cli.common import (
    EXIT_DENY,
    EXIT_OK,
    HomeOpt,
    JsonOpt,
    ReasonOpt,
    _audit,
    _emit_json,
    _fail,
    _gate,
    _spiffe,
    err,
    kill_switch_app,
    out,
    quarantine_app,
    trust_app,
)
from interlock.errors import Error


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
