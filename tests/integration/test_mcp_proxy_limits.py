# ruff: noqa: F811 - the shared fixtures are imported, then named as parameters
"""The MCP proxy against a huge upstream answer: a real upstream (the SDK's server, and a
hand-written one that puts the JSON-RPC ``id`` last) answers 24 MB; the call ends at once with
the coded JSON-RPC error, recorded, and the next call on the same session works."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.shared.exceptions import MCPError

from interlock.adapters.mcp_proxy import (
    ANSWER_TOO_LARGE_CODE,
    DEFAULT_MAX_ANSWER_BYTES,
    ProxyOptions,
    Upstream,
)
from interlock.adapters.mcp_proxy.upstream import _Oversized
from interlock.errors import UsageError
from interlock.gate import Gate
from tests.conftest import RESEARCHER
from tests.integration.test_mcp_proxy import (  # noqa: F401 - fixtures
    anyio_backend,
    decisions,
    errlog,
    gate,
    mcp_home,
    of,
    proxied,
    text_of,
    token,
)

BIG = str(Path(__file__).resolve().parents[1] / "mcp_big_upstream.py")


def big_upstream(errlog: Any, *args: str) -> Upstream:
    return Upstream(command=(sys.executable, BIG, *args), env=dict(os.environ), errlog=errlog)


@pytest.mark.anyio
@pytest.mark.parametrize("style", ["sdk", "raw"])
async def test_a_24_mb_answer_ends_its_call_at_once_and_the_next_call_works(
    gate: Gate, token: str, errlog: Any, style: str
) -> None:
    upstream = big_upstream(errlog, *(["--raw"] if style == "raw" else []))
    options = ProxyOptions(principal=RESEARCHER, capability=token, name="bigsrv", timeout=60)
    async with proxied(gate, upstream, options) as (_proxy, client):
        small = await client.call_tool("blob", {"megabytes": 1})
        # well within the 60 s upstream timeout: the answer is skipped, not waited out
        with anyio.fail_after(20), pytest.raises(MCPError) as refused:
            await client.call_tool("blob", {"megabytes": 24})
        with anyio.fail_after(10):
            after = await client.call_tool("echo", {"text": "still here"})

    assert refused.value.code == ANSWER_TOO_LARGE_CODE
    assert "upstream answer too large" in refused.value.message
    assert str(DEFAULT_MAX_ANSWER_BYTES) in refused.value.message
    assert len(text_of(small)) == 1_000_000
    assert not after.is_error and text_of(after) == "still here"
    ends = [of(gate, rec["id"])["exec.end"][1] for _i, rec, _d in decisions(gate, "mcp.tools/call")]
    assert [(e["outcome"], e.get("error")) for e in ends] == [
        ("ok", None),
        ("error", "answer_too_large"),
        ("ok", None),
    ]


@pytest.mark.anyio
async def test_the_limit_is_configurable(gate: Gate, token: str, errlog: Any) -> None:
    options = ProxyOptions(
        principal=RESEARCHER, capability=token, name="bigsrv", max_answer_bytes=64 * 1024
    )
    async with proxied(gate, big_upstream(errlog), options) as (_proxy, client):
        with pytest.raises(MCPError) as refused:
            await client.call_tool("blob", {"megabytes": 1})
        fine = await client.call_tool("echo", {"text": "x" * 1000})
    assert refused.value.code == ANSWER_TOO_LARGE_CODE and "65536 bytes" in refused.value.message
    assert not fine.is_error


@pytest.mark.parametrize("size", [0, 1023, True])
def test_a_limit_under_1_kib_is_refused(size: int) -> None:
    with pytest.raises(UsageError):
        ProxyOptions(principal=RESEARCHER, capability="t", max_answer_bytes=size)


@pytest.mark.parametrize(
    ("head", "tail", "found"),
    [
        (b'{"jsonrpc":"2.0","id":7,"result":{"content":[', b"]}}", 7),
        (b'{ "id" : "a\\"b", "error": {', b"}}", 'a"b'),
        (b'{"result":{"content":[{"id":3', b'}]},"jsonrpc":"2.0","id":12}', 12),
        # an id inside the result is not the answer's id
        (b'{"result":{"content":[{"text":"', b'","id":5}]}}', None),
        (b'{"jsonrpc":"2.0","method":"notifications/x","params":{"id":1', b"}}", None),
        (b'{"jsonrpc":"2.0","id":1e3,"result":{', b"}}", None),
    ],
)
def test_the_id_of_an_oversized_answer(head: bytes, tail: bytes, found: object) -> None:
    big = _Oversized(head + b"x" * 10_000)
    big.add(b"y" * 10_000 + tail)
    assert big.size == len(head) + len(tail) + 20_000
    assert big.request_id() == found
