"""``interlock`` policy sign|validate|test|diff."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from interlock.cli.common import (
    EXIT_DENY,
    EXIT_OK,
    HomeOpt,
    JsonOpt,
    _audit,
    _emit_json,
    _fail,
    err,
    out,
    policy_app,
)
from interlock.errors import Error


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
        from interlock.replay import recorded_requests

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
