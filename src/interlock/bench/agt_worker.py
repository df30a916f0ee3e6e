"""The measuring side of :mod:`interlock.bench.agt`, run by path in a fresh interpreter.

    python -I agt_worker.py 20000 3    # actions per run, rounds; prints one JSON object

It imports nothing from Interlock (only the standard library and AGT), so it runs in whichever
environment holds ``agent-governance-toolkit-core`` — ``.venv-agt`` (``make bench-agt``) or
this one. Run it with ``-I``: without it the script's own directory leads ``sys.path`` and this
package's ``http.py`` hides the standard library's.

The governed action is ``agentmesh.client.AgentMeshClient.execute_with_governance``, the one
call AGT's unified client documents as "the full governance pipeline": ``PolicyEngine.evaluate``
(``agentmesh.governance.policy``), ``AuditLog.log`` (``agentmesh.governance.audit``: an
in-memory hash chain under a Merkle tree, nothing written to disk) and the trust-score update.
Each round measures, on fresh clients: the policy decision alone (the baseline), one caller,
and eight threads sharing one client. When AGT cannot be imported the object is
``{"missing": "<the import error>"}``.
"""

from __future__ import annotations

import json
import resource
import sys
import threading
import time
import warnings
from typing import Any

_AGENT = "spiffe://acme.test/agent/researcher"
# Interlock's bench policy in AGT's policy language: one allow rule for a tool call by one
# agent (its DID exists only once the client has made it), anything else denied
_POLICY = """\
apiVersion: governance.toolkit/v1
name: bench
agents: ["{did}"]
rules:
  - name: bench-tool-call
    condition: "action.type == 'tool.call' and resource.id == 'web_search'"
    action: allow
default_action: deny
"""
# the client loads an allow-everything policy when given none: give it one that denies, then
# swap in the bench policy
_PLACEHOLDER = """\
apiVersion: governance.toolkit/v1
name: placeholder
agents: []
default_action: deny
"""


def _cpu_s() -> float:
    """This process's CPU seconds so far, user and system, every thread."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _context(i: int) -> dict[str, Any]:
    # the request Interlock's P3 decides, in the context shape AGT's rules read
    return {
        "action": {"type": "tool.call"},
        "resource": {"type": "Tool", "id": "web_search"},
        "args": {"q": f"query {i}"},
    }


def _client(client_type: Any) -> Any:
    client = client_type(_AGENT, capabilities=["tool.call"], policy_yaml=_PLACEHOLDER)
    client.policy_engine.remove_policy("placeholder")
    client.policy_engine.load_yaml(_POLICY.format(did=client.agent_did))
    return client


def _governed(client: Any, callers: int, per_caller: int) -> dict[str, float]:
    """``callers`` threads, ``per_caller`` governed actions each, on one client. AGT's audit
    log takes no lock (two appends at once can chain to the same predecessor), so concurrent
    callers take one around the action, as an application sharing a client must."""
    denied: list[str] = []
    lock = threading.Lock()
    act = client.execute_with_governance

    def caller(t: int) -> None:
        for i in range(t * per_caller, (t + 1) * per_caller):
            if callers == 1:
                r = act("tool.call", _context(i))
            else:
                with lock:
                    r = act("tool.call", _context(i))
            if not r.allowed:
                denied.append(r.decision)

    threads = [threading.Thread(target=caller, args=(t,)) for t in range(callers)]
    cpu0, t0 = _cpu_s(), time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
    n = callers * per_caller
    if denied:  # a throughput of denials would measure nothing
        raise RuntimeError(f"{len(denied)} AGT actions denied during the benchmark: {denied[:3]}")
    ok, why = client.audit_log.verify_integrity()
    entries = len(client.audit_log.query(limit=n + 1))
    if not ok or entries != n:
        raise RuntimeError(f"AGT's audit log after the run: {entries} of {n} entries, {why}")
    return {"rate": n / wall, "cpu_us": cpu / n * 1e6}


def _decisions(client: Any, n: int) -> dict[str, float]:
    """The policy decision alone (``PolicyEngine.evaluate``), one caller: no audit entry."""
    engine, did = client.policy_engine, client.agent_did
    cpu0, t0 = _cpu_s(), time.perf_counter()
    for i in range(n):
        if not engine.evaluate(did, _context(i)).allowed:
            raise RuntimeError("AGT's policy denied the bench request")
    wall, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
    return {"rate": n / wall, "cpu_us": cpu / n * 1e6}


def main(argv: list[str]) -> int:
    n = int(argv[1]) if len(argv) > 1 else 20_000
    rounds = int(argv[2]) if len(argv) > 2 else 1
    try:
        from importlib.metadata import version

        with warnings.catch_warnings():
            # agentmesh/__init__ warns that the old agentmesh-platform distribution is
            # deprecated, whichever distribution installed it; the import path is current
            warnings.simplefilter("ignore", DeprecationWarning)
            from agentmesh.client import AgentMeshClient
    except ImportError as exc:
        json.dump({"missing": str(exc)}, sys.stdout)
        return 0
    _governed(_client(AgentMeshClient), 1, 200)  # warm: imports, regexes, validators
    out: dict[str, Any] = {
        "version": version("agent-governance-toolkit-core"),
        "python": ".".join(map(str, sys.version_info[:3])),
        "n": n,
        "decision": [],
        "one": [],
        "eight": [],
    }
    for _ in range(rounds):
        out["decision"].append(_decisions(_client(AgentMeshClient), n))
        out["one"].append(_governed(_client(AgentMeshClient), 1, n))
        out["eight"].append(_governed(_client(AgentMeshClient), 8, n // 8))
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
