"""The hot path: ``POST /v1/decisions`` answered without FastAPI's routing, and the gate called
from a small pool of dispatcher threads that hand it the requests waiting at that moment.

    app = DecisionPath(fastapi_app, state=state, hosts=["localhost", "127.0.0.1", "[::1]"])
    # an ASGI app: give it to uvicorn instead of fastapi_app

Why: a governed action pays for the HTTP stack on every call. FastAPI's routing, dependency
injection, ``Request`` objects and four middlewares cost more CPU than the gate's own pipeline,
and handing each call to anyio's thread pool costs a thread wake-up and an event-loop wake-up
per request (measured in BENCHMARKS.md, issue 14).

**Behaviour is the full app's, by construction.** :class:`DecisionPath` answers only the
common, well-formed case: ``POST`` on exactly ``/v1/decisions``, a ``Host`` header the
``TrustedHostMiddleware`` check accepts (the same rule: :func:`_host_allowed`) and a
``Content-Type`` the :class:`~interlock.server.guards.JsonBodyOnly` guard accepts. Anything
else — another path or method, a foreign host, a body that is not JSON — goes to the full
FastAPI app unchanged, which answers (400, 404, 415, ...) exactly as it always did. The body is
read as :func:`~interlock.server.limits.read_capped` reads it (64 KiB + 1, the rest drained up
to 1 MiB), the answer is the route's (200 with the decision; 413/422 with the recorded deny)
rendered byte for byte as ``JSONResponse`` renders it, and the metrics are the route's.

**Dispatch.** :class:`Dispatcher` threads take every request waiting when they become free
(at most ``max_batch``) and decide them with one ``gate.decide_many`` call: one durable commit
and one event-loop wake-up for all of them, instead of one thread hand-off each. The answers
are what ``gate.decide`` would give each request (``Gate.decide_many``'s contract); every
allow still comes after its commit. One thread per process by default: while it waits for its
commit (the fsync releases the GIL) the event loop reads the next requests, which it then takes
as one batch; a second thread measured slower here — it competes with the event loop for the
GIL — (``wrk -t2`` against ``--workers 2`` on two cores: 32 connections 3,477 → 4,784/s and
128 connections 5,182 → 7,124/s with one thread; p50 at 1,800/s open-loop 5.7 → 3.6 ms). A
dispatcher that fails unexpectedly answers 500 for the requests it held — never an allow — and
keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from interlock.core.model import MAX_REQUEST_BYTES, ReasonCode, Stage
from interlock.server.guards import _is_json
from interlock.server.limits import DRAIN_LIMIT

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from interlock.core.model import Decision
    from interlock.server.state import ServerState

__all__ = ["DEFAULT_DISPATCHERS", "DEFAULT_MAX_BATCH", "DecisionPath", "Dispatcher"]

_log = logging.getLogger("interlock.server")

#: dispatcher threads per process (one: see the module)
DEFAULT_DISPATCHERS = 1
#: requests one dispatcher decides in one call (bounds the latency a batch adds to its first:
#: about 90 us of CPU each)
DEFAULT_MAX_BATCH = 128

_JSON_HEADERS = b"application/json"
_PLAIN_500 = b"Internal Server Error"


def render(content: Any) -> bytes:
    """``content`` as Starlette's ``JSONResponse`` renders it (the same bytes)."""
    return json.dumps(
        content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


class _Pending:
    """One request waiting for its decision, with the loop that waits for it."""

    __slots__ = ("body", "future", "loop")

    def __init__(self, body: bytes, loop: asyncio.AbstractEventLoop) -> None:
        self.body = body
        self.loop = loop
        self.future: asyncio.Future[Decision] = loop.create_future()


def _resolve(items: Sequence[tuple[_Pending, Decision | None, BaseException | None]]) -> None:
    """On the event loop: hand each waiting request its decision (or its failure)."""
    for pending, decision, failure in items:
        if pending.future.done():  # its handler was cancelled (the client went away)
            continue
        if decision is not None:
            pending.future.set_result(decision)
        else:
            pending.future.set_exception(failure or RuntimeError("no decision"))


def refused_answer(decision: Decision, too_large: bool) -> tuple[int, dict[str, Any]]:
    """The status and body ``POST /v1/decisions`` answers ``decision`` with: 413/422 with the
    recorded deny for a request refused at intake, else 200 with the decision (also the
    answer of the full app's route). Never raises."""
    if too_large:
        detail = f"request body exceeds {MAX_REQUEST_BYTES} bytes; recorded as a deny"
        return 413, {"detail": detail, "decision": decision.to_json()}
    if decision.stage is Stage.INTAKE and ReasonCode.MALFORMED_REQUEST.value in decision.codes:
        return 422, {"detail": decision.reasons[0].detail, "decision": decision.to_json()}
    return 200, decision.to_json()


class Dispatcher:
    """Threads that decide queued action requests in batches with ``gate.decide_many`` (see
    the module). Started on first use; :meth:`stop` ends the threads after the queued requests
    are decided.

    Raises:
        ValueError: ``threads`` or ``max_batch`` below 1.
    """

    def __init__(
        self,
        state: ServerState,
        *,
        threads: int = DEFAULT_DISPATCHERS,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        if threads < 1 or max_batch < 1:
            raise ValueError("a dispatcher needs at least one thread and a batch of one")
        self._state = state
        self._threads = threads
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._running: list[threading.Thread] = []
        self._stopped = False

    def submit(self, body: bytes) -> asyncio.Future[Decision]:
        """Queue ``body`` for a decision; the future completes on the calling event loop.

        Raises:
            RuntimeError: the dispatcher was stopped (the app is shutting down).
        """
        if not self._running:
            self._start()
        pending = _Pending(body, asyncio.get_running_loop())
        self._queue.put(pending)
        return pending.future

    def _start(self) -> None:
        with self._lock:
            if self._stopped:
                raise RuntimeError("the decision dispatcher is stopped")
            while len(self._running) < self._threads:
                t = threading.Thread(
                    target=self._run,
                    name=f"interlock-dispatch-{len(self._running)}",
                    daemon=True,
                )
                t.start()
                self._running.append(t)

    def stop(self, timeout: float = 30.0) -> None:
        """Decide what is queued, then end the threads. Never raises."""
        with self._lock:
            self._stopped = True
            running, self._running = self._running, []
        for _ in running:
            self._queue.put(None)
        for t in running:
            t.join(timeout)

    def _run(self) -> None:
        q = self._queue
        while True:
            first = q.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    more = q.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    q.put(None)  # this thread's stop comes after the batch
                    break
                batch.append(more)
            self._decide(batch)

    def _decide(self, batch: list[_Pending]) -> None:
        state = self._state
        t0 = time.perf_counter()
        decisions: Sequence[Decision | None]
        failure: BaseException | None = None
        try:
            if len(batch) == 1:
                decisions = [state.gate.decide(batch[0].body)]
            else:
                decisions = state.gate.decide_many([p.body for p in batch])
        # the gate never raises; if it did, these requests get 500 (never an allow) and the
        # thread keeps serving the next ones
        except Exception as exc:  # noqa: BLE001
            _log.error("the decision dispatcher failed: %r", exc)
            decisions, failure = [None] * len(batch), exc
        per = (time.perf_counter() - t0) / len(batch)
        for decision in decisions:
            if decision is not None:
                state.metrics.observe_decision("decisions", decision, per)
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for pending, decision in zip(batch, decisions, strict=True):
            by_loop.setdefault(pending.loop, []).append((pending, decision, failure))
        for loop, items in by_loop.items():
            # a closed loop: nobody waits for these answers any more
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, items)


def _host_allowed(scope: Scope, hosts: Sequence[str]) -> bool:
    """Starlette's ``TrustedHostMiddleware`` rule, exactly: the ``Host`` header without its
    port equals an entry, or ends with ``domain`` for an entry ``*.domain``; ``*`` allows all.
    (Starlette reads the last ``Host`` header when there are several.)"""
    if "*" in hosts:
        return True
    host_header = ""
    for name, value in scope["headers"]:
        if name == b"host":
            host_header = value.decode("latin-1")
    host = host_header.split(":")[0]
    for pattern in hosts:
        if host == pattern or (pattern.startswith("*") and host.endswith(pattern[1:])):
            return True
    return False


def _json_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return _is_json(value)
    return False


class DecisionPath:
    """ASGI app: ``POST /v1/decisions`` decided here, everything else passed to ``app`` (see
    the module). ``hosts`` is the Host check's list (as given to ``TrustedHostMiddleware``)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        state: ServerState,
        hosts: Iterable[str],
        dispatcher: Dispatcher | None = None,
    ) -> None:
        self.app = app
        self.state = state
        self.hosts = list(hosts)
        self.dispatcher = dispatcher if dispatcher is not None else Dispatcher(state)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] == "/v1/decisions"
            and scope["method"] == "POST"
            and _host_allowed(scope, self.hosts)
            and _json_body(scope)
        ):
            await self._decide(receive, send)
            return
        await self.app(scope, receive, send)

    async def _decide(self, receive: Receive, send: Send) -> None:

        started = False

        async def answer(status: int, body: bytes, content_type: bytes = _JSON_HEADERS) -> None:
            nonlocal started
            started = True
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-length", str(len(body)).encode("latin-1")),
                        (b"content-type", content_type),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})

        try:
            read = await _read_capped(receive, MAX_REQUEST_BYTES)
            if read is None:  # as the route: HTTPException(400)
                await answer(400, render({"detail": "the client disconnected"}))
                return
            body, too_large = read
            decision = await self.dispatcher.submit(body)
            status, content = refused_answer(decision, too_large)
            await answer(status, render(content))
        # the one boundary of this path: as Starlette's ServerErrorMiddleware, a 500 without
        # the cause (which goes to the log); never an allow
        except Exception:  # noqa: BLE001
            _log.exception("unexpected error on /v1/decisions")
            if not started:
                await answer(500, _PLAIN_500, b"text/plain; charset=utf-8")


async def _read_capped(receive: Receive, limit: int) -> tuple[bytes, bool] | None:
    """The body as :func:`~interlock.server.limits.read_capped` reads it: at most ``limit + 1``
    bytes kept, the rest drained up to ``DRAIN_LIMIT``; None when the client disconnected."""
    buf = bytearray()
    total = 0
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        total += len(chunk)
        if len(buf) <= limit:
            buf += chunk[: limit + 1 - len(buf)]
        if total > DRAIN_LIMIT or not message.get("more_body", False):
            break
    return bytes(buf), total > limit
