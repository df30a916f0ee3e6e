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

* **worker processes** (issue 14): ``interlock serve --workers 2`` beside ``--workers 1`` on
  the same home, in the same run. Throughput: a closed loop of 32 keep-alive loopback
  connections, driven by ``wrk`` when it is on PATH (C, cheap: the load generator shares the
  machine's cores with the server) and otherwise by :mod:`interlock.bench.load` in two
  processes; goal >= 8,000 decisions/s. Latency: an open loop (:mod:`interlock.bench.load`,
  latency from each request's scheduled time) at half the two-worker throughput, against both
  servers at that same rate; goal p99 <= 5 ms. CPU per decision: user + system time of every
  server process (the parent and its workers, from ``/proc``) over the throughput run, divided
  by the decisions; the load generator is not counted.

Both sides use ``full`` durability (an fsync before every allow, shared by concurrent callers),
so both are bounded by the same group commit; the ratio shows what HTTP, JSON and the server's
thread hand-off cost on top. The clients use the standard library's ``http.client``.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


def _start_serve(home: Path, port: int, log: Path, workers: int) -> subprocess.Popen[bytes]:
    """``interlock serve --workers N`` on ``home`` and ``port``; waits until it answers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTERLOCK_")}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "interlock.cli",
                "serve",
                "--home",
                str(home),
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--workers",
                str(workers),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        _wait_ready(proc, port, log)
    except BaseException:
        _stop(proc)
        raise
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _tree(pid: int) -> list[int]:
    """``pid`` and its child processes (the workers of ``serve --workers``)."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        pids.extend(int(c) for c in children)
    return pids


def _cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds used so far by ``pids`` (Linux ``/proc``; 0 elsewhere)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / tick


def _load(
    port: int, body: bytes, *, seconds: float, connections: int, rate: float, procs: int
) -> dict[str, Any]:
    """Run :mod:`interlock.bench.load` in ``procs`` processes at once and add their counts."""
    each = {
        "port": port,
        "body": body.decode(),
        "seconds": seconds,
        "connections": max(1, connections // procs),
        "rate": rate / procs,
    }
    with tempfile.TemporaryDirectory(prefix="interlock-load-") as where:
        outs = [Path(where) / f"load-{i}.json" for i in range(procs)]
        runs = [
            subprocess.Popen(
                [sys.executable, "-m", "interlock.bench.load", json.dumps(each), str(out)],
                stderr=subprocess.PIPE,
            )
            for out in outs
        ]
        parts = []
        for run, out in zip(runs, outs, strict=True):
            _, err = run.communicate(timeout=seconds + 120)
            if run.returncode != 0:
                raise RuntimeError(f"the load generator failed: {err.decode()[-2000:]}")
            parts.append(json.loads(out.read_text(encoding="utf-8")))
    total: dict[str, Any] = {"requests": 0, "allowed": 0, "seconds": 0.0, "latencies_us": []}
    for part in parts:
        total["requests"] += part["requests"]
        total["allowed"] += part["allowed"]
        total["seconds"] = max(total["seconds"], part["seconds"])
        total["latencies_us"].extend(part["latencies_us"])
    return total


_WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open(os.getenv("BODY_FILE")):read("*a")
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) denied = 0 end
function response(status, headers, body)
  if status ~= 200 or not string.find(body, '"effect":"allow"', 1, true) then
    denied = denied + 1
  end
end
function done(summary, latency, requests)
  local d = 0
  for _, t in ipairs(threads) do d = d + t:get("denied") end
  io.write(string.format("RESULT %d %d %f\\n", summary.requests, d, summary.duration / 1e6))
end
"""


def _throughput(port: int, body: bytes, tmp: Path, seconds: float) -> tuple[float, int, int]:
    """Decisions/s of a closed-loop load over keep-alive loopback connections: ``wrk`` (2
    threads, 64 connections: the server's cap per client address, so ``--workers 1`` serves
    them all too) when it is installed, else :mod:`interlock.bench.load` in two processes.
    Returns (rate, requests, not allowed)."""
    connections = 64
    wrk = shutil.which("wrk")
    if wrk is not None:
        script, body_file = tmp / "post.lua", tmp / "body.json"
        script.write_text(_WRK_SCRIPT)
        body_file.write_bytes(body)
        run = subprocess.run(  # the wrk found on PATH, fixed arguments
            [
                wrk,
                "-t2",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "-s",
                str(script),
                f"http://127.0.0.1:{port}/v1/decisions",
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 120,
            check=False,
            env={**os.environ, "BODY_FILE": str(body_file)},
        )
        for line in run.stdout.splitlines():
            if line.startswith("RESULT "):
                _, n, bad, dur = line.split()
                return int(n) / float(dur), int(n), int(bad)
        raise RuntimeError(f"wrk failed: {run.stdout[-1000:]} {run.stderr[-1000:]}")
    out = _load(port, body, seconds=seconds, connections=connections, rate=0, procs=2)
    return out["requests"] / out["seconds"], out["requests"], out["requests"] - out["allowed"]


def _bench_workers(home: Path, body: bytes, tmp: Path, quick: bool) -> dict[str, Result]:
    """``serve --workers 2`` beside ``--workers 1`` on the same home: closed-loop throughput,
    CPU per decision of all server processes, and p99 of an open-loop load at half the
    two-worker throughput (both servers at that same offered rate)."""
    seconds = 2.0 if quick else 8.0
    paced_s = 2.0 if quick else 6.0
    measured: dict[int, dict[str, float]] = {}
    rate2 = 0.0
    for workers in (2, 1):
        port = _free_port()
        proc = _start_serve(home, port, tmp / f"serve-{workers}.log", workers)
        try:
            _throughput(port, body, tmp, 1.0)  # warm: connections, caches, the SQLite pages
            pids = _tree(proc.pid)
            cpu0 = _cpu_s(pids)
            rate, requests, bad = _throughput(port, body, tmp, seconds)
            cpu = _cpu_s(pids) - cpu0
            if workers == 2:
                rate2 = rate
            paced = _load(
                port, body, seconds=paced_s, connections=64, rate=max(1.0, rate2 / 2), procs=1
            )
            lat = paced["latencies_us"] or [0.0]
            measured[workers] = {
                "rate": rate,
                "requests": requests,
                "bad": bad + paced["requests"] - paced["allowed"],
                "cpu_us": cpu / max(1, requests) * 1e6,
                "p50_ms": pct(lat, 0.5) / 1000,
                "p99_ms": pct(lat, 0.99) / 1000,
                "paced": paced["requests"] / paced_s,
            }
        finally:
            _stop(proc)
    two, one = measured[2], measured[1]
    tool = "wrk -t2 -c64" if shutil.which("wrk") else "interlock.bench.load, 2 processes x 32"
    ok = two["bad"] == 0 and one["bad"] == 0
    return {
        "http_workers2_decisions_per_s": figure(
            two["rate"],
            "decisions/s",
            one["rate"],
            f"interlock serve --workers 1, same load ({tool}, keep-alive loopback)",
            ">= 8,000/s with --workers 2",
            two["rate"] >= 8000 and ok,
            load=tool,
            requests=two["requests"],
            not_allowed=two["bad"],
            baseline_not_allowed=one["bad"],
        ),
        "http_workers2_p99_half_load_ms": figure(
            two["p99_ms"],
            "ms",
            one["p99_ms"],
            f"--workers 1 at the same offered load ({round(rate2 / 2)}/s, p99 ms)",
            "p99 <= 5 ms at half the --workers 2 throughput",
            two["p99_ms"] <= 5 and ok,
            offered_per_s=round(rate2 / 2),
            achieved_per_s=round(two["paced"]),
            baseline_achieved_per_s=round(one["paced"]),
            p50_ms=round(two["p50_ms"], 3),
            baseline_p50_ms=round(one["p50_ms"], 3),
            load="interlock.bench.load, open loop, 64 connections, one process",
        ),
        "http_workers2_cpu_per_decision_us": figure(
            two["cpu_us"],
            "us",
            one["cpu_us"],
            "--workers 1 under the same load (CPU us of all server processes per decision)",
            "reported (all server processes; the load generator excluded)",
            True,
        ),
    }


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
        proc = _start_serve(home.path, port, log, 1)
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
            _stop(proc)
        workers = _bench_workers(home.path, body, Path(tmp), quick)

    p50, base_p50 = pct(lat, 0.5), pct(base_lat, 0.5)
    return {
        **workers,
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
