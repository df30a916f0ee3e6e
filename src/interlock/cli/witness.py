"""``interlock witness …`` (init, serve, show): a C2SP tlog-witness over its own folder."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from interlock.cli.common import EXIT_DENY, JsonOpt, _emit_json, _fail, app, err, out
from interlock.errors import Error

witness_app = typer.Typer(
    help="A witness: cosigns a log's checkpoints that extend the last one it cosigned.",
    no_args_is_help=True,
)
app.add_typer(witness_app, name="witness")

DirArg = Annotated[Path, typer.Argument(help="The witness's folder.", show_default=False)]


def _parse_logs(values: list[str]) -> dict[str, str]:
    logs: dict[str, str] = {}
    for v in values:
        origin, sep, vkey = v.partition("=")
        if not sep or not origin or not vkey:
            _fail(
                f"--log {escape(v)!r}: expected ORIGIN=VERIFIER_KEY (from `interlock ledger vkey`)"
            )
        if origin in logs:
            _fail(f"--log {escape(origin)!r} is given twice")
        logs[origin] = vkey
    return logs


@witness_app.command("init")
def witness_init(
    path: DirArg,
    log: Annotated[
        list[str] | None,
        typer.Option(
            "--log",
            help="ORIGIN=VERIFIER_KEY of a log to witness (repeatable; the key from"
            " `interlock ledger vkey`).",
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(help="The witness's key name (default witness.local/<random>)."),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Create a witness folder: an Ed25519 key (mode 0600), witness.toml, an empty state."""
    import secrets

    from interlock.witness.core import init_witness

    logs = _parse_logs(log or [])
    chosen = name or f"witness.local/{secrets.token_hex(4)}"
    try:
        init_witness(path, name=chosen, logs=logs)
        from interlock.witness.core import Witness

        with Witness.open(path) as w:
            vkey = w.vkey
    except Error as exc:
        _fail(escape(exc.diagnostics()))
    if json_:
        _emit_json({"path": str(path), "name": chosen, "vkey": vkey, "logs": sorted(logs)})
        return
    out.print(f"[bold green]✓ witness created[/] in {escape(str(path))}")
    out.print(f"  name  {escape(chosen)}")
    out.print(f"  vkey  {escape(vkey)}", soft_wrap=True)
    out.print("  (give the vkey to the nodes: \\[witness] keys in their interlock.toml)")


@witness_app.command("serve")
def witness_serve(
    path: DirArg,
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = (
        "127.0.0.1"
    ),
    port: Annotated[
        int, typer.Option(help="TCP port (0 picks a free one).", min=0, max=65535)
    ] = 7380,
) -> None:
    """Serve POST /add-checkpoint (c2sp.org/tlog-witness) until interrupted; prints the URL
    on stderr."""
    from interlock.witness.core import Witness
    from interlock.witness.server import serve

    try:
        witness = Witness.open(path)
    except Error as exc:
        _fail(escape(exc.diagnostics()))
    if host not in ("127.0.0.1", "::1", "localhost"):
        err.print(
            f"[bold yellow]warning:[/] binding {escape(host)}: plain HTTP; anyone who can reach"
            " it can submit checkpoints (only ones the configured logs signed are cosigned)",
            soft_wrap=True,
        )
    with witness:
        try:
            serve(
                witness,
                host=host,
                port=port,
                on_ready=lambda url: err.print(
                    f"witness {escape(witness.vkey)} listening on {url}", soft_wrap=True
                ),
            )
        except OSError as exc:
            _fail(f"cannot listen on {escape(host)}:{port}: {exc.strerror or exc}")


def _when(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def show_witness(path: Path) -> dict[str, Any]:
    """What ``interlock witness show --json`` prints.

    Raises:
        ConfigError, KeyFileError, StateError: the folder cannot be opened.
    """
    from interlock.witness.core import Witness

    with Witness.open(path) as w:
        latest = {lt.origin: lt for lt in w.state.all_latest()}
        evidence = w.state.evidence()
        return {
            "name": w.config.name,
            "vkey": w.vkey,
            "logs": [
                {
                    "origin": origin,
                    "vkey": v.vkey,
                    "size": latest[origin].size if origin in latest else None,
                    "root": base64.b64encode(latest[origin].root).decode()
                    if origin in latest
                    else None,
                    "cosigned": _when(latest[origin].cosigned) if origin in latest else None,
                }
                for origin, v in sorted(w.config.logs.items())
            ],
            "evidence": [
                {
                    "origin": e.origin,
                    "kind": e.kind,
                    "size": e.size,
                    "root": base64.b64encode(e.root).decode(),
                    "held_size": e.held_size,
                    "held_root": base64.b64encode(e.held_root).decode(),
                    "received": _when(e.received),
                    "note": e.note,
                    "held_note": e.held_note,
                }
                for e in evidence
            ],
        }


@witness_app.command("show")
def witness_show(path: DirArg, json_: JsonOpt = False) -> None:
    """The witness's key, each log's latest cosigned checkpoint, and the refusals it kept as
    evidence (a fork or rollback of a log); exits 1 when there is evidence."""
    try:
        data = show_witness(path)
    except Error as exc:
        _fail(escape(exc.diagnostics()))
    if json_:
        _emit_json(data)
    else:
        out.print(f"[bold]{escape(data['name'])}[/]  {escape(data['vkey'])}", soft_wrap=True)
        table = Table("origin", "size", "root", "cosigned")
        for lg in data["logs"]:
            table.add_row(
                escape(lg["origin"]),
                "-" if lg["size"] is None else str(lg["size"]),
                (lg["root"] or "-")[:16],
                lg["cosigned"] or "never",
            )
        out.print(table)
        for e in data["evidence"]:
            err.print(
                f"[bold red]✗ {escape(e['kind'])}[/] {escape(e['origin'])}: size {e['size']}"
                f" root {e['root'][:16]}… refused at {e['received']} (held size {e['held_size']}"
                f" root {e['held_root'][:16]}…)",
                soft_wrap=True,
            )
    if data["evidence"]:
        raise typer.Exit(EXIT_DENY)
