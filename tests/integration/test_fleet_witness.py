"""A fleet node that requires a witness quorum (``[witness]``): it trusts the shared log's head
only while a quorum of witnesses has cosigned the log's newest checkpoint — real PostgreSQL, a
real ``interlock witness serve`` process on loopback, real Ed25519."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import edit_config, tool_request

EXE = [sys.executable, "-m", "interlock.cli"]
LEASE_MS = 1000


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "INTERLOCK_HOME"}
    return subprocess.run([*EXE, *args], capture_output=True, text=True, env=env, timeout=120)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Witness:
    """``interlock witness serve DIR --port PORT`` as a process of its own."""

    def __init__(self, path: Path, port: int) -> None:
        self.proc = subprocess.Popen(
            [*EXE, "witness", "serve", str(path), "--port", str(port)],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()
        self._drain = threading.Thread(target=self.proc.stderr.read, daemon=True)
        self._drain.start()
        assert re.search(rf"listening on http://127\.0\.0\.1:{port}", line), line

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(20)
        self._drain.join(20)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def _until(check: Any, timeout: float, last: Any = None) -> float:
    t0 = time.monotonic()
    while not check():
        assert time.monotonic() - t0 < timeout, f"timed out; last: {last() if last else None}"
        time.sleep(0.05)
    return time.monotonic() - t0


@pytest.fixture
def home(tmp_path: Path, pg_url: str) -> Path:
    """A node's home on the test's own PostgreSQL database (the ``issue`` fixture's home)."""
    from interlock.bootstrap import init_home

    path = init_home(tmp_path / "node1", origin="interlock.test/witnessed", store=pg_url).path
    edit_config(path, "deadline_ms = 50", "deadline_ms = 5000")
    return path


def test_a_node_trusts_the_head_only_while_witnesses_cosign_it(
    tmp_path: Path, home: Path, issue: Any
) -> None:
    from interlock.gate import Gate

    vkey = json.loads(_cli("ledger", "vkey", "--json", "--home", str(home)).stdout)["vkey"]
    wdir = tmp_path / "witness"
    origin = vkey.split("+", 1)[0]
    r = _cli(
        "witness", "init", str(wdir), "--name", "w.test/a", "--log", f"{origin}={vkey}", "--json"
    )
    assert r.returncode == 0, r.stderr
    wkey = json.loads(r.stdout)["vkey"]
    port = _free_port()
    with (home / "interlock.toml").open("a", encoding="utf-8") as fh:
        fh.write(
            f'\n[witness]\nquorum = 1\nurls = ["http://127.0.0.1:{port}"]\nkeys = ["{wkey}"]\n'
            "timeout_ms = 500\n"
        )
    # a PostgreSQL home states its lease; trusting the edit trusts the [witness] lines too
    edit_config(home, "lease_ms = 2000", f"lease_ms = {LEASE_MS}")

    request = tool_request(issue())
    witness = Witness(wdir, port)
    try:
        with Gate.open(home) as gate:
            assert gate.node is not None
            # the first checkpoint with a quorum: then decisions are allowed
            _until(lambda: gate.decide(request).allowed, 15, lambda: gate.decide(request).reasons)
            assert gate.node.witnessed_size > 0

            witness.stop()

            # new entries get a new checkpoint (within a second) that no witness cosigns:
            # within the lease after it, the node denies POLICY_STALE and says why
            def denied() -> bool:
                d = gate.decide(request)
                return d.codes == ("POLICY_STALE",) and "witness" in d.reasons[0].detail

            waited = _until(denied, 1 + LEASE_MS / 1000 * 3 + 5)
            print(f"denied {waited:.2f} s after the witness stopped")
            for _ in range(5):
                d = gate.decide(request)
                assert not d.allowed and d.codes == ("POLICY_STALE",), d.reasons
                assert d.ledger_index is None  # nothing recorded, nothing allowed

            witness = Witness(wdir, port)  # the same witness, its state kept
            _until(lambda: gate.decide(request).allowed, 15)
        shown = json.loads(_cli("witness", "show", str(wdir), "--json").stdout)
        assert shown["evidence"] == []  # one honest log: no split view recorded
        assert shown["logs"][0]["size"] > 0
    finally:
        witness.stop()
