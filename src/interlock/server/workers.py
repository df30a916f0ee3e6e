"""``interlock serve --workers N``: N processes serving one home on one address.

    >>> from interlock.server.workers import run_workers
    >>> run_workers(Path(".interlock"), workers=2, host="127.0.0.1", port=8750)  # doctest: +SKIP
    0

One Python process uses one core for the HTTP stack and the gate's pipeline (the GIL). Here
the parent binds ``workers`` listening sockets to the same address with ``SO_REUSEPORT`` and
starts one worker process per socket (``python -m interlock.server.workers``); each worker
opens its own :class:`~interlock.gate.Gate` on the home and serves the API on its socket. The
kernel spreads new connections over the sockets (by a hash of the connection's addresses), so
each keep-alive connection is served by one worker.

Why these choices:

* **SO_REUSEPORT sockets bound by the parent**, rather than one shared socket or uvicorn's
  own multi-process mode: the kernel balances connections between the sockets (a shared
  socket lets whichever worker wakes first accept a burst of them); a bind error is reported
  once, before any worker starts; port 0 picks one port for all; and each worker runs the
  same ``serve`` as a single process does (its header and body timeouts, its connection caps
  and a gate it closes on the way out), which uvicorn's mode (an import string and a
  picklable configuration) cannot give. Only a process of the same user can join the port.
* **One sequencer for all workers** (a SQLite home): the parent opens the ledger and commits
  every worker's records with its one sequencer (:mod:`interlock.ledger.storage.sqlite_shared`);
  each worker reaches it over a socketpair it inherits. Records of all workers share commits
  (one fsync a batch) instead of each worker's commits waiting for the others' write lock.
  Durability is unchanged: each allow is answered only after the commit that holds it, and a
  worker that loses the sequencer denies and stops (so the server stops). Governance changes
  made through any worker (quarantine, revocation, kill switch) are on the ledger, which every
  gate follows. On a fleet's PostgreSQL store each worker commits its own records.
* **A worker that exits stops the server**: the parent stops the other workers and exits 1,
  naming the worker and its status. A half-working server (fewer workers than asked, a port
  some connections of which nobody accepts) is never left running silently; restarting is
  the service manager's job (systemd ``Restart=on-failure``, a Kubernetes pod), where it is
  visible.
* **SIGTERM or SIGINT** to the parent is passed to every worker, which shuts down gracefully
  (answers in flight, closes its gate) as a single ``interlock serve`` does; the parent exits
  0 once all have exited (workers still running after ``stop_timeout`` seconds are killed, and
  the parent exits 1). If the parent dies, each worker notices (a pipe it holds closes) and
  stops too.

What keeps its state in one process's memory is refused with more than one worker (see
:func:`interlock.server.app.create_app`); ``interlock serve`` refuses ``--ext-authz``,
``--admission``, ``--execution-lease`` and ``--console-public`` with ``--workers`` above 1.
``/healthz`` names the worker that answered (``worker``); ``/metrics`` counts that worker's
requests.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from interlock.ledger.storage.sqlite_shared import SequencerHost

__all__ = ["WorkerError", "bind_sockets", "run_workers"]

_log = logging.getLogger("interlock.server")

#: seconds the workers have to stop after SIGTERM before they are killed
DEFAULT_STOP_TIMEOUT = 30.0
_POLL_S = 0.1


class WorkerError(Exception):
    """The workers could not be started (a bind error, a worker that could not be spawned)."""


def bind_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` listening TCP sockets on ``host:port`` with ``SO_REUSEPORT`` (port 0: the
    first picks a free port, the others join it).

    Raises:
        ValueError: ``count`` < 1.
        WorkerError: the address cannot be bound, or the platform has no ``SO_REUSEPORT``.
    """
    if count < 1:
        raise ValueError("at least one socket")
    if not hasattr(socket, "SO_REUSEPORT"):
        raise WorkerError("--workers above 1 needs SO_REUSEPORT (Linux, BSD, macOS)")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    out: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            out.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host.strip("[]"), port))
            port = sock.getsockname()[1]
            sock.listen(2048)
            sock.set_inheritable(True)
    except OSError as exc:
        for sock in out:
            sock.close()
        raise WorkerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return out


def _spawn(
    sock: socket.socket,
    parent_fd: int,
    config: dict[str, object],
    sequencer: socket.socket | None,
) -> subprocess.Popen[bytes]:
    fds = [sock.fileno(), parent_fd]
    extra: dict[str, object] = {"listen_fd": sock.fileno(), "parent_fd": parent_fd}
    if sequencer is not None:
        fds.append(sequencer.fileno())
        extra["sequencer_fd"] = sequencer.fileno()
    arg = json.dumps({**config, **extra})
    # our own interpreter and module, no shell
    return subprocess.Popen(
        [sys.executable, "-m", "interlock.server.workers", arg],
        pass_fds=fds,
    )


def _open_sequencer(home: Path) -> SequencerHost | None:
    """The workers' one sequencer on ``home``'s SQLite ledger, or None: a fleet's store
    (each worker commits its own), or a home whose ledger cannot be opened (each worker then
    opens its gate, which denies with the reason, and commits its own records)."""
    from interlock.errors import Error
    from interlock.home import Home
    from interlock.ledger.note import NoteSigner
    from interlock.ledger.storage.sqlite import SqliteLedger
    from interlock.ledger.storage.sqlite_shared import SequencerHost

    try:
        h = Home.load(home)
        location = h.ledger_location
        if h.config.store is not None or not isinstance(location, Path):
            return None
        signer = NoteSigner(h.config.origin, h.private_key("log"))
        ledger = SqliteLedger(
            location,
            signer=signer,
            durability=h.config.durability,
            busy_timeout_ms=h.config.ledger_timeout_ms,
        )
    except Error as exc:
        print(
            f"interlock serve: each worker commits its own records: {exc.diagnostics()}",
            file=sys.stderr,
            flush=True,
        )
        return None
    return SequencerHost(ledger)


def run_workers(
    home: Path,
    *,
    workers: int,
    host: str,
    port: int,
    log_level: str = "info",
    allowed_hosts: Sequence[str] = (),
    stop_timeout: float = DEFAULT_STOP_TIMEOUT,
    on_start: Callable[[int, list[int]], None] | None = None,
) -> int:
    """Serve ``home`` on ``host:port`` with ``workers`` processes until SIGTERM or SIGINT (see
    the module); ``on_start(port, pids)`` once they are started. Returns the exit status: 0
    after a stop signal once every worker stopped, 1 when a worker exited on its own (the
    others are stopped first) or had to be killed. Call from the main thread.

    Raises:
        ValueError: ``workers`` < 1.
        WorkerError: the address cannot be bound, or a worker cannot be started.
    """
    if isinstance(workers, bool) or workers < 1:
        raise ValueError("workers must be at least 1")
    sockets = bind_sockets(host, port, workers)
    bound = sockets[0].getsockname()[1]
    # each worker holds the read end: when this process dies, the pipe closes and it stops
    parent_r, parent_w = os.pipe()
    config: dict[str, object] = {
        "home": str(home.resolve()),
        "host": host,
        "port": bound,
        "log_level": log_level,
        "allowed_hosts": list(allowed_hosts),
        "workers": workers,
    }
    procs: list[subprocess.Popen[bytes]] = []
    stop = threading.Event()
    previous: dict[int, object] = {}
    sequencer = _open_sequencer(home) if workers > 1 else None

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    try:
        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            for sock in sockets:
                mine: socket.socket | None = None
                theirs: socket.socket | None = None
                if sequencer is not None:
                    mine, theirs = socket.socketpair()
                try:
                    proc = _spawn(sock, parent_r, config, theirs)
                except OSError:
                    if mine is not None:
                        mine.close()
                    raise
                finally:
                    if theirs is not None:
                        theirs.close()  # the worker holds its copy
                procs.append(proc)
                if sequencer is not None and mine is not None:
                    sequencer.serve(mine, f"worker {proc.pid}")
        except OSError as exc:
            raise WorkerError(f"cannot start a worker: {exc.strerror or exc}") from None
        finally:
            # the workers hold their own copies; a socket nobody serves must not stay open
            for sock in sockets:
                sock.close()
            os.close(parent_r)
        if on_start is not None:
            on_start(bound, [p.pid for p in procs])
        status = 0
        while not stop.is_set():
            dead = next((p for p in procs if p.poll() is not None), None)
            if dead is not None:
                _report_dead(dead, workers)
                status = 1
                break
            stop.wait(_POLL_S)
        if not _stop_all(procs, stop_timeout):
            status = 1
        return status
    finally:
        _stop_all(procs, stop_timeout)
        if sequencer is not None:
            sequencer.close()
        os.close(parent_w)
        for s, handler in previous.items():
            signal.signal(s, handler)  # type: ignore[arg-type]


def _report_dead(proc: subprocess.Popen[bytes], workers: int) -> None:
    code = proc.returncode
    how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited ({code})"
    print(
        f"interlock serve: worker {proc.pid} {how}; stopping the other "
        f"{workers - 1} worker(s): a server with fewer workers than asked is not left running",
        file=sys.stderr,
        flush=True,
    )


def _stop_all(procs: Sequence[subprocess.Popen[bytes]], timeout: float) -> bool:
    """SIGTERM every live worker, wait ``timeout`` s, then SIGKILL the rest. True when all
    stopped on their own."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    clean = True
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            clean = False
    return clean


def _watch_parent(fd: int) -> None:
    """Stop this worker (as SIGTERM does) when the parent's pipe closes: the parent died."""

    def watch() -> None:
        try:
            while os.read(fd, 1):
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="interlock-parent-watch", daemon=True).start()


def _stop_self(reason: str) -> None:
    """The sequencer is lost: every append of this worker is refused (it denies); stop, so
    that the parent stops the server instead of leaving it half-working."""
    print(f"interlock serve worker {os.getpid()}: {reason}; stopping", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)


def _worker(config: dict[str, object]) -> int:
    """One worker: open the gate on the home, serve on the inherited socket, close the gate."""
    from interlock.errors import Error
    from interlock.gate import Gate
    from interlock.server import serve

    listen_fd, parent_fd = config["listen_fd"], config["parent_fd"]
    if not isinstance(listen_fd, int) or not isinstance(parent_fd, int):
        print("interlock serve worker: bad configuration", file=sys.stderr)
        return 2
    sock = socket.socket(fileno=listen_fd)
    _watch_parent(parent_fd)
    try:
        gate = Gate.open(Path(str(config["home"])))
    except Error as exc:
        print(f"interlock serve worker {os.getpid()}: {exc.diagnostics()}", file=sys.stderr)
        return 2
    hosts = config.get("allowed_hosts")
    workers = config.get("workers")
    seq_fd = config.get("sequencer_fd")
    if isinstance(seq_fd, int):
        from interlock.ledger.storage.sqlite import SqliteLedger
        from interlock.ledger.storage.sqlite_shared import SequencerLink

        link = SequencerLink(socket.socket(fileno=seq_fd), on_lost=_stop_self)
        if isinstance(gate.ledger, SqliteLedger):
            gate.ledger.attach_sequencer(link)
        else:
            link.close()
    with gate:
        serve(
            gate,
            host=str(config["host"]),
            port=int(str(config["port"])),
            log_level=str(config["log_level"]),
            allowed_hosts=[str(h) for h in hosts] if isinstance(hosts, list) else [],
            sockets=[sock],
            workers=workers if isinstance(workers, int) else 1,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(_worker(json.loads(sys.argv[1])))
