"""A fleet node for the integration tests: one process holding ``Gate.open(home)`` on a home
joined to a shared PostgreSQL log — what the SDK, ``exec`` and ``mcp-proxy`` do, and what
``interlock serve`` does behind HTTP — driven by JSON lines on stdin, answering on stdout.

    python tests/fleet_node.py HOME      # then {"op": "decide", "request": {...}} per line

Ops: ``decide`` (one request), ``burst`` (decide ``n`` times, printing each answer on its own
line as soon as it is known: a caller told of an allow has that line), ``revoke``,
``quarantine``, ``kill``, ``policy`` (sign the home's folder at ``version`` with a change and
load it), ``state``, ``exit``.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any


def main(home: str) -> None:
    from interlock.gate import Gate

    gate = Gate.open(home)
    _say({"ready": True, "node_id": gate.node.node_id if gate.node else None})
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "exit":
            break
        _say(_do(gate, op, cmd))
    gate.close()


def _do(gate: Any, op: str, cmd: dict[str, Any]) -> dict[str, Any]:
    if op == "decide":
        return _decision(gate.decide(cmd["request"]))
    if op == "burst":
        for _ in range(int(cmd["n"])):
            _say(_decision(gate.decide(cmd["request"])))
        return {"done": True}
    try:
        if op == "revoke":
            return {"index": gate.revoke(tuple(cmd["ids"]), reason="test")}
        if op == "quarantine":
            return {"index": gate.quarantine(cmd["principal"], "test", on=cmd.get("on", True))}
        if op == "kill":
            return {"index": gate.kill_switch(cmd["on"], "test")}
        if op == "policy":
            return _activate(gate, int(cmd["version"]), cmd["forbid"])
    except Exception as exc:  # noqa: BLE001 - reported to the test, which asserts on it
        return {"error": f"{type(exc).__name__}: {exc}"}
    if op == "state":
        lease = gate.lease
        snap = None
        try:
            s = gate.snapshot
            snap = {
                "trust_version": s.trust_version,
                "revoked": sorted(s.revoked),
                "quarantined": sorted(s.quarantined),
                "kill_switch": s.kill_switch,
                "policy": s.descriptor.get("policy_digest"),
            }
        except Exception:  # noqa: BLE001 - no snapshot yet
            snap = None
        return {
            "fail_closed": gate.fail_closed_state(),
            "watermark": gate.node.watermark if gate.node else None,
            "lease_age": lease.age(time.monotonic()) if lease else None,
            "stale_denials": lease.stale_denials if lease else None,
            "pulls": gate.node.pulls if gate.node else None,
            "rung": gate.node.rung if gate.node else None,
            "snapshot": snap,
        }
    return {"error": f"unknown op {op}"}


def _activate(gate: Any, version: int, forbid: str) -> dict[str, Any]:
    """What an operator does on node 1: change the folder, sign it, load it."""
    from interlock.policy.bundle import sign_bundle

    pol = gate.home.policy_dir / "policies.cedar"
    pol.write_text(
        pol.read_text()
        + f'\n@id("fleet-test-forbid")\nforbid (principal, action, resource == Tool::"{forbid}");\n'
    )
    sign_bundle(gate.home.policy_dir, gate.home.private_key("policy"), version=version)
    gate.reload_policy()
    return {"version": gate.snapshot.descriptor.get("policy_version")}


def _decision(d: Any) -> dict[str, Any]:
    return {
        "effect": d.effect.value,
        "codes": list(d.codes),
        "index": d.ledger_index,
        "id": d.request_id,
        "hash": d.decision_hash,
        "detail": d.reasons[0].detail if d.reasons else None,
    }


def _say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1])
