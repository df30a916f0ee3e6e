"""One sequential appender, its records committed in its own process or by a sequencer in
another process (``interlock serve --workers``' shared sequencer): wall time and CPU per append
of each, the sequencer's process included. Not part of ``make bench``: run it alone.

    .venv/bin/python bench/shared_latency.py [appends]
"""

from __future__ import annotations

import os
import resource
import socket
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from interlock.ledger.note import NoteSigner
from interlock.ledger.protocols import Append
from interlock.ledger.storage.sqlite import SqliteLedger
from interlock.ledger.storage.sqlite_shared import SequencerHost, SequencerLink


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _appends(led: SqliteLedger, n: int) -> tuple[float, float]:
    """µs of wall time and of this process's CPU per append, ``n`` appends one at a time."""
    cpu0, t0 = _cpu(), time.perf_counter()
    for i in range(n):
        led.append([Append(record=b'{"n":%d}' % i)])
    return (time.perf_counter() - t0) / n * 1e6, (_cpu() - cpu0) / n * 1e6


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    with tempfile.TemporaryDirectory(prefix="interlock-shared-latency-") as tmp:
        path = Path(tmp) / "ledger.db"
        signer = NoteSigner("interlock.bench/shared", Ed25519PrivateKey.generate())
        SqliteLedger(path, signer=signer, create=True).close()
        led = SqliteLedger(path, signer=signer)
        wall, cpu = _appends(led, n)
        led.close()
        print(f"in-process sequencer:  {wall:7.1f} µs an append, {cpu:6.1f} µs CPU")
        ours, theirs = socket.socketpair()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            ours.close()
            os.close(read)
            led = SqliteLedger(path, signer=signer)
            led.attach_sequencer(SequencerLink(theirs))
            wall, cpu = _appends(led, n)
            led.close()
            os.write(write, f"{wall} {cpu}".encode())
            os._exit(0)
        theirs.close()
        os.close(write)
        host = SequencerHost(SqliteLedger(path, signer=signer))
        cpu0 = _cpu()
        host.serve(ours, "appender")
        os.waitpid(pid, 0)
        host_cpu = (_cpu() - cpu0) / n * 1e6
        host.close()
        wall, cpu = (float(x) for x in os.read(read, 100).split())
        print(
            f"shared sequencer:      {wall:7.1f} µs an append, {cpu + host_cpu:6.1f} µs CPU"
            f" ({cpu:.1f} in the appender, {host_cpu:.1f} in the sequencer's process)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
