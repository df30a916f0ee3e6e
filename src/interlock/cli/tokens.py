"""``interlock`` token issue|attenuate|inspect|revoke."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from interlock.cli.common import (
    EXIT_DENY,
    HomeOpt,
    JsonOpt,
    _emit_json,
    _fail,
    _gate,
    _parse_rights,
    _read_token,
    out,
    parse_ttl,
    token_app,
)
from interlock.errors import Error


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
