"""`interlock serve --workers N` as an operator runs it: real worker processes on one loopback
port and one home; both answer, every decision is on the one ledger once, SIGTERM stops all of
them, a worker that dies stops the server, and what one process's memory holds is refused."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import tool_request
from tests.e2e.test_exec import EXE, _env, cli, records, token
from tests.e2e.test_serve_cli import _free_port, _wait_ready

#: connections opened to reach both workers: the kernel spreads them by a hash of their
#: addresses, so all 24 land on one of two sockets with probability 2**-23
CONNECTIONS = 24


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by a parent that is itself gone) is not serving
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _pids(stderr_line: str) -> list[int]:
    match = re.search(r"workers \(pids ([\d, ]+)\)", stderr_line)
    assert match, stderr_line
    return [int(p) for p in match.group(1).split(", ")]


@pytest.fixture
def workers2(home: Path) -> Iterator[tuple[str, subprocess.Popen[str], list[int]]]:
    port = _free_port()
    proc = subprocess.Popen(
        [*EXE, "serve", "--port", str(port), "--log-level", "warning", "--workers", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(home),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        assert proc.stderr is not None
        pids = _pids(proc.stderr.readline())
        _wait_ready(proc, url)
        yield url, proc, pids
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=60)


def test_two_workers_answer_and_record_on_one_ledger(
    home: Path, workers2: tuple[str, subprocess.Popen[str], list[int]]
) -> None:
    url, proc, pids = workers2
    tok = token(home, "tool.call:Tool::*")
    req = tool_request(tok)
    answered: dict[int, list[dict[str, object]]] = {}
    sequencer: dict[int, object] = {}
    clients = [httpx.Client(base_url=url, timeout=30) for _ in range(CONNECTIONS)]
    try:
        for http in clients:
            # one keep-alive connection each: /healthz names the worker holding it
            health = http.get("/healthz").json()
            worker = health["worker"]
            sequencer[worker] = health.get("sequencer")
            for _ in range(3):
                r = http.post("/v1/decisions", json=req)
                assert r.status_code == 200
                assert r.json()["effect"] == "allow"
                answered.setdefault(worker, []).append(r.json())
            assert http.get("/healthz").json()["worker"] == worker
    finally:
        for http in clients:
            http.close()
    assert set(answered) == set(pids)  # both workers decided
    # both hand their records to the one sequencer, in the server's parent
    assert sequencer == {p: proc.pid for p in pids}
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert not any(_alive(p) for p in pids)
    # every decision is on the one ledger exactly once, at the index its answer gave
    decisions = [d for ds in answered.values() for d in ds]
    by_id = Counter(r["id"] for r in records(home) if r.get("type") == "decision")
    assert all(by_id[d["request_id"]] == 1 for d in decisions)
    indices = [d["ledger_index"] for d in decisions]
    assert len(set(indices)) == len(indices) == CONNECTIONS * 3
    assert cli(home, "ledger", "verify").returncode == 0
    for d in decisions[:: len(decisions) // 4]:
        r = cli(home, "ledger", "show", str(d["ledger_index"]), "--json")
        assert f'"id": "{d["request_id"]}"' in r.stdout


def test_a_killed_worker_stops_the_server(
    home: Path, workers2: tuple[str, subprocess.Popen[str], list[int]]
) -> None:
    url, proc, pids = workers2
    victim, other = pids
    os.kill(victim, signal.SIGKILL)
    assert proc.wait(timeout=60) == 1
    _out, err = proc.communicate(timeout=30)
    assert f"worker {victim} was killed by signal 9" in err
    deadline = time.monotonic() + 10
    while _alive(other) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(other)
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/healthz", timeout=2)


def test_what_one_process_holds_is_refused_and_not_recorded(
    home: Path, workers2: tuple[str, subprocess.Popen[str], list[int]]
) -> None:
    url, _proc, _pids = workers2
    tok = token(home, "tool.call:Tool::*")
    req = tool_request(tok)
    before = len(records(home))
    with httpx.Client(base_url=url, timeout=30) as http:
        started = http.post("/v1/executions", json=req)
        assert started.status_code == 503
        assert "--workers 1" in started.json()["detail"]
        assert http.put("/v1/admin/policy", json={}).status_code == 409
        assert http.get("/console").status_code == 503
        assert http.get("/console/api/session").status_code == 503
        assert http.get("/console/proof").status_code == 200
    assert len(records(home)) == before  # nothing was recorded


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "--workers must be at least 1"),
        (["--workers", "-3"], "--workers must be at least 1"),
        (["--workers", "2", "--ext-authz", "127.0.0.1:9001"], "--ext-authz cannot be used"),
        (["--workers", "2", "--execution-lease", "5"], "--execution-lease cannot be used"),
        (["--workers", "2", "--console-public"], "--console-public cannot be used"),
        (["--workers", "2", "--admission", "127.0.0.1:9443"], "--admission cannot be used"),
    ],
)
def test_bad_workers_options_are_refused(home: Path, args: list[str], message: str) -> None:
    r = cli(home, "serve", "--port", str(_free_port()), *args)
    assert r.returncode == 2
    assert message in " ".join(r.stderr.split())


def test_a_port_in_use_is_refused_before_any_worker_starts(home: Path) -> None:
    port = _free_port()
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        r = cli(home, "serve", "--port", str(port), "--workers", "2")
    assert r.returncode == 1
    assert "cannot listen on 127.0.0.1" in " ".join(r.stderr.split())
