"""The stdio connection to a spawned upstream, with a cap on the size of what it answers.

    async with bounded_stdio_client(params, errlog=sys.stderr, max_bytes=4 << 20) as streams:
        ...  # streams: (read, write), as the MCP SDK's ``stdio_client`` gives

The SDK's ``stdio_client`` reads the upstream's stdout into one growing string per message
(re-joined and re-split at every chunk) and validates it whole: an upstream that answers 24 MB
keeps the proxy busy for longer than the agent's client waits, and one that never ends its line
grows memory without bound. This reader splits lines on bytes, once, and stops buffering a
message at ``max_bytes``: the rest of that line is skipped as it arrives (constant memory),
and the request it answered gets the JSON-RPC error :data:`ANSWER_TOO_LARGE_CODE` at once,
while the session goes on. The request is found from the answer's ``id``, read from its first
few KiB (``{"jsonrpc": "2.0", "id": …, "result"…``, as the Python SDK writes it) or its last
(``{"result": …, "jsonrpc": "2.0", "id": …}``, as the TypeScript SDK does); an oversized
message whose id is in neither place is dropped, and its request ends with the upstream
timeout.

Process handling (spawn in its own process group, the MCP shutdown sequence, killing the tree)
is the SDK's own, reused from ``mcp.client.stdio`` (pinned ``mcp<3``).

**Direct requests** (:class:`DirectRequests`): the proxy's governed ``tools/call`` is written on
the upstream's stdin by the calling task itself and its answer is handed back by the reader,
without the SDK client session's dispatch (its request bookkeeping, tracing span, writer task
and receive loop: two task hand-offs and a second JSON-RPC model per call). Such a request has
an id of its own (``"interlock-<n>"``: a string, so never one of the SDK session's integers);
everything else on the connection (the handshake, listings, the upstream's own requests and
notifications) still goes through the SDK session.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import AsyncIterator
from typing import Any, TextIO

import anyio
import anyio.lowlevel
import mcp.types as types
import orjson
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.client import stdio as sdk_stdio
from mcp.client.stdio import StdioServerParameters
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

__all__ = [
    "ANSWER_TOO_LARGE_CODE",
    "DEFAULT_MAX_ANSWER_BYTES",
    "DirectRequests",
    "bounded_stdio_client",
]

#: how long a courtesy ``notifications/cancelled`` may take to write (as the SDK's)
_ABANDON_WRITE_S = 2.0

#: the largest message (one line of JSON-RPC) a stdio upstream may send by default
DEFAULT_MAX_ANSWER_BYTES = 4 * 1024 * 1024

#: JSON-RPC error code of an upstream answer over the limit (implementation-defined server
#: error range, JSON-RPC 2.0 §5.1; next to DENIED_ERROR_CODE -32003)
ANSWER_TOO_LARGE_CODE = -32004

#: how much of an oversized message's head and tail is kept to find its id
_PEEK = 4096

_ID = r'(-?\d{1,19}|"(?:[^"\\]|\\.){0,256}")'
_HEAD_ID = re.compile(
    rb'^\s*\{\s*(?:"jsonrpc"\s*:\s*"2\.0"\s*,\s*)?"id"\s*:\s*'
    + _ID.encode()
    + rb'\s*,\s*"(?:result|error)"'
)
_HEAD_RESPONSE = re.compile(rb'^\s*\{\s*"(?:result|error)"\s*:')
_TAIL_ID = re.compile(rb'"id"\s*:\s*' + _ID.encode() + rb"\s*\}\s*$")


class _Oversized:
    """What is kept of a message over the limit: its size, head and tail."""

    def __init__(self, start: bytes) -> None:
        self.size = len(start)
        self.head = start[:_PEEK]
        self.tail = start[-_PEEK:]

    def add(self, piece: bytes) -> None:
        self.size += len(piece)
        self.tail = (self.tail + piece)[-_PEEK:]

    def request_id(self) -> str | int | None:
        """The id of the request this message answers, if it shows one (see the module)."""
        found = _HEAD_ID.match(self.head)
        if found is None and _HEAD_RESPONSE.match(self.head):
            found = _TAIL_ID.search(self.tail)
        if found is None:
            return None
        raw = found.group(1)
        try:
            value = types.jsonrpc_message_adapter.validate_json(
                b'{"jsonrpc":"2.0","id":' + raw + b',"result":{}}'
            )
        except ValidationError:
            return None
        request_id = getattr(value, "id", None)
        return request_id if isinstance(request_id, str | int) else None


def _too_large(big: _Oversized, limit: int) -> SessionMessage | Exception:
    request_id = big.request_id()
    message = (
        f"upstream answer too large: {big.size} bytes or more, over the proxy's limit of"
        f" {limit} bytes (mcp-proxy --max-answer-bytes)"
    )
    if request_id is None:
        return ValueError(message + "; its request id is unknown: the answer was dropped")
    error = types.JSONRPCError(
        jsonrpc="2.0",
        id=request_id,
        error=types.ErrorData(code=ANSWER_TOO_LARGE_CODE, message=message),
    )
    return SessionMessage(error)


class _Waiter:
    __slots__ = ("done", "outcome")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.outcome: dict[str, Any] | types.ErrorData | None = None


_CLOSED = types.ErrorData(code=types.CONNECTION_CLOSED, message="Connection closed")


class DirectRequests:
    """Requests written on a stdio upstream's stdin by the caller and answered through the
    reader, beside the SDK's client session (see the module). Given to
    :func:`bounded_stdio_client`, which connects it.

    :meth:`request` behaves as ``ClientSession.send_request`` at the JSON-RPC level: an error
    answer raises :class:`MCPError` with its code; no answer within ``timeout`` raises
    ``REQUEST_TIMEOUT`` after a courtesy ``notifications/cancelled``; a cancelled caller sends
    the same courtesy; an upstream that is gone (or goes while waiting) raises
    ``CONNECTION_CLOSED``. The result is returned as the raw JSON object, for the caller to
    validate.
    """

    def __init__(self) -> None:
        self._waiting: dict[str, _Waiter] = {}
        self._n = 0
        self._send: Any = None  # the upstream's stdin, once connected
        self._lock = anyio.Lock()
        self.closed = False

    def _connect(self, send: Any, lock: anyio.Lock) -> None:
        self._send, self._lock = send, lock

    async def _write(self, message: dict[str, Any]) -> None:
        if self._send is None or self.closed:
            raise MCPError(code=types.CONNECTION_CLOSED, message="Connection closed")
        line = orjson.dumps(message) + b"\n"
        try:
            async with self._lock:
                await self._send(line)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError) as exc:
            raise MCPError(code=types.CONNECTION_CLOSED, message="Connection closed") from exc

    async def request(
        self, method: str, params: dict[str, Any], read_timeout: float | None
    ) -> dict[str, Any]:
        """Send ``method`` with ``params``; the result object of its answer (waited for at
        most ``read_timeout`` seconds).

        Raises:
            MCPError: an error answer, REQUEST_TIMEOUT or CONNECTION_CLOSED (see the class).
        """
        self._n += 1
        rid = f"interlock-{self._n}"
        waiter = _Waiter()
        self._waiting[rid] = waiter
        written = False
        try:
            await self._write({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
            written = True
            with anyio.fail_after(read_timeout):
                await waiter.done.wait()
        except TimeoutError:
            await self._courtesy(rid, f"timed out after {read_timeout}s", shield=False)
            raise MCPError(
                code=types.REQUEST_TIMEOUT, message=f"Request {method!r} timed out"
            ) from None
        except anyio.get_cancelled_exc_class():
            if written:
                await self._courtesy(rid, "caller cancelled", shield=True)
            raise
        finally:
            self._waiting.pop(rid, None)
        outcome = waiter.outcome
        if isinstance(outcome, types.ErrorData):
            raise MCPError(code=outcome.code, message=outcome.message, data=outcome.data)
        if outcome is None:  # pragma: no cover - set before done
            raise MCPError(code=types.CONNECTION_CLOSED, message="Connection closed")
        return outcome

    async def _courtesy(self, rid: str, reason: str, *, shield: bool) -> None:
        with anyio.move_on_after(_ABANDON_WRITE_S, shield=shield):
            with contextlib.suppress(MCPError):
                await self._write(
                    {
                        "jsonrpc": "2.0",
                        "method": "notifications/cancelled",
                        "params": {"requestId": rid, "reason": reason},
                    }
                )

    def _deliver(self, message: object) -> bool:
        """Hand an answer to its waiting request (True), or leave it to the session."""
        if not isinstance(message, types.JSONRPCResponse | types.JSONRPCError):
            return False
        rid = message.id
        if not isinstance(rid, str) or not rid.startswith("interlock-"):
            return False  # the session's (its ids are integers)
        waiter = self._waiting.get(rid)
        if waiter is None:
            return True  # an answer to a request given up (timed out, cancelled): dropped
        if isinstance(message, types.JSONRPCResponse):
            waiter.outcome = message.result
        else:
            waiter.outcome = message.error
        waiter.done.set()
        return True

    def _close(self) -> None:
        """The upstream is gone: every waiting request, and every later one, ends
        CONNECTION_CLOSED."""
        self.closed = True
        for waiter in self._waiting.values():
            if waiter.outcome is None:
                waiter.outcome = _CLOSED
                waiter.done.set()


def _parse(line: bytes) -> SessionMessage | Exception:
    """One message, or the parse error as a value (as the SDK surfaces it to the session)."""
    try:
        return SessionMessage(types.jsonrpc_message_adapter.validate_json(line, by_name=False))
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        return exc


@contextlib.asynccontextmanager
async def bounded_stdio_client(
    server: StdioServerParameters,
    *,
    errlog: TextIO = sys.stderr,
    max_bytes: int,
    direct: DirectRequests | None = None,
) -> AsyncIterator[
    tuple[
        MemoryObjectReceiveStream[SessionMessage | Exception],
        MemoryObjectSendStream[SessionMessage],
    ]
]:
    """Spawn ``server`` and speak MCP to it over stdin/stdout, as the SDK's ``stdio_client``
    does, except that a message from it longer than ``max_bytes`` (newline excluded) is not
    read into memory: its request is answered :data:`ANSWER_TOO_LARGE_CODE` (see the module).
    ``direct``: requests that bypass the session (see :class:`DirectRequests`).

    Raises:
        OSError: the server process cannot be spawned.
    """
    command = await sdk_stdio._get_executable_command(server.command)
    process = await sdk_stdio._create_platform_compatible_process(
        command=command,
        args=server.args,
        env=sdk_stdio.get_default_environment() | (server.env or {}),
        errlog=errlog,
        cwd=server.cwd,
    )
    # no await until the task group is entered: a cancellation in between would leak the process
    read_writer, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_stream, write_reader = anyio.create_memory_object_stream[SessionMessage](0)
    writer_done = anyio.Event()
    stdin_lock = anyio.Lock()
    if direct is not None and process.stdin is not None:
        direct._connect(process.stdin.send, stdin_lock)

    async def stdout_reader() -> None:
        stdout = process.stdout
        if stdout is None:  # pragma: no cover - spawned with pipes
            return
        pending = bytearray()
        big: _Oversized | None = None
        try:
            async with read_writer:
                try:
                    async for chunk in stdout:
                        start = 0
                        while True:
                            end = chunk.find(b"\n", start)
                            piece = chunk[start:] if end < 0 else chunk[start:end]
                            if big is not None:
                                big.add(piece)
                            elif len(pending) + len(piece) > max_bytes:
                                big = _Oversized(bytes(pending) + piece)
                                pending.clear()
                            else:
                                pending += piece
                            if end < 0:
                                break
                            start = end + 1
                            out: SessionMessage | Exception | None = None
                            if big is not None:
                                out, big = _too_large(big, max_bytes), None
                            elif pending.strip():
                                out = _parse(bytes(pending))
                            pending.clear()
                            if out is None:
                                continue
                            if (
                                direct is not None
                                and isinstance(out, SessionMessage)
                                and direct._deliver(out.message)
                            ):
                                continue
                            try:
                                await read_writer.send(out)
                            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                                return
                finally:
                    if direct is not None:
                        direct._close()
                    await sdk_stdio._drain_stdout(process)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, ConnectionError):
            pass  # our own shutdown, or the upstream went away: the session sees the close

    async def stdin_writer() -> None:
        stdin = process.stdin
        if stdin is None:  # pragma: no cover - spawned with pipes
            return
        try:
            async with write_reader:
                async for message in write_reader:
                    data = message.message.model_dump_json(by_alias=True, exclude_unset=True)
                    async with stdin_lock:
                        await stdin.send((data + "\n").encode(server.encoding))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            await read_writer.aclose()  # the session sees the end instead of hanging
        finally:
            if direct is not None:
                direct._close()
            writer_done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(stdout_reader)
        tg.start_soon(stdin_writer)
        try:
            yield read_stream, write_stream
        finally:
            with anyio.CancelScope(shield=True):
                read_stream.close()
                write_stream.close()
                with anyio.move_on_after(0.5):
                    await writer_done.wait()
                await sdk_stdio._stop_server_process(process)
                for stream in (read_stream, write_stream, read_writer, write_reader):
                    await stream.aclose()
                await anyio.lowlevel.checkpoint()
            tg.cancel_scope.cancel()
