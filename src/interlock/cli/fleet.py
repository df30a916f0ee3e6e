"""``interlock nodes``: the nodes of a fleet that shares the home's PostgreSQL log."""

from __future__ import annotations

from dataclasses import asdict

from rich.table import Table

from interlock.cli.common import EXIT_DENY, HomeOpt, JsonOpt, _audit, _emit_json, _fail, app, out
from interlock.errors import Error, UsageError


def _age(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.3f} s"


@app.command("nodes")
def nodes(home: HomeOpt = None, json_: JsonOpt = False) -> None:
    """List the nodes of this home's fleet: each node's last heartbeat, freshness-lease age,
    policy version, log size, attestation digest and fail-closed state (``ok``, or the code
    it denies everything with). A node whose heartbeat stopped is shown as silent."""
    from interlock.audit import fleet_nodes

    with _audit(home) as view:
        try:
            rows = fleet_nodes(view)
        except UsageError as exc:
            _fail(exc.diagnostics())
        except Error as exc:
            _fail(exc.diagnostics(), EXIT_DENY)
    if json_:
        _emit_json([asdict(r) for r in rows])
        return
    if not rows:
        out.print("No node has registered on this log yet.")
        return
    t = Table(title="Nodes on the shared log")
    for name, justify in (
        ("node", "left"),
        ("host", "left"),
        ("pid", "right"),
        ("started", "left"),
        ("heartbeat", "right"),
        ("lease age", "right"),
        ("policy", "right"),
        ("log size", "right"),
        ("attestation", "left"),
        ("state", "left"),
    ):
        t.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        state = "[green]ok[/]" if r.state == "ok" else f"[red]{r.state[:80]}[/]"
        t.add_row(
            r.node_id,
            r.host,
            str(r.pid),
            r.started,
            f"{r.silent_s:.1f} s ago"
            if r.silent_s < 10
            else f"[yellow]silent {r.silent_s:.0f} s[/]",
            _age(r.lease_age_s),
            "-" if r.policy_version is None else str(r.policy_version),
            "-" if r.log_size is None else str(r.log_size),
            "-" if r.attestation is None else r.attestation[:12] + "…",
            state,
        )
    out.print(t)
