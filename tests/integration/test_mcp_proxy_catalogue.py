# ruff: noqa: F811 - the shared fixtures are imported, then named as parameters
"""The MCP proxy refuses a ``tools/call`` that names no listed tool, or whose arguments fail the
tool's ``inputSchema``, and authenticates ``--listen`` clients (issue 11) — with a real gate,
the SDK's real ``ClientSession`` and real upstream servers as subprocesses:
``tests/mcp_upstream.py`` and ``tests/mcp_catalogue_upstream.py`` (paginated, changing,
hostile schemas), both of which log every request they receive, so "never forwarded" is
checked, not assumed.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp.types as types
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from interlock.adapters.mcp_proxy import (
    ListenToken,
    ProxyOptions,
    Upstream,
    bind,
    open_proxy,
    serve_http,
)
from interlock.gate import Gate
from tests.conftest import RESEARCHER
from tests.integration.test_mcp_proxy import (  # noqa: F401 - fixtures
    anyio_backend,
    errlog,
    gate,
    ledger,
    mcp_home,
    proxied,
    seen,
    text_of,
    token,
    upstream,
    upstream_log,
)

pytestmark = pytest.mark.anyio

CATALOGUE = str(Path(__file__).resolve().parents[1] / "mcp_catalogue_upstream.py")


def options(tok: str, **extra: Any) -> ProxyOptions:
    return ProxyOptions(principal=RESEARCHER, capability=tok, **extra)


@pytest.fixture
def catalogue(upstream_log: Path, errlog: Any) -> Upstream:
    env = {**os.environ, "MCP_UPSTREAM_LOG": str(upstream_log)}
    return Upstream(command=(sys.executable, CATALOGUE), env=env, errlog=errlog)


def tool_calls(log: Path) -> list[tuple[str, Any]]:
    return [(e["name"], e["args"]) for e in seen(log) if e["kind"] == "tool"]


def refusals(gate: Gate) -> list[dict[str, Any]]:
    """The recorded tools/call denials (and intake's refusals, which record only a digest of
    the request), in order."""
    return [
        rec
        for _i, rec, _ in ledger(gate)
        if rec["type"] == "decision"
        and rec["effect"] == "deny"
        and rec["request"].get("action", "mcp.tools/call") == "mcp.tools/call"
    ]


# -- the name must be exactly one the upstream listed -------------------------------------------

LOOKALIKES = [
    "nope",
    "Echo",  # case
    "ECHO",
    "echo ",  # whitespace
    " echo",
    "echo\t",
    "echo\u00a0",  # no-break space
    "echo\u200b",  # zero-width space
    "e\u200dcho",  # zero-width joiner
    "\ufeffecho",  # zero-width no-break space (BOM)
    "\uff45\uff43\uff48\uff4f",  # full-width "echo"
    "ech\u043e",  # Cyrillic o
    "echo\u0301",  # combining accent
]


async def test_unlisted_and_lookalike_names_are_refused_and_never_forwarded(
    gate: Gate, token: str, upstream: Upstream, upstream_log: Path
) -> None:
    async with proxied(gate, upstream, options(token)) as (proxy, client):
        results = [await client.call_tool(name, {"text": "x"}) for name in LOOKALIKES]
        ok = await client.call_tool("echo", {"text": "the real one"})
        session_id = proxy.session_id

    for name, result in zip(LOOKALIKES, results, strict=True):
        assert result.is_error, name
        text = text_of(result)
        assert text.startswith("denied by Interlock: MALFORMED_REQUEST: "), text
        # a name intake accepts in a resource id is refused for not being listed, and the
        # client sees exactly which name it sent; one intake refuses (a tab) names intake's reason
        assert f"no tool named {name!a}" in text or "resource.id" in text, text
    assert not ok.is_error and text_of(ok) == "the real one"
    assert [name for name, _ in tool_calls(upstream_log)] == ["echo"]
    recs = refusals(gate)
    assert len(recs) == len(LOOKALIKES)
    for rec in recs:
        # recorded like any denial: the request (or, if intake refused it, its digest)
        assert [r["code"] for r in rec["reasons"]] == ["MALFORMED_REQUEST"]
        assert rec["stage"] in ("gate", "intake")
        if rec["stage"] == "gate":
            assert rec["parent"] == session_id
            assert rec["request"]["action"] == "mcp.tools/call"
    by_id = {rec["request"]["resource"]["id"] for rec in recs if rec["stage"] == "gate"}
    assert "testsrv/nope" in by_id and "testsrv/Echo" in by_id
    # no exec.start for any refusal
    refused = {rec["id"] for rec in recs}
    assert not [r for _i, r, _ in ledger(gate) if r["type"] != "decision" and r["id"] in refused]


async def test_names_are_judged_against_every_page_and_a_call_before_listing_works(
    gate: Gate, token: str, catalogue: Upstream, upstream_log: Path
) -> None:
    async with proxied(gate, catalogue, options(token)) as (_proxy, client):
        # the client has not listed (send_request: ClientSession.call_tool would list first to
        # learn output schemas): the proxy's own listing at session start decides
        first = await client.send_request(
            types.CallToolRequest(
                params=types.CallToolRequestParams(name="last", arguments={"text": "last page"})
            ),
            types.CallToolResult,
        )
        listed = await client.list_tools()
        with pytest.raises(MCPError) as cursor:
            await client.list_tools(params=types.PaginatedRequestParams(cursor="2"))

    assert not first.is_error, text_of(first)
    names = [t.name for t in listed.tools]
    # every page in one answer, without the tools whose schemas are refused
    assert names == ["strict", "echo", "grow", "shrink", "last"]
    assert listed.next_cursor is None
    assert cursor.value.error.code == types.INVALID_PARAMS
    lists = [e["cursor"] for e in seen(upstream_log) if e["kind"] == "list"]
    assert lists == [None, "2", "4", "6"] * 2  # at session start, and for the client


async def test_list_changed_makes_the_proxy_list_again(
    gate: Gate, token: str, catalogue: Upstream, upstream_log: Path
) -> None:
    async with proxied(gate, catalogue, options(token)) as (_proxy, client):
        before = await client.call_tool("late", {"text": "too early"})
        await client.call_tool("grow", {})
        await anyio.sleep(0.2)  # the notification travels apart from the answer
        added = await client.call_tool("late", {"text": "now listed"})
        await client.call_tool("shrink", {})
        await anyio.sleep(0.2)
        after = await client.call_tool("late", {"text": "gone again"})

    assert before.is_error and "MALFORMED_REQUEST" in text_of(before)
    assert not added.is_error, text_of(added)
    assert after.is_error and "no tool named 'late'" in text_of(after)
    assert tool_calls(upstream_log) == [
        ("grow", {}),
        ("late", {"text": "now listed"}),
        ("shrink", {}),
    ]


# -- the arguments must meet the tool's inputSchema ----------------------------------------------

INVALID = [
    ({"n": "1"}, "$.n: '1' is not of type 'integer'"),
    ({}, "'n' is a required property"),
    ({"n": 1, "extra": True}, "Additional properties are not allowed ('extra' was unexpected)"),
    ({"n": -1}, "$.n: -1 is less than the minimum of 0"),
    ({"n": 1, "tag": "ABC"}, "$.tag: 'ABC' does not match '^[a-z]+$'"),
    ({"n": 1.5}, "$.n: 1.5 is not of type 'integer'"),
]


async def test_arguments_that_fail_the_input_schema_are_refused_and_not_forwarded(
    gate: Gate, token: str, catalogue: Upstream, upstream_log: Path
) -> None:
    async with proxied(gate, catalogue, options(token)) as (_proxy, client):
        results = [await client.call_tool("strict", args) for args, _ in INVALID]
        ok = await client.call_tool("strict", {"n": 3, "tag": "abc"})

    for (args, expected), result in zip(INVALID, results, strict=True):
        assert result.is_error, args
        text = text_of(result)
        assert "MALFORMED_REQUEST: the arguments do not match the tool's inputSchema" in text
        assert expected in text, text
    assert not ok.is_error
    assert tool_calls(upstream_log) == [("strict", {"n": 3, "tag": "abc"})]
    recs = refusals(gate)
    assert len(recs) == len(INVALID)
    assert all(r["stage"] == "gate" for r in recs)
    assert {r["request"]["resource"]["id"] for r in recs} == {"catalogue/strict"}


async def test_tools_with_hostile_schemas_cannot_be_called(
    gate: Gate, token: str, catalogue: Upstream, upstream_log: Path
) -> None:
    started = time.monotonic()
    async with proxied(gate, catalogue, options(token)) as (_proxy, client):
        redos = await client.call_tool("redos", {"s": "a" * 40 + "!"})
        remote = await client.call_tool("remote", {"x": 1})
        huge = await client.call_tool("huge", {})

    assert time.monotonic() - started < 30  # nothing hung
    assert "exponential backtracking" in text_of(redos)
    assert "is not a pointer into the inputSchema itself" in text_of(remote)
    assert "larger than 65536 bytes" in text_of(huge)
    for result in (redos, remote, huge):
        assert result.is_error
        assert "MALFORMED_REQUEST: the upstream's tool" in text_of(result)
        assert "cannot be called: its inputSchema is refused" in text_of(result)
    assert tool_calls(upstream_log) == []


# -- --listen authenticates its clients -----------------------------------------------------------


async def test_listen_answers_401_without_the_bearer_token(
    gate: Gate, token: str, upstream: Upstream, upstream_log: Path
) -> None:
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/mcp"
    secret = ListenToken.generate()
    call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "stranger", "version": "0"},
        },
    }
    accept = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    stop = anyio.Event()
    try:
        async with (
            open_proxy(gate, upstream, options(token, listen=f"127.0.0.1:{port}")) as proxy,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(lambda: serve_http(proxy, sock, "127.0.0.1", stop, token=secret))
            size = gate.ledger.size()
            with anyio.fail_after(20):
                async with httpx.AsyncClient() as http:
                    none = await http.post(url, json=call, headers=accept)
                    wrong = await http.post(
                        url, json=call, headers={**accept, "authorization": "Bearer " + "x" * 43}
                    )
                    basic = await http.post(
                        url,
                        json=call,
                        headers={**accept, "authorization": "Basic " + secret.reveal()},
                    )
                    got = await http.get(url)
                after_refusals = gate.ledger.size()
                bearer = {"authorization": f"Bearer {secret.reveal()}"}
                async with (
                    httpx.AsyncClient(headers=bearer) as authed,
                    streamable_http_client(url, http_client=authed) as (read, write),
                    ClientSession(read, write) as client,
                ):
                    await client.initialize()
                    ok = await client.call_tool("echo", {"text": "authenticated"})
            stop.set()
    finally:
        sock.close()

    for response in (none, wrong, basic, got):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Bearer realm="interlock-mcp-proxy"'
        assert secret.reveal() not in response.text
    assert after_refusals == size  # nothing decided or recorded for the refused requests
    assert not ok.is_error and text_of(ok) == "authenticated"
    assert [name for name, _ in tool_calls(upstream_log)] == ["echo"]
    raw = b"".join(data for _i, _r, data in ledger(gate))
    assert secret.reveal().encode() not in raw


def test_listen_token_is_redacted_compared_whole_and_written_0600(tmp_path: Path) -> None:
    secret = ListenToken.generate()
    value = secret.reveal()
    assert value not in repr(secret) and value not in str(secret) and len(value) >= 43
    assert secret.is_presented(f"bearer {value}".encode())
    assert not secret.is_presented(f"Bearer {value[:-1]}".encode())
    assert not secret.is_presented(f"Bearer {value}x".encode())
    assert not secret.is_presented(value.encode())
    assert not secret.is_presented(b"")
    path = tmp_path / "run" / "proxy.token"
    path.parent.mkdir()
    path.write_text("old", encoding="ascii")
    os.chmod(path, 0o644)
    secret.write(path)
    assert path.read_text(encoding="ascii") == value + "\n"
    assert path.stat().st_mode & 0o777 == 0o600
    ListenToken.generate().remove(path)  # not its token: left alone
    assert path.exists()
    secret.remove(path)
    assert not path.exists()
    with pytest.raises(ValueError, match="at least 32"):
        ListenToken("short")
