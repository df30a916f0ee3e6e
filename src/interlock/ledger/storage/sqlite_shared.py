"""One sequencer for several processes on one SQLite home (``interlock serve --workers N``).

    >>> from interlock.ledger.storage.sqlite_shared import SequencerHost, SequencerLink
    >>> host = SequencerHost(ledger)                      # doctest: +SKIP
    >>> mine, theirs = socket.socketpair()                # doctest: +SKIP
    >>> host.serve(mine, "worker 1")                      # doctest: +SKIP
    >>> # in the worker process, after it inherited ``theirs``:
    >>> gate.ledger.attach_sequencer(SequencerLink(theirs))  # doctest: +SKIP

Worker processes decide (intake, capability, Cedar, records); one process — the server's
parent — holds the ledger's sequencer (:mod:`~interlock.ledger.storage.sqlite_commit`), and
each worker hands it its prepared appends over a connected Unix socket. Records of every
worker share one transaction and one fsync, so batches grow with the load of all of them,
where before each worker's own sequencer waited for the others' write lock (SQLite's busy
retries: at two workers a tail of 100+ ms).

What does not move (DESIGN I1):

* **An allow is answered only after its commit.** A worker's append returns only once the
  sequencer's answer for it has arrived, and the sequencer answers only after COMMIT (and the
  file checks) returned. Any other outcome is an error the gate turns into a deny.
* **Deadlines are the caller's.** The request carries the caller's deadline on the machine's
  monotonic clock (``CLOCK_MONOTONIC``, one for every process); the sequencer drops records
  whose deadline passed before their transaction began, as it does a local caller's, and the
  worker stops waiting at the same moment. A record written while its caller gave up is
  harmless (the caller was denied); the reverse cannot happen.
* **A lost sequencer denies.** The socket closing (the parent killed), a frame that cannot be
  read or sent, a reply that does not match: every waiting append and every later one fails
  with ``LedgerUnavailable`` — the worker denies LEDGER_UNAVAILABLE — and ``on_lost`` is
  called (the worker stops, so the server stops visibly instead of running half-working).

Why these choices:

* **A socketpair**, inherited by the worker at spawn, not a path: no process but the
  parent's own children can reach the sequencer (a governed agent with the home's file
  permissions included; the worker marks its end not inheritable, so processes it starts do
  not get it). A process that can reach it could also write the ledger file itself.
* **msgpack frames (msgspec) with a 4-byte length**: typed decoding — a frame that is not
  exactly a request is refused and the connection closed — at a few microseconds a record.
* **Answers are sent by the sequencer thread as it finishes each caller**: no thread
  hand-off in the parent; a send that cannot complete within ``SEND_TIMEOUT_S`` (a worker
  that stopped reading) closes that worker's connection, and the worker fails closed.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec

from interlock.core.model import MAX_RECORD_BYTES
from interlock.errors import LedgerCorrupt, LedgerError, LedgerUnavailable
from interlock.ledger.projection import NO_CHANGE, Delta
from interlock.ledger.protocols import Append, AppendResult
from interlock.ledger.storage.sqlite_commit import _DEADLINE_MESSAGE, _Pending

if TYPE_CHECKING:
    from interlock.ledger.storage.sqlite import SqliteLedger

__all__ = ["MAX_FRAME_BYTES", "SequencerHost", "SequencerLink"]

_log = logging.getLogger("interlock")

#: the largest frame either side sends or accepts (a batch of records with their blobs)
MAX_FRAME_BYTES = 64 * 1024 * 1024
#: how long the sequencer waits to hand a worker its answers before it drops the worker
SEND_TIMEOUT_S = 2.0
#: socket buffers: room for thousands of requests and answers in flight
_BUFFER_BYTES = 4 * 1024 * 1024
_HEADER = struct.Struct(">I")
_CREDS = struct.Struct("3i")  # struct ucred: pid, uid, gid


class _Item(msgspec.Struct, array_like=True, frozen=True):
    record: bytes
    blobs: dict[str, bytes]
    state: Delta | None


class _Request(msgspec.Struct, array_like=True, frozen=True):
    id: int
    #: the caller's deadline, ``time.monotonic()`` seconds (one clock for every process)
    deadline: float
    #: empty: force a signed checkpoint
    items: list[_Item]


class _Reply(msgspec.Struct, array_like=True, frozen=True):
    id: int
    results: list[tuple[int, bytes]] | None
    #: why nothing is confirmed (``results`` is None)
    error: str | None = None
    corrupt: bool = False


_encode = msgspec.msgpack.Encoder().encode
_decode_request = msgspec.msgpack.Decoder(_Request).decode
_decode_reply = msgspec.msgpack.Decoder(_Reply).decode


def _tune(sock: socket.socket) -> None:
    for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, opt, _BUFFER_BYTES)


class _Frames:
    """The frames arriving on a stream socket: a 4-byte big-endian length, then the body."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = bytearray()

    def next(self) -> bytes | None:
        """The next frame's body, or None at a clean end of stream.

        Raises:
            ValueError: a frame above MAX_FRAME_BYTES, or the stream ended inside one.
            OSError: the socket failed.
        """
        buf = self._buf
        while True:
            if len(buf) >= _HEADER.size:
                (size,) = _HEADER.unpack_from(buf)
                if size > MAX_FRAME_BYTES:
                    raise ValueError(f"a frame of {size} bytes (at most {MAX_FRAME_BYTES})")
                end = _HEADER.size + size
                if len(buf) >= end:
                    body = bytes(buf[_HEADER.size : end])
                    del buf[:end]
                    return body
            chunk = self._sock.recv(1 << 16)
            if not chunk:
                if buf:
                    raise ValueError("the stream ended inside a frame")
                return None
            buf += chunk


class _NotSent(TimeoutError):
    """Nothing of the data was sent before the timeout: the stream is intact."""


def _send_within(sock: socket.socket, data: bytes, timeout: float) -> None:
    """``sendall`` that gives up after ``timeout`` seconds (the socket stays blocking for its
    reader: a timeout set on it, or on a dup of it, would make its reads non-blocking too).

    Raises:
        _NotSent: the peer took none of the data in time.
        TimeoutError: it took only part of it in time (the stream is cut mid-frame).
        OSError: the peer is gone.
    """
    view = memoryview(data)
    deadline = time.monotonic() + timeout
    total = len(view)
    while view:
        try:
            sent = sock.send(view, socket.MSG_DONTWAIT)
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0:
                if len(view) == total:
                    raise _NotSent("the peer took nothing in time") from None
                raise TimeoutError("the peer did not take its data in time") from None
            select.select([], [sock], [], left)
            continue
        view = view[sent:]


class SequencerLink:
    """A worker's end: :meth:`submit` sends a caller's records to the sequencer and waits for
    its answer (see the module). ``on_lost(reason)`` is called once, from the link's reader
    thread, when the sequencer can no longer be reached."""

    def __init__(
        self, sock: socket.socket, *, on_lost: Callable[[str], None] | None = None
    ) -> None:
        sock.set_inheritable(False)
        sock.settimeout(None)
        _tune(sock)
        self._sock = sock
        #: the sequencer's process (for ``/healthz``), from the socket's peer credentials
        self.peer_pid: int | None = None
        with contextlib.suppress(OSError, AttributeError):
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDS.size)
            self.peer_pid = _CREDS.unpack(creds)[0]
        self._on_lost = on_lost
        self._mu = threading.Lock()
        self._send = threading.Lock()
        self._waiting: dict[int, _Pending] = {}
        self._next = 0
        self._lost: str | None = None
        self._closed = False
        self._reader = threading.Thread(
            target=self._read, name="interlock-sequencer-link", daemon=True
        )
        self._reader.start()

    def submit(self, p: _Pending, timeout: float) -> None:
        """Have ``p``'s records committed by the sequencer; return once its ``results`` or
        ``error`` are set.

        Raises:
            LedgerUnavailable: the sequencer cannot be reached, or did not answer within
                ``timeout`` (the records may still be written: the caller is denied).
        """
        with self._mu:
            if self._lost is not None:
                raise LedgerUnavailable(self._lost)
            self._next += 1
            rid = self._next
            self._waiting[rid] = p
        frame = _encode(
            _Request(
                id=rid,
                deadline=p.deadline,
                items=[
                    _Item(it.record, it.blobs, None if it.state is NO_CHANGE else it.state)
                    for it in p.items
                ],
            )
        )
        if len(frame) > MAX_FRAME_BYTES:
            with self._mu:
                self._waiting.pop(rid, None)
            raise LedgerUnavailable(
                f"an append of {len(frame)} bytes exceeds the sequencer's {MAX_FRAME_BYTES}"
            )
        # sending is bounded by the caller's deadline too: a sequencer that stops reading (a
        # stopped process) fills the socket, and no caller may wait past its deadline for it
        if not self._send.acquire(timeout=max(0.0, p.deadline - time.monotonic())):
            return self._gave_up(rid, timeout)
        try:
            _send_within(
                self._sock, _HEADER.pack(len(frame)) + frame, p.deadline - time.monotonic()
            )
        except _NotSent:
            self._send.release()
            return self._gave_up(rid, timeout)
        except OSError as exc:
            # a frame partly sent (cut off at the deadline) or a broken socket: the stream
            # cannot be trusted again
            self._send.release()
            self._lose(f"cannot reach the ledger's sequencer: {exc.strerror or exc}")
        else:
            self._send.release()
        if p.wake.acquire(timeout=max(0.0, p.deadline - time.monotonic())):
            return None
        return self._gave_up(rid, timeout)

    def _gave_up(self, rid: int, timeout: float) -> None:
        """The caller's deadline passed: withdraw its wait, unless its answer came meanwhile.

        Raises:
            LedgerUnavailable: not answered.
        """
        with self._mu:
            if self._waiting.pop(rid, None) is None:
                return  # answered as the wait ended: its results or error are set
        raise LedgerUnavailable(_DEADLINE_MESSAGE, timeout_s=timeout)

    def close(self) -> None:
        """Stop: waiting appends fail; ``on_lost`` is not called."""
        with self._mu:
            self._closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._reader.join(timeout=5)
        self._sock.close()

    def _read(self) -> None:
        frames = _Frames(self._sock)
        reason = "the ledger's sequencer closed its connection"
        try:
            while True:
                body = frames.next()
                if body is None:
                    break
                reply = _decode_reply(body)
                # the outcome is set while the caller cannot give up (``_gave_up`` holds
                # ``_mu`` too): a caller that finds itself answered finds its answer
                with self._mu:
                    p = self._waiting.pop(reply.id, None)
                    if p is None:
                        continue  # its caller gave up
                    if reply.results is None:
                        message = reply.error or "the ledger's sequencer refused the append"
                        kind = LedgerCorrupt if reply.corrupt else LedgerUnavailable
                        p.error = kind(message)
                    elif len(reply.results) != len(p.items):
                        p.error = LedgerUnavailable("ledger append not confirmed for every record")
                    else:
                        p.results = [AppendResult(index=i, leaf_hash=h) for i, h in reply.results]
                p.wake.release()
        except Exception as exc:  # noqa: BLE001 - any failure here fails closed
            reason = f"the link to the ledger's sequencer broke: {exc}"
        self._lose(reason)

    def _lose(self, reason: str) -> None:
        with self._mu:
            if self._lost is not None:
                return
            self._lost = reason
            waiting, self._waiting = self._waiting, {}
            closed = self._closed
            for p in waiting.values():
                p.error = LedgerUnavailable(reason)
        for p in waiting.values():
            p.wake.release()
        if not closed:
            _log.error("%s: every append is refused", reason)
            if self._on_lost is not None:
                self._on_lost(reason)


class SequencerHost:
    """The parent's end: commits the appends of every connected worker with ``ledger``'s one
    sequencer (see the module). ``ledger`` must be opened with the log key."""

    def __init__(self, ledger: SqliteLedger) -> None:
        self.ledger = ledger
        self._mu = threading.Lock()
        self._conns: list[_Connection] = []

    def serve(self, sock: socket.socket, name: str) -> None:
        """Take appends from the worker at the other end of ``sock`` (a thread reads them)."""
        conn = _Connection(self, sock, name)
        with self._mu:
            self._conns.append(conn)
        conn.start()

    def close(self) -> None:
        """Drop every connection, then close the ledger (queued appends commit first)."""
        with self._mu:
            conns, self._conns = self._conns, []
        for c in conns:
            c.drop("the server is stopping", clean=True)
        self.ledger.close()


class _Connection:
    def __init__(self, host: SequencerHost, sock: socket.socket, name: str) -> None:
        sock.settimeout(None)
        _tune(sock)
        self.host = host
        self.name = name
        self.sock = sock
        self.send_lock = threading.Lock()
        self.dropped = False
        self.thread = threading.Thread(
            target=self._read, name=f"interlock-sequencer-{name}", daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def drop(self, why: str, *, clean: bool = False) -> None:
        with self.send_lock:
            if self.dropped:
                return
            self.dropped = True
        (_log.info if clean else _log.warning)("ledger sequencer: dropping %s: %s", self.name, why)
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def _read(self) -> None:
        ledger = self.host.ledger
        frames = _Frames(self.sock)
        try:
            while True:
                body = frames.next()
                if body is None:
                    self.drop("it closed its connection", clean=True)
                    return
                req = _decode_request(body)
                if any(len(it.record) > MAX_RECORD_BYTES for it in req.items):
                    raise ValueError(f"a record above {MAX_RECORD_BYTES} bytes")
                items = [
                    Append(
                        record=it.record,
                        blobs=it.blobs,
                        state=NO_CHANGE if it.state is None else it.state,
                    )
                    for it in req.items
                ]
                p = _Pending(items, req.deadline, functools.partial(self._answer, req.id))
                if ledger.signer is None:
                    p.error = LedgerUnavailable("ledger opened without a log key: cannot append")
                    p.finish()
                    continue
                ledger._enqueue(p)
        except Exception as exc:  # noqa: BLE001 - whatever it sent, this worker is dropped
            self.drop(f"unreadable request: {exc}")
        finally:
            if self.dropped:
                self.sock.close()

    def _answer(self, rid: int, p: _Pending) -> None:
        err = p.error
        if err is None:
            reply = _Reply(id=rid, results=[(r.index, r.leaf_hash) for r in p.results])
        else:
            message = (
                err.message if isinstance(err, LedgerError) else f"ledger append failed: {err}"
            )
            reply = _Reply(
                id=rid, results=None, error=message, corrupt=isinstance(err, LedgerCorrupt)
            )
        frame = _encode(reply)
        try:
            with self.send_lock:
                if self.dropped:
                    return
                _send_within(self.sock, _HEADER.pack(len(frame)) + frame, SEND_TIMEOUT_S)
        except OSError as exc:
            self.drop(f"cannot send it its answer: {exc}")
