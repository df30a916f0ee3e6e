"""Nested governed executions under full containment: a contained command cannot open the home
(DESIGN I9), so an ``interlock exec`` inside it asks its supervisor instead.

    $ interlock exec -- sh -c 'interlock exec -- make test'     # the inner one is relayed

The supervisor gives its command one end of a ``SOCK_SEQPACKET`` socket pair, named by
``INTERLOCK_SUPERVISOR_FD``. A nested ``interlock exec`` (:func:`relay_exec`) makes a socket
pair of its own and passes one end through it (a connection of its own), then sends on that
connection one message — ``{"request": …, "env": {…}}`` as JSON, with its standard input,
output and error as ``SCM_RIGHTS`` — and waits for one answer, the :class:`Outcome` as JSON.

The supervisor (:class:`Relay`) decides and runs each such request with its own gate, exactly
as ``interlock exec`` would, with two things fixed by it and not by the asker: the parent is
the relaying execution (lineage cannot be forged from inside), and the command is
``request.args.argv`` — what was decided is what runs. The nested command gets a sandbox and a
cgroup of its own, made inside the relaying execution's cgroup, so killing that one kills it.
If the asker goes away (killed with its execution), the nested run is re-verified at once and
terminated. Everything received is untrusted: one message of at most :data:`MAX_MESSAGE` bytes,
exactly three descriptors, at most :data:`MAX_NESTED` at a time per execution.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from interlock.core.model import Reason, ReasonCode

if TYPE_CHECKING:
    from interlock.runtime.supervisor import Outcome

__all__ = ["MAX_MESSAGE", "MAX_NESTED", "NESTED_ENV", "Relay", "relay_exec"]

#: names the descriptor of the supervisor's relay in a contained command's environment
NESTED_ENV = "INTERLOCK_SUPERVISOR_FD"
#: the largest request a nested exec may send (bytes of JSON)
MAX_MESSAGE = 1 << 20
#: nested executions one execution may have running at once
MAX_NESTED = 64


def _outcome_json(o: Outcome) -> dict[str, Any]:
    return {
        "status": o.status,
        "exit_code": o.exit_code,
        "reason": o.reason.to_json() if o.reason is not None else None,
        "request_id": o.request_id,
        "signals": list(o.signals),
        "record_error": o.record_error,
    }


def _refusal(detail: str) -> dict[str, Any]:
    return {
        "status": "denied",
        "exit_code": 126,
        "reason": Reason(code=ReasonCode.MALFORMED_REQUEST, detail=detail).to_json(),
        "request_id": None,
        "signals": [],
        "record_error": None,
    }


class Relay:
    """The supervisor's side: serves the nested ``interlock exec`` of one execution.

    ``run`` is called as ``run(request, argv, stdin=, stdout=, stderr=, env=, cwd=, cancel=)``
    (the supervisor's ``run_command`` bound to its gate and settings) and returns an Outcome.
    """

    def __init__(self, exec_id: str, run: Callable[..., Outcome]) -> None:
        self.exec_id = exec_id
        self._run = run
        self._server, self._client = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._threads: list[threading.Thread] = []
        self._active = threading.BoundedSemaphore(MAX_NESTED)
        self._closed = False
        self._accept = threading.Thread(target=self._serve, name="interlock-relay", daemon=True)

    def child_fds(self) -> tuple[int, ...]:
        """The descriptor the command inherits (``pass_fds``)."""
        return (self._client.fileno(),)

    def env(self) -> dict[str, str]:
        return {NESTED_ENV: str(self._client.fileno())}

    def start(self) -> None:
        """After the command was spawned: close our copy of its end and start serving."""
        self._client.close()
        self._accept.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop serving; cancel and wait for the nested runs still going."""
        self._closed = True
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
        with contextlib.suppress(OSError):
            self._client.close()
        if self._accept.is_alive():
            self._accept.join(timeout)
        for t in self._threads:
            t.join(timeout)

    def _serve(self) -> None:
        while not self._closed:
            try:
                _msg, fds, _flags, _addr = socket.recv_fds(self._server, 16, 1)
            except OSError:
                return
            if not fds:
                if not _msg:
                    return  # every holder of the command's end is gone
                continue
            conn = socket.socket(fileno=fds[0])
            if not self._active.acquire(blocking=False):
                with contextlib.suppress(OSError):
                    conn.send(json.dumps(_refusal("too many nested executions")).encode())
                conn.close()
                continue
            t = threading.Thread(
                target=self._handle, args=(conn,), name="interlock-nested", daemon=True
            )
            self._threads = [x for x in self._threads if x.is_alive()]
            self._threads.append(t)
            t.start()

    def _handle(self, conn: socket.socket) -> None:
        fds: list[int] = []
        try:
            if conn.type != socket.SOCK_SEQPACKET:
                return
            msg, fds, _flags, _addr = socket.recv_fds(conn, MAX_MESSAGE + 1, 3)
            answer = self._answer(conn, msg, fds)
            with contextlib.suppress(OSError):
                conn.send(json.dumps(answer).encode())
        except OSError:
            return
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            conn.close()
            self._active.release()

    def _answer(self, conn: socket.socket, msg: bytes, fds: list[int]) -> dict[str, Any]:
        if len(fds) != 3:
            return _refusal("a nested exec must pass exactly its stdin, stdout and stderr")
        if len(msg) > MAX_MESSAGE:
            return _refusal(f"the nested request is over {MAX_MESSAGE} bytes")
        try:
            doc = json.loads(msg)
        except ValueError:
            return _refusal("the nested request is not JSON")
        if not isinstance(doc, dict) or not isinstance(doc.get("request"), dict):
            return _refusal("the nested request must be an object with a 'request' object")
        request: dict[str, Any] = dict(doc["request"])
        env = doc.get("env", {})
        if not isinstance(env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and "\0" not in k + v and "=" not in k
            for k, v in env.items()
        ):
            return _refusal("env must be an object of strings")
        args = request.get("args")
        argv = args.get("argv") if isinstance(args, Mapping) else None
        cwd = args.get("cwd") if isinstance(args, Mapping) else None
        if (
            not isinstance(argv, list)
            or not argv
            or not all(isinstance(a, str) and "\0" not in a for a in argv)
        ):
            return _refusal("args.argv must be a non-empty list of strings")
        if not isinstance(cwd, str) or not cwd.startswith("/"):
            return _refusal("args.cwd must be an absolute path")
        request["parent"] = self.exec_id  # lineage is the relay's to say, not the asker's
        cancel = threading.Event()
        watcher = threading.Thread(target=_watch_gone, args=(conn, cancel), daemon=True)
        watcher.start()
        with (
            open(fds[1], "wb", buffering=0, closefd=False) as out,
            open(fds[2], "wb", buffering=0, closefd=False) as err,
        ):
            outcome = self._run(
                request,
                list(argv),
                stdin=fds[0],
                stdout=out,
                stderr=err,
                env=env,
                cwd=cwd,
                cancel=cancel,
            )
        cancel.set()
        return _outcome_json(outcome)


def _watch_gone(conn: socket.socket, cancel: threading.Event) -> None:
    """Set ``cancel`` when the asker closes its connection (it exited or was killed)."""
    with contextlib.suppress(OSError):
        while not cancel.is_set():
            r, _w, _x = select.select([conn], [], [], 0.1)
            if r:
                if not conn.recv(1, socket.MSG_PEEK):
                    break
                conn.recv(1)  # nothing more is expected: drop it
    cancel.set()


def relay_exec(request: Mapping[str, Any], fd: int) -> dict[str, Any]:
    """The nested side: have the supervisor behind ``fd`` decide and run ``request`` with this
    process's standard input, output and error; returns its outcome (see :class:`Relay`).

    Raises:
        OSError: the relay is unreachable (the caller denies).
        ValueError: the answer is not an outcome.
    """
    shared = socket.socket(fileno=os.dup(fd))
    try:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            socket.send_fds(shared, [b"c"], [theirs.fileno()])
        finally:
            theirs.close()
    finally:
        shared.close()
    with mine:
        env = dict(os.environ)
        env.pop(NESTED_ENV, None)
        body = json.dumps({"request": dict(request), "env": env}).encode()
        socket.send_fds(mine, [body], [0, 1, 2])
        answer = mine.recv(65536)
    doc = json.loads(answer)
    if not isinstance(doc, dict) or not isinstance(doc.get("exit_code"), int):
        raise ValueError("the supervisor's answer is not an outcome")
    return doc
