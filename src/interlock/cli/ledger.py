"""``interlock ledger …`` (verify, vkey, checkpoint, show, tail, consistency, proof,
export-tiles, replay, rebuild-state) and ``interlock receipt verify``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from interlock.cli.common import (
    EXIT_DENY,
    EXIT_OK,
    HomeOpt,
    JsonOpt,
    _audit,
    _emit_json,
    _fail,
    _progress,
    _reason_code,
    err,
    ledger_app,
    out,
    receipt_app,
)
from interlock.errors import Error


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
    witness: Annotated[
        bool,
        typer.Option(
            "--witness",
            help="Also have the [witness] witnesses cosign the newest checkpoint; exit 1 unless"
            " their quorum does.",
        ),
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """Recompute every hash, tile and checkpoint, and the governance state from the log;
    exit 1 naming the first bad index or state row. With --witness, also exit 1 unless a
    quorum of the configured witnesses cosigns the newest checkpoint."""
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
        witnessed = _confirm_with_witnesses(view, json_) if witness else None
    uncovered = rep.size - rep.covered
    data: dict[str, Any] = {
        "ok": True,
        "entries": rep.entries,
        "checkpoints": rep.checkpoints,
        "root": rep.root.hex(),
        "size": rep.size,
        "covered": rep.covered,
        "uncovered": uncovered,
    }
    if witnessed is not None:
        data["witnessed"] = witnessed
    if json_:
        _emit_json(data)
        return
    out.print(
        f"[bold green]✓ ledger verified[/]: {rep.entries} entries,"
        f" {rep.checkpoints} signed checkpoints, root {rep.root.hex()[:16]}…; the governance"
        " state matches the log"
    )
    if witnessed is not None:
        out.print(
            f"[bold green]✓ head confirmed[/]: size {witnessed['size']} cosigned by"
            f" {len(witnessed['cosigners'])} witnesses (quorum {witnessed['quorum']})"
        )
    if uncovered:
        err.print(
            f"[yellow]![/] the last {uncovered} entries are not yet under a signed checkpoint"
            " (a running gate signs one within a second): only their hashes were checked"
        )


def _confirm_with_witnesses(view: Any, json_: bool) -> dict[str, Any]:
    """The newest checkpoint cosigned by a quorum of ``[witness]``, or exit 1 (2 when no
    witness is configured)."""
    from interlock.ledger.note import NoteVerifier
    from interlock.witness.client import confirm_head, witnesses_from

    cfg = view.home.config
    if not cfg.witness_urls:
        _fail("--witness: interlock.toml has no \\[witness] urls, keys and quorum")
    try:
        head = confirm_head(
            view.ledger,
            witnesses_from(cfg.witness_urls, cfg.witness_keys),
            cfg.witness_quorum,
            log_verifier=NoteVerifier.from_vkey(view.vkey),
            timeout=cfg.witness_timeout_ms / 1000,
        )
    except Error as exc:
        if json_:
            _emit_json(
                {
                    "ok": False,
                    "error": exc.message,
                    "code": _reason_code(exc),
                    "evidence": {k: str(v) for k, v in exc.evidence.items()},
                }
            )
        else:
            err.print(
                f"[bold red]✗ head NOT confirmed by the witnesses[/]: {escape(exc.diagnostics())}",
                soft_wrap=True,
            )
        raise typer.Exit(EXIT_DENY) from None
    return {
        "size": head.checkpoint.size,
        "quorum": head.quorum,
        "cosigners": head.cosigners,
        "note": head.note,
    }


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
    from interlock.replay import replay
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
