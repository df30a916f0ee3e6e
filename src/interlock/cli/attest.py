"""``interlock`` attest show|verify|trust and boundary list|release."""

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
    _audit,
    _emit_json,
    _fail,
    _gate,
    attest_app,
    boundary_app,
    out,
)
from interlock.errors import Error


def _attestation_view(home: Path | None) -> dict[str, Any]:
    """Measure now, and compare with the trusted set and the newest ``node.attested`` record
    (its node signature checked)."""
    from interlock.containment import describe
    from interlock.home import CONFIG_NAME, Home, default_home
    from interlock.policy.bundle import load_bundle
    from interlock.records import verify_governance
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
        m = measure(h.path / CONFIG_NAME, bundle_digest, containment=describe(h.config.exec))
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
    c = m.get("containment") or {}
    if c.get("available"):
        how = f"cgroup {c.get('cgroup')}, Landlock ABI {c.get('landlock_abi')}"
        if c.get("run_as"):
            how += f", run as {c['run_as']}"
        out.print(f"containment  [green]{c.get('mode')}[/] ({how})")
    else:
        out.print(
            f"containment  [red]unavailable[/] ({c.get('mode')}: {c.get('problem')}):"
            " `interlock exec` denies CONTAINMENT_UNAVAILABLE"
        )
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
