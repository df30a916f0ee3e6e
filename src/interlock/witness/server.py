"""The witness over HTTP (c2sp.org/tlog-witness): ``POST /add-checkpoint`` and the monitoring
``GET /<sha256(origin) hex>/checkpoint``.

    >>> # interlock witness serve ./witness --port 7380
    >>> # curl --data-binary @request http://127.0.0.1:7380/add-checkpoint

Bodies larger than :data:`~interlock.witness.protocol.MAX_BODY_BYTES` are refused with 413
before they are read in full. No request is authenticated (the spec's design: the log's
signature on the checkpoint is the only credential); nothing but a checkpoint the configured
log signed, consistent with the last one cosigned, is ever cosigned.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import time
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from interlock.witness.core import Conflict, Witness, WitnessRefused
from interlock.witness.protocol import MAX_BODY_BYTES, SIZE_CONTENT_TYPE

__all__ = ["DEFAULT_PORT", "create_app", "serve"]

#: the witness's default port (``interlock serve`` has 8750)
DEFAULT_PORT = 7380

_log = logging.getLogger("interlock.witness")
_TEXT = "text/plain; charset=utf-8"


class _TooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise _TooLarge
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:  # a body longer than its header said, or chunked: still bounded
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(witness: Witness, *, max_body: int = MAX_BODY_BYTES) -> Starlette:
    """The witness's HTTP app.

    Raises nothing; each request's failure is its answer.
    """
    by_hash = {hashlib.sha256(o.encode()).hexdigest(): o for o in witness.config.logs}

    async def add_checkpoint(request: Request) -> Response:
        try:
            body = await _read_body(request, max_body)
        except _TooLarge:
            return PlainTextResponse("request body too large\n", status_code=413)
        try:
            line = await run_in_threadpool(witness.add_checkpoint, body, now=int(time.time()))
        except Conflict as exc:
            # exactly text/x.tlog.size: Starlette would append a charset to a text/* media type
            return Response(
                f"{exc.size}\n", status_code=409, headers={"Content-Type": SIZE_CONTENT_TYPE}
            )
        except WitnessRefused as exc:
            _log.info("add-checkpoint refused (%s): %s", exc.status, exc.diagnostics()[:300])
            return PlainTextResponse(f"{exc.message}\n", status_code=exc.status)
        except Exception:  # noqa: BLE001 - the handler boundary: anything else cosigns nothing (fail closed)
            _log.exception("add-checkpoint failed")
            return PlainTextResponse("internal error: nothing was cosigned\n", status_code=500)
        return Response(line, status_code=200, media_type=_TEXT)

    async def checkpoint(request: Request) -> Response:
        origin = by_hash.get(request.path_params["origin_hash"])
        if origin is None:
            return PlainTextResponse("unknown log\n", status_code=404)
        try:
            latest = {lt.origin: lt for lt in await run_in_threadpool(witness.state.all_latest)}
        except Exception:  # noqa: BLE001 - the handler boundary: a state that cannot be read serves nothing
            _log.exception("reading the witness state failed")
            return PlainTextResponse("internal error\n", status_code=500)
        held = latest.get(origin)
        if held is None:
            return PlainTextResponse("no checkpoint cosigned for this log\n", status_code=404)
        return Response(held.note, media_type=_TEXT, headers={"Cache-Control": "no-cache"})

    return Starlette(
        routes=[
            Route("/add-checkpoint", add_checkpoint, methods=["POST"]),
            Route("/{origin_hash:str}/checkpoint", checkpoint, methods=["GET"]),
        ]
    )


def serve(
    witness: Witness,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    log_level: str = "warning",
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve ``witness`` until interrupted. ``port`` 0 picks a free port; ``on_ready`` is
    called with the URL once bound (``interlock witness serve`` prints it).

    Raises:
        OSError: the address cannot be bound.
    """
    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    config = uvicorn.Config(
        create_app(witness), log_level=log_level, access_log=False, ws="none", lifespan="off"
    )
    server = uvicorn.Server(config)
    if on_ready is not None:
        on_ready(f"http://{shown}:{bound}")
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
