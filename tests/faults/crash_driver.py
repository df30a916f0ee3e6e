"""The crash trials' process driver: imports Interlock once, then forks what each trial needs,
so a hundred trials do not pay a hundred interpreter start-ups. Commands on stdin, one JSON
object a line; answers on stdout.

    python tests/faults/crash_driver.py

``{"op": "start", "homes": [...], "out": DIR, "threads": 2}`` forks one decider per home
(``homes`` may name the same home several times) and answers ``{"pids": [...]}`` once each has
opened its gate. A decider decides the request in ``DIR/request.json`` in a loop on
``threads`` threads (with ``"batch": k`` > 1, the first thread decides k at a time with
``decide_many``) and appends ``ALLOW <request id> <ledger index> <decision hash>`` to
``DIR/allows-<pid>`` — one ``write(2)`` per answer, after the allow was returned: what a caller
was told survives its SIGKILL. SIGTERM makes it stop and close its gate.

With ``"shared": true`` it first forks a sequencer host on the first home (what ``interlock
serve --workers`` runs in its parent: :mod:`interlock.ledger.storage.sqlite_shared`), whose pid
comes first in ``pids``; every decider then hands its records to that one sequencer, and stops
(closing its gate) when the host is gone. SIGTERM makes the host close.

``{"op": "reap"}`` waits for every decider and answers ``{"status": {pid: wait status}}``.

``{"op": "verify", "home": HOME}`` runs ``interlock ledger verify --json`` (the CLI's own
function, in a forked child) and answers ``{"exit": code, "out": stdout}``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any


def _decider(
    home: str, out: Path, threads: int, batch: int, link: socket.socket | None = None
) -> None:
    from interlock.gate import Gate
    from interlock.ledger.storage.sqlite_shared import SequencerLink

    raw = (out / "request.json").read_text()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    gate = Gate.open(home)
    if link is not None:
        gate.ledger.attach_sequencer(  # type: ignore[attr-defined]
            SequencerLink(link, on_lost=lambda _reason: stop.set())
        )
    fd = os.open(out / f"allows-{os.getpid()}", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    (out / f"ready-{os.getpid()}").touch()

    def loop(many: bool) -> None:
        while not stop.is_set():
            out = gate.decide_many([raw] * batch) if many else [gate.decide(raw)]
            lines = [
                f"ALLOW {d.request_id} {d.ledger_index} {d.decision_hash}\n"
                for d in out
                if d.allowed
            ]
            if lines:
                os.write(fd, "".join(lines).encode())

    # with ``batch`` > 1 the first thread decides ``batch`` requests a call (decide_many): the
    # sequencer's batches then mix one large caller with single ones
    workers = [threading.Thread(target=loop, args=(batch > 1 and t == 0,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    gate.close()
    os.close(fd)


def _host(home: str, out: Path, ends: list[socket.socket]) -> None:
    from interlock.home import Home
    from interlock.ledger.note import NoteSigner
    from interlock.ledger.storage.sqlite import SqliteLedger
    from interlock.ledger.storage.sqlite_shared import SequencerHost

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    h = Home.load(Path(home))
    location = h.ledger_location
    assert isinstance(location, Path)
    ledger = SqliteLedger(
        location, signer=NoteSigner(h.config.origin, h.private_key("log")), durability="full"
    )
    host = SequencerHost(ledger)
    for n, end in enumerate(ends):
        host.serve(end, f"decider {n}")
    (out / f"ready-{os.getpid()}").touch()
    stop.wait()
    host.close()


def _start(cmd: dict[str, Any]) -> list[int]:
    out, threads = Path(cmd["out"]), int(cmd["threads"])
    batch = int(cmd.get("batch", 1))
    homes: list[str] = cmd["homes"]
    if not cmd.get("shared"):
        return [_fork(lambda h=h: _decider(h, out, threads, batch)) for h in homes]
    pairs = [socket.socketpair() for _ in homes]
    mine = [a for a, _ in pairs]
    theirs = [b for _, b in pairs]

    def host() -> None:
        for b in theirs:
            b.close()
        _host(homes[0], out, mine)

    children = [_fork(host)]
    for n, h in enumerate(homes):

        def decider(h: str = h, n: int = n) -> None:
            for s in [*mine, *(b for i, b in enumerate(theirs) if i != n)]:
                s.close()
            _decider(h, out, threads, batch, theirs[n])

        children.append(_fork(decider))
    for s in [*mine, *theirs]:
        s.close()
    return children


def _fork(body: Any) -> int:
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            body()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001 - a child reports by its exit status only
            import traceback

            traceback.print_exc()
            code = 70
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid


def main() -> None:
    import interlock.cli
    import interlock.gate  # imported once, before any fork

    children: list[int] = []
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "start":
            out = Path(cmd["out"])
            children = _start(cmd)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not all(
                (out / f"ready-{p}").exists() for p in children
            ):
                if any(os.waitpid(p, os.WNOHANG)[0] for p in children):
                    break  # a decider died before it was ready: the test sees it in reap
                time.sleep(0.005)
            _say({"pids": children})
        elif op == "reap":
            _say({"status": {str(p): os.waitpid(p, 0)[1] for p in children}})
            children = []
        elif op == "verify":
            path = Path(cmd["out"]) / "verify.json"

            def verify(home: str = cmd["home"], path: Path = path) -> None:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.dup2(fd, 1)
                sys.argv = ["interlock", "ledger", "verify", "--json", "--home", home]
                interlock.cli.main()

            pid = _fork(verify)
            status = os.waitpid(pid, 0)[1]
            _say({"exit": os.waitstatus_to_exitcode(status), "out": path.read_text()})
        elif op == "exit":
            return


def _say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
