"""The `interlock` command line as a user runs it: real subprocesses, real exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RESEARCHER

EXE = [sys.executable, "-m", "interlock.cli"]


def run(
    *args: str, home: Path | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    env.pop("INTERLOCK_HOME", None)
    cmd = [*EXE, *args]
    if home is not None:
        cmd += ["--home", str(home)]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def cli_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("cli") / "home"
    r = run("init", "--json", home=home)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["vkey"].startswith(info["origin"] + "+")
    return home


def _token(home: Path, *rights: str) -> str:
    args = ["token", "issue", "--principal", RESEARCHER, "--ttl", "10m"]
    for r in rights or ("tool.call:Tool::*",):
        args += ["--right", r]
    r = run(*args, home=home)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def _req(token: str, tool: str = "web_search") -> str:
    return json.dumps(
        {
            "principal": RESEARCHER,
            "action": "tool.call",
            "resource": {"type": "Tool", "id": tool},
            "args": {"q": "x"},
            "capability": token,
        }
    )


def test_init_refuses_an_existing_home(cli_home: Path) -> None:
    before = {p.name: p.read_bytes() for p in (cli_home / "keys").iterdir()}
    r = run("init", home=cli_home)
    assert r.returncode == 2
    assert "already an Interlock home" in " ".join(r.stderr.split())  # however Rich wraps it
    assert {p.name: p.read_bytes() for p in (cli_home / "keys").iterdir()} == before
    for p in (cli_home / "keys").iterdir():
        assert p.stat().st_mode & 0o777 == 0o600
    assert (cli_home / "keys").stat().st_mode & 0o777 == 0o700
    assert cli_home.stat().st_mode & 0o777 == 0o700


def test_decide_exit_codes_and_json(cli_home: Path, tmp_path: Path) -> None:
    token = _token(cli_home)
    f = tmp_path / "req.json"
    f.write_text(_req(token))
    r = run("decide", str(f), "--json", home=cli_home)
    assert r.returncode == 0, r.stdout + r.stderr
    d = json.loads(r.stdout)
    assert d["effect"] == "allow"
    assert isinstance(d["ledger_index"], int)
    r = run("decide", "-", home=cli_home, stdin=_req(token, "delete_database"))
    assert r.returncode == 1
    assert "POLICY_FORBID" in r.stdout
    r = run("decide", "-", "--json", home=cli_home, stdin="{not json")
    assert r.returncode == 1
    assert json.loads(r.stdout)["reasons"][0]["code"] == "MALFORMED_REQUEST"
    r = run("decide", str(tmp_path / "missing.json"), home=cli_home)
    assert r.returncode == 2
    assert "cannot read" in r.stderr
    r = run("decide", "-", home=tmp_path / "nohome", stdin=_req(token))
    assert r.returncode == 2
    assert "interlock init" in r.stderr


def test_token_inspect_attenuate_revoke(cli_home: Path) -> None:
    token = _token(cli_home)
    r = run("token", "inspect", token, "--json", home=cli_home)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["principal"] == RESEARCHER
    assert info["verified"] is True
    r = run(
        "token",
        "attenuate",
        token,
        "--right",
        "tool.call:Tool::summarize",
        "--ttl",
        "1m",
        home=cli_home,
    )
    assert r.returncode == 0, r.stderr
    child = r.stdout.strip()
    assert run("decide", "-", home=cli_home, stdin=_req(child, "summarize")).returncode == 0
    r = run("decide", "-", home=cli_home, stdin=_req(child, "web_search"))
    assert r.returncode == 1
    assert "CAPABILITY_INSUFFICIENT" in r.stdout
    r = run("token", "revoke", token, "--reason", "test", "--json", home=cli_home)
    assert r.returncode == 0, r.stderr
    r = run("decide", "-", home=cli_home, stdin=_req(child, "summarize"))
    assert r.returncode == 1
    assert "CAPABILITY_REVOKED" in r.stdout
    r = run("token", "issue", "--principal", RESEARCHER, "--right", "nonsense", home=cli_home)
    assert r.returncode == 2


def test_ledger_commands_and_offline_receipt(cli_home: Path, tmp_path: Path) -> None:
    token = _token(cli_home)
    r = run("decide", "-", "--json", home=cli_home, stdin=_req(token))
    idx = json.loads(r.stdout)["ledger_index"]
    r = run("ledger", "verify", "--json", home=cli_home)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["ok"] is True
    vkey = run("ledger", "vkey", home=cli_home).stdout.strip()
    proof = tmp_path / "e.tlog-proof"
    r = run("ledger", "proof", str(idx), "--out", str(proof), home=cli_home)
    assert r.returncode == 0, r.stderr
    assert proof.read_text().startswith("c2sp.org/tlog-proof@v1\n")
    # offline: no home at all
    r = run("receipt", "verify", str(proof), "--vkey", vkey, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["record"]["effect"] == "allow"
    tampered = tmp_path / "t.tlog-proof"
    tampered.write_text(proof.read_text().replace("extra ", "extra A", 1))
    assert run("receipt", "verify", str(tampered), "--vkey", vkey).returncode == 1
    r = run("receipt", "verify", str(proof))
    assert r.returncode == 2
    assert "--vkey" in r.stderr
    r = run("ledger", "show", str(idx), "--json", home=cli_home)
    assert json.loads(r.stdout)["record"]["effect"] == "allow"
    assert run("ledger", "show", str(idx), "--raw", home=cli_home).stdout.startswith("{")
    assert run("ledger", "tail", "-n", "3", "--json", home=cli_home).returncode == 0
    r = run("ledger", "checkpoint", home=cli_home)
    assert r.returncode == 0
    assert r.stdout.splitlines()[0].startswith("interlock.local/")
    r = run("ledger", "consistency", "1", str(idx + 1), "--json", home=cli_home)
    assert r.returncode == 0, r.stderr
    r = run("ledger", "replay", "--json", home=cli_home)
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads(r.stdout)
    assert rep["mismatches"] == []
    assert rep["replayed"] >= 1


def test_export_tiles_is_read_by_an_independent_client(cli_home: Path, tmp_path: Path) -> None:
    from tlog_scales.backend import LocalBackend
    from tlog_scales.reader import TilesReader

    out = tmp_path / "tiles"
    r = run("ledger", "export-tiles", str(out), home=cli_home)
    assert r.returncode == 0, r.stderr
    assert (out / "checkpoint").exists()
    assert (out / "tile" / "entries").is_dir()
    # tlog-scales' checkpoint parser does not know extension lines: strip ours for the reader
    lines = (out / "checkpoint").read_text().split("\n")
    body_end = lines.index("")
    size = int(lines[1])
    (out / "checkpoint").write_text("\n".join(lines[:3] + lines[body_end:]))
    reader = TilesReader(LocalBackend(out))
    cp = reader.get_checkpoint()
    assert cp.size == size
    assert reader.calculate_root_hash() == cp.root_hash
    first = json.loads(reader.get_entry(0))
    assert first["type"] == "governance"
    assert first["event"] == "trust.changed"  # a home's ledger starts with its trust settings


def test_policy_commands(cli_home: Path, tmp_path: Path) -> None:
    assert run("policy", "validate", home=cli_home).returncode == 0
    r = run("policy", "test", "--json", home=cli_home)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["failed"] == 0
    import shutil

    new = tmp_path / "new"
    shutil.copytree(cli_home / "policy", new)
    pol = new / "policies.cedar"
    pol.write_text(
        pol.read_text().replace(
            'resource == Tool::"delete_database"', 'resource == Tool::"web_search"'
        )
    )
    reqs = tmp_path / "reqs.json"
    token = _token(cli_home)
    reqs.write_text("[" + _req(token) + "]")
    r = run("policy", "diff", str(cli_home / "policy"), str(new), "--requests", str(reqs), "--json")
    assert r.returncode == 1, r.stdout + r.stderr
    assert len(json.loads(r.stdout)["changed"]) == 1
    r = run("policy", "sign", str(new), "--json", home=cli_home)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["version"] == 2


def test_demo_runs_green() -> None:
    r = run("demo", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    result: dict[str, Any] = json.loads(r.stdout)
    assert result["ok"] is True
    got = [s["got"] for s in result["steps"]]
    assert got == [
        "allow",
        "POLICY_FORBID",
        "POLICY_NO_PERMIT",
        "CAPABILITY_EXPIRED",
        "allow",
        "CAPABILITY_INSUFFICIENT",
        "LINEAGE_BROKEN",
        "MALFORMED_REQUEST",
    ]
    assert {c["check"]: c["ok"] for c in result["checks"]} == {
        "ledger verify": True,
        "ledger replay": True,
        "runtime attestation": True,
        "offline receipt check": True,
        "tampered copy detected": True,
    }


def test_decision_receipts_are_signed_by_the_node_and_travel_with_the_proof(
    cli_home: Path, tmp_path: Path
) -> None:
    token = _token(cli_home)
    idx = json.loads(run("decide", "-", "--json", home=cli_home, stdin=_req(token)).stdout)[
        "ledger_index"
    ]
    keys_ = json.loads(run("ledger", "vkey", "--json", home=cli_home).stdout)
    node_key = run("ledger", "vkey", "--node", home=cli_home).stdout.strip()
    assert node_key == keys_["node_key"] and len(node_key) == 64
    envelope = json.loads(
        run("ledger", "show", str(idx), "--receipt", "--json", home=cli_home).stdout
    )
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    proof = tmp_path / "d.tlog-proof"
    assert run("ledger", "proof", str(idx), "--out", str(proof), home=cli_home).returncode == 0
    receipt = tmp_path / "d.tlog-proof.receipt.json"
    assert json.loads(receipt.read_text()) == envelope  # deterministic Ed25519: same bytes
    r = run(
        "receipt", "verify", str(proof), "--vkey", keys_["vkey"], "--node-key", node_key, "--json"
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["receipt_verified"] is True
    # a receipt for another decision does not vouch for this entry
    other = json.loads(run("decide", "-", "--json", home=cli_home, stdin=_req(token)).stdout)
    other_env = run("ledger", "show", str(other["ledger_index"]), "--receipt", home=cli_home).stdout
    receipt.write_text(other_env)
    r = run("receipt", "verify", str(proof), "--vkey", keys_["vkey"], "--node-key", node_key)
    assert r.returncode == 1
    # and the right receipt under a key that is not the node's is refused
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from interlock.trust.keys import public_raw

    receipt.write_text(json.dumps(envelope))
    wrong = public_raw(Ed25519PrivateKey.generate()).hex()
    r = run("receipt", "verify", str(proof), "--vkey", keys_["vkey"], "--node-key", wrong)
    assert r.returncode == 1 and "NOT verify" in r.stderr
