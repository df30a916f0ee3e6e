"""``interlock witness init|serve|show`` and ``ledger verify --witness`` as a user runs them:
real subprocesses, real HTTP on loopback, real exit codes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

EXE = [sys.executable, "-m", "interlock.cli"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    env.pop("INTERLOCK_HOME", None)
    return subprocess.run([*EXE, *args], capture_output=True, text=True, env=env, timeout=120)


class Served:
    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen(
            [*EXE, "witness", "serve", str(path), "--port", "0"],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()  # "witness <vkey> listening on http://..."
        m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
        # keep reading stderr so the server never blocks on a full pipe
        self._drain = threading.Thread(target=self.proc.stderr.read, daemon=True)
        self._drain.start()
        if not m:
            self.stop()
            raise AssertionError(line)
        self.url = m.group(1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(20)
        self._drain.join(20)
        assert self.proc.stderr is not None
        self.proc.stderr.close()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    r = run("init", "--json", "--home", str(h))
    assert r.returncode == 0, r.stderr
    assert run("ledger", "checkpoint", "--home", str(h)).returncode == 0
    return h


@pytest.fixture
def servers(tmp_path: Path, home: Path) -> Iterator[list[tuple[Served, str, Path]]]:
    vkey = json.loads(run("ledger", "vkey", "--json", "--home", str(home)).stdout)["vkey"]
    origin = vkey.split("+", 1)[0]
    out: list[tuple[Served, str, Path]] = []
    try:
        for i in range(2):
            w = tmp_path / f"w{i}"
            r = run(
                "witness",
                "init",
                str(w),
                "--name",
                f"w.test/{i}",
                "--log",
                f"{origin}={vkey}",
                "--json",
            )
            assert r.returncode == 0, r.stderr
            assert (w.stat().st_mode & 0o777) == 0o700
            assert ((w / "witness.key").stat().st_mode & 0o777) == 0o600
            out.append((Served(w), json.loads(r.stdout)["vkey"], w))
        yield out
    finally:
        for s, _, _ in out:
            s.stop()


def test_verify_requires_the_witness_quorum(
    home: Path, servers: list[tuple[Served, str, Path]]
) -> None:
    urls = ", ".join(json.dumps(s.url) for s, _, _ in servers)
    keys = ", ".join(json.dumps(k) for _, k, _ in servers)
    with (home / "interlock.toml").open("a", encoding="utf-8") as fh:
        fh.write(f"\n[witness]\nquorum = 2\nurls = [{urls}]\nkeys = [{keys}]\ntimeout_ms = 2000\n")
    r = run("ledger", "verify", "--witness", "--json", "--home", str(home))
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads(r.stdout)
    assert sorted(data["witnessed"]["cosigners"]) == ["w.test/0", "w.test/1"]
    shown = json.loads(run("witness", "show", str(servers[0][2]), "--json").stdout)
    assert shown["logs"][0]["size"] == data["size"]
    assert shown["evidence"] == []
    servers[1][0].stop()  # one of two down: quorum 2 is not met, fail closed
    r = run("ledger", "verify", "--witness", "--json", "--home", str(home))
    assert r.returncode == 1
    assert json.loads(r.stdout)["code"] == "POLICY_STALE"


def test_verify_witness_without_config_is_a_usage_error(home: Path) -> None:
    r = run("ledger", "verify", "--witness", "--home", str(home))
    assert r.returncode == 2
    assert "[witness] urls" in r.stderr


def test_a_zero_quorum_is_refused_in_config(home: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from interlock.ledger.cosign import Cosigner

    vkey = Cosigner("w.test/0", Ed25519PrivateKey.generate()).vkey
    with (home / "interlock.toml").open("a", encoding="utf-8") as fh:
        fh.write(f'\n[witness]\nquorum = 0\nurls = ["http://127.0.0.1:1"]\nkeys = ["{vkey}"]\n')
    r = run("ledger", "verify", "--home", str(home))
    assert r.returncode != 0
    assert "quorum is at least 1" in r.stderr
