"""The MCP proxy's direct requests (``DirectRequests``): which upstream answers it takes from
the reader, and which it leaves to the SDK client session."""

from __future__ import annotations

import json
from typing import Any

import anyio
import mcp.types as types
import pytest

from interlock.adapters.mcp_proxy.upstream import DirectRequests

pytestmark = pytest.mark.anyio


def _answer(rid: str | int) -> types.JSONRPCResponse:
    return types.JSONRPCResponse(jsonrpc="2.0", id=rid, result={"content": []})


async def test_its_answers_are_taken_and_the_session_s_are_left() -> None:
    direct = DirectRequests()
    written: list[dict[str, Any]] = []
    sent = anyio.Event()

    async def send(line: bytes) -> None:
        written.append(json.loads(line))
        sent.set()

    direct._connect(send, anyio.Lock())
    # nothing waits: an answer to a request given up (timed out, cancelled) is dropped, never
    # handed to the session, which has no such request; the session's own are left to it
    assert direct._deliver(_answer("interlock-7")) is True
    assert direct._deliver(_answer(3)) is False
    assert direct._deliver(_answer("3")) is False
    ping = types.JSONRPCNotification(jsonrpc="2.0", method="notifications/progress")
    assert direct._deliver(ping) is False

    got: list[dict[str, Any]] = []

    async def call() -> None:
        got.append(await direct.request("tools/call", {"name": "echo"}, 5.0))

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        with anyio.fail_after(5):
            await sent.wait()
        rid = written[0]["id"]
        assert rid.startswith("interlock-") and written[0]["method"] == "tools/call"
        assert direct._deliver(_answer(rid)) is True
    assert got == [{"content": []}]
