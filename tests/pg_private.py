"""Private PostgreSQL servers for tests that stop, crash or promote one: initdb in a temporary
directory on free 127.0.0.1 ports, so the machine's shared server (5432) is never touched.
Run as root, the tools run as ``postgres`` (initdb refuses root)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateServers:
    """The PostgreSQL tools and a temporary directory (owned by ``postgres`` when run as
    root) for one test's servers; :meth:`run` runs a tool as the right user."""

    def __init__(self, prefix: str) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        found = shutil.which("pg_ctl")
        pg_ctl = bins[-1] if bins else found
        if pg_ctl is None:
            pytest.fail(
                "pg_ctl not found: scripts/ensure-postgres.sh installs PostgreSQL", pytrace=False
            )
        self.bin = Path(pg_ctl).parent
        self.dir = Path(tempfile.mkdtemp(prefix=prefix))
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")

    def run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin / tool), *args]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"{tool}: {r.stdout}{r.stderr}"


class Cluster(PrivateServers):
    """A PostgreSQL cluster of the test's own, on a free port."""

    def __init__(self) -> None:
        super().__init__("interlock-pg-")
        self.data = self.dir / "data"
        self.port = free_port()
        self.run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=on"
        log = str(self.dir / "log")
        self.run("pg_ctl", "-D", str(self.data), "-l", log, "-w", "-o", opts, "start")

    def stop(self) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def close(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(name="cluster")
def cluster_fixture() -> Iterator[Cluster]:
    """A started :class:`Cluster`, stopped and removed after the test (import this to use it)."""
    c = Cluster()
    try:
        c.start()
        yield c
    finally:
        c.close()
