"""`interlock serve` as an operator runs it: a real process on a loopback port, spoken to over
HTTP, stopped with SIGTERM; what it decided is on the ledger the CLI reads afterwards."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import RESEARCHER
from tests.e2e.test_exec import EXE, _env, cli, records, token


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_ready(proc: subprocess.Popen[str], url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited with {proc.returncode}: {proc.stderr.read()}")  # type: ignore[union-attr]
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError("serve did not answer /healthz")


@pytest.fixture
def served(home: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = _free_port()
    proc = subprocess.Popen(
        [*EXE, "serve", "--port", str(port), "--log-level", "warning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(home),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, url)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def test_serve_decides_records_and_stops_cleanly(
    home: Path, served: tuple[str, subprocess.Popen[str]]
) -> None:
    url, proc = served
    tok = token(home, "tool.call:Tool::*")
    req = {
        "principal": RESEARCHER,
        "action": "tool.call",
        "resource": {"type": "Tool", "id": "web_search"},
        "capability": tok,
    }
    with httpx.Client(base_url=url, timeout=30) as http:
        assert http.get("/readyz").json() == {"ready": True, "reasons": []}
        allow = http.post("/v1/decisions", json=req).json()
        assert allow["effect"] == "allow"
        bad = http.post(
            "/v1/decisions", content=b"not json", headers={"Content-Type": "application/json"}
        )
        assert bad.status_code == 422
        # a cross-site form post or a rebound host name never reaches the gate
        assert http.post("/v1/decisions", content=b"not json").status_code == 415
        assert http.get("/readyz", headers={"Host": "evil.example"}).status_code == 400
        assert http.get("/openapi.json").json()["info"]["title"] == "Interlock"
        assert "interlock_decisions_total" in http.get("/metrics").text
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    # what the server decided is what the ledger holds, and the ledger verifies
    by_id = {r["id"]: r for r in records(home) if r.get("type") == "decision"}
    assert by_id[allow["request_id"]]["effect"] == "allow"
    assert by_id[bad.json()["decision"]["request_id"]]["reasons"][0]["code"] == (
        "MALFORMED_REQUEST"
    )
    assert cli(home, "ledger", "verify").returncode == 0
    r = cli(home, "ledger", "show", str(allow["ledger_index"]), "--json")
    assert json.loads(r.stdout)["record"]["id"] == allow["request_id"]
    assert (home / "checkpoint").exists()  # the gate was closed: its anchor was written


def test_serve_refuses_bad_options(home: Path) -> None:
    r = cli(home, "serve", "--log-level", "loud")
    assert r.returncode == 2 and "--log-level" in r.stderr
    r = cli(home, "serve", "--port", "70000")
    assert r.returncode == 2
    missing = subprocess.run(
        [*EXE, "serve", "--home", str(home / "nowhere")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 2 and "no Interlock home" in missing.stderr


def test_serve_treats_all_of_127_8_as_loopback_and_checks_the_host_header(home: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [
            *EXE,
            "serve",
            "--host",
            "127.0.0.2",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--allowed-host",
            "api.example.test",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(home),
    )
    url = f"http://127.0.0.2:{port}"
    try:
        _wait_ready(proc, url)  # Host: 127.0.0.2:<port>, the bound address
        for host, status in (
            ("api.example.test", 200),
            (f"localhost:{port}", 200),
            ("evil.example", 400),
        ):
            assert httpx.get(url + "/healthz", headers={"Host": host}).status_code == status
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "warning" not in err and "no TLS" not in err  # 127.0.0.2 is loopback


def test_serve_warns_when_not_bound_to_loopback_only(home: Path) -> None:
    # 192.0.2.1 (TEST-NET-1) is not an address of this machine: the warning comes first, then
    # the bind fails; nothing is ever exposed
    r = cli(home, "serve", "--host", "192.0.2.1", "--port", str(_free_port()))
    assert r.returncode != 0
    assert "no TLS" in r.stderr and "--allowed-host" in r.stderr


def test_serve_refuses_a_bad_allowed_host(home: Path) -> None:
    r = cli(home, "serve", "--allowed-host", "evil.example:80")
    assert r.returncode == 2 and "--allowed-host" in r.stderr
