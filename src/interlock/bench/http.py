"""Benchmarks of the HTTP API (issue 4 §5), in the shape of :mod:`interlock.bench` figures.

    >>> from interlock.bench.http import bench_http
    >>> figures = bench_http(quick=True)                        # doctest: +SKIP
    >>> figures["http_decisions_per_s"]["baseline_what"]        # doctest: +SKIP
    'in-process gate.decide, 8 concurrent callers (decisions/s)'

* **throughput**: governed decisions per second through ``POST /v1/decisions`` with 8
  concurrent keep-alive clients, against ``interlock serve`` running in its own process (as in
  production: the server has its own interpreter). Baseline: in-process ``gate.decide`` of the
  same request bytes with 8 concurrent threads, on the same home, in the same run.
* **latency**: one sequential client, p50 per decision over HTTP; baseline: the p50 of one
  sequential in-process ``gate.decide``. The goal is the added latency (≤ 1 ms, as for the MCP
  proxy, DESIGN §10 P7).

Both sides use ``full`` durability (an fsync before every allow, shared by concurrent callers),
so both are bounded by the same group commit; the ratio shows what HTTP, JSON and the server's
thread hand-off cost on top. The clients use the standard library's ``http.client``.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from interlock.bench.common import Result, figure, pct

if TYPE_CHECKING:
    from interlock.core.model import Decision

__all__ = ["bench_http"]

_PRINCIPAL = "spiffe://acme.test/agent/researcher"
_CLIENTS = 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _in_process(
    decide: Callable[[bytes], Decision], body: bytes, threads: int, per: int
) -> tuple[float, int]:
    """Decisions/s of ``threads`` callers each deciding ``per`` times; and how many denied."""
    denied = [0]
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(per):
            d = decide(body)
            if not d.allowed:
                with lock:
                    denied[0] += 1

    ths = [threading.Thread(target=worker) for _ in range(threads)]
    t0 = time.perf_counter()
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    return threads * per / (time.perf_counter() - t0), denied[0]


def _post(conn: http.client.HTTPConnection, body: bytes) -> bool:
    conn.request("POST", "/v1/decisions", body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    return resp.status == 200 and json.loads(data).get("effect") == "allow"


def _over_http(port: int, body: bytes, clients: int, per: int) -> tuple[float, int]:
    denied = [0]
    lock = threading.Lock()

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            for _ in range(per):
                if not _post(conn, body):
                    with lock:
                        denied[0] += 1
        finally:
            conn.close()

    ths = [threading.Thread(target=worker) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    return clients * per / (time.perf_counter() - t0), denied[0]


def _wait_ready(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 60
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"interlock serve exited: {log.read_text()[-2000:]}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/readyz")
            resp = conn.getresponse()
            last = f"{resp.status} {resp.read()[:500]!r}"
            if resp.status == 200:
                return
        except OSError as exc:
            last = str(exc)
        finally:
            conn.close()
        time.sleep(0.05)
    raise RuntimeError(f"interlock serve did not become ready ({last}): {log.read_text()[-2000:]}")


def bench_http(quick: bool = False) -> dict[str, Result]:
    """Measure HTTP decision throughput and latency beside in-process ``gate.decide``.

    Raises:
        RuntimeError: if the server does not start.
        Error: if a temporary home cannot be created or opened.
    """
    from interlock.bootstrap import init_home
    from interlock.capability import CapabilityIssuer, Right
    from interlock.gate import Gate
    from interlock.trust import keys

    per = 60 if quick else 500
    sequential = 100 if quick else 1000
    with tempfile.TemporaryDirectory(prefix="interlock-bench-http-") as tmp:
        home = init_home(Path(tmp) / "home", origin="interlock.bench/http")
        issuer = CapabilityIssuer(keys.private_raw(home.private_key("biscuit-root")))
        now = datetime.now(UTC)
        token = issuer.issue(
            principal=_PRINCIPAL,
            rights=[Right.parse("tool.call:Tool::*")],
            expires_at=now + timedelta(hours=1),
            now=now,
        )
        body = json.dumps(
            {
                "principal": _PRINCIPAL,
                "action": "tool.call",
                "resource": {"type": "Tool", "id": "web_search"},
                "args": {"q": "benchmark"},
                "capability": token,
            }
        ).encode()

        with Gate.open(home.path) as gate:
            _in_process(gate.decide, body, _CLIENTS, 10)  # warm
            base_rate, base_denied = _in_process(gate.decide, body, _CLIENTS, per)
            base_lat: list[float] = []
            for _ in range(sequential):
                t0 = time.perf_counter_ns()
                gate.decide(body)
                base_lat.append((time.perf_counter_ns() - t0) / 1000)

        port = _free_port()
        log = Path(tmp) / "serve.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("INTERLOCK_")}
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "interlock.cli",
                    "serve",
                    "--home",
                    str(home.path),
                    "--port",
                    str(port),
                    "--log-level",
                    "warning",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        try:
            _wait_ready(proc, port, log)
            _over_http(port, body, _CLIENTS, 10)  # warm
            rate, denied = _over_http(port, body, _CLIENTS, per)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            lat: list[float] = []
            for _ in range(sequential):
                t0 = time.perf_counter_ns()
                if not _post(conn, body):
                    denied += 1
                lat.append((time.perf_counter_ns() - t0) / 1000)
            conn.close()
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    p50, base_p50 = pct(lat, 0.5), pct(base_lat, 0.5)
    return {
        "http_decisions_per_s": figure(
            rate,
            "decisions/s",
            base_rate,
            f"in-process gate.decide, {_CLIENTS} concurrent callers (decisions/s)",
            ">= 0.5x in-process at the same concurrency",
            rate >= 0.5 * base_rate and denied == 0,
            clients=_CLIENTS,
            requests=_CLIENTS * per,
            denied=denied,
            baseline_denied=base_denied,
        ),
        "http_decision_latency_p50": figure(
            p50,
            "us",
            base_p50,
            "one sequential in-process gate.decide (p50 us)",
            "p50 <= in-process p50 + 1 ms",
            p50 <= base_p50 + 1000 and denied == 0,
            p99=round(pct(lat, 0.99), 3),
            baseline_p99=round(pct(base_lat, 0.99), 3),
        ),
    }
