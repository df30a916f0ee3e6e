"""The MCP governance proxy (issue 4 §3), in process: a real gate on a real home, the SDK's real
``ClientSession`` talking to the proxy's server, and real upstream MCP servers started as
subprocesses — ``tests/mcp_upstream.py`` (written for these tests: it logs every request it
receives, so "never reached the upstream" is checked, not assumed) and the third-party
``mcp-server-time`` from PyPI.

Every fail-closed test asserts the reason code, that nothing reached the upstream, and what the
ledger holds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import mcp.types as types
import pytest
from mcp import ClientSession
from mcp.shared.exceptions import MCPError
from mcp.shared.memory import create_client_server_memory_streams

from interlock.adapters.mcp_proxy import (
    DENIED_ERROR_CODE,
    MAX_LINE_BYTES,
    ListenToken,
    McpProxy,
    ProxyOptions,
    Upstream,
    UpstreamError,
    bind,
    check_server_name,
    continuation_context,
    denial_text,
    ending,
    open_proxy,
    result_digest,
    serve_http,
    transport_security,
)
from interlock.adapters.mcp_proxy.relay import ToolCallRelay
from interlock.adapters.mcp_proxy.transport import _StdinLines
from interlock.capability import revocation_ids
from interlock.core.canonical import digest
from interlock.core.model import Decision, Effect, Reason, ReasonCode, RecordType
from interlock.errors import Denied, LedgerUnavailable, UsageError
from interlock.gate import Gate
from interlock.home import Home
from interlock.policy.bundle import sign_bundle
from tests.conftest import RESEARCHER

pytestmark = pytest.mark.anyio

UPSTREAM = str(Path(__file__).resolve().parents[1] / "mcp_upstream.py")
MCP_RIGHTS = (
    "mcp.session:McpServer::*",
    "mcp.tools/call:McpTool::*",
    "mcp.resources/read:McpResource::*",
    "mcp.prompts/get:McpPrompt::*",
)
#: permits for the researcher: sessions, tools (but not testsrv/add, nor mcp-time's
#: convert_time), one resource and one prompt
MCP_POLICY = f"""
@id("test-mcp-session")
permit (principal == Agent::"{RESEARCHER}", action == Action::"mcp.session", resource);

@id("test-mcp-tools")
permit (principal == Agent::"{RESEARCHER}", action == Action::"mcp.tools/call", resource);

@id("test-mcp-no-add")
forbid (principal, action == Action::"mcp.tools/call", resource == McpTool::"testsrv/add");

@id("test-mcp-no-convert")
forbid (
  principal,
  action == Action::"mcp.tools/call",
  resource == McpTool::"mcp-time/convert_time"
);

@id("test-mcp-greeting")
permit (principal == Agent::"{RESEARCHER}", action == Action::"mcp.resources/read", resource)
when {{ context.args has uri && context.args.uri == "note://greeting" }};

@id("test-mcp-greet")
permit (
  principal == Agent::"{RESEARCHER}",
  action == Action::"mcp.prompts/get",
  resource == McpPrompt::"testsrv/greet"
);
"""
_HASH_RE = re.compile(r"decision ([0-9a-f]{64})")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def permit_mcp(home: Path, version: int = 2) -> None:
    """Add the test MCP permits to the home's policy and re-sign it."""
    (home / "policy" / "mcp.cedar").write_text(MCP_POLICY, encoding="utf-8")
    sign_bundle(home / "policy", Home.load(home).private_key("policy"), version=version)


@pytest.fixture
def mcp_home(home: Path) -> Path:
    permit_mcp(home)
    return home


@pytest.fixture
def token(mcp_home: Path, issue: Any) -> str:
    tok: str = issue(RESEARCHER, *MCP_RIGHTS)
    return tok


@pytest.fixture
def gate(mcp_home: Path) -> Iterator[Gate]:
    g = Gate.open(mcp_home)
    yield g
    g.close()


@pytest.fixture
def upstream_log(tmp_path: Path) -> Path:
    return tmp_path / "upstream.log"


@pytest.fixture
def errlog(tmp_path: Path) -> Iterator[Any]:
    with (tmp_path / "upstream.err").open("w", encoding="utf-8") as fh:
        yield fh


#: what the proxy's own environment may hold: none of it may reach the upstream
INTERLOCK_ENV = {
    "INTERLOCK_CAPABILITY": "secret",
    "INTERLOCK_HOME": "/srv/interlock",
    "INTERLOCK_PRINCIPAL": RESEARCHER,
    "INTERLOCK_EXECUTION_ID": "01a2b3c4-0000-7000-8000-000000000000",
}


@pytest.fixture
def upstream(upstream_log: Path, errlog: Any) -> Upstream:
    env = {**os.environ, "MCP_UPSTREAM_LOG": str(upstream_log), **INTERLOCK_ENV}
    return Upstream(command=(sys.executable, UPSTREAM), env=env, errlog=errlog)


def seen(log: Path) -> list[dict[str, Any]]:
    """What reached the upstream server, in order."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]


def ledger(gate: Gate) -> list[tuple[int, dict[str, Any], bytes]]:
    return [(i, json.loads(data), data) for i, _leaf, data in gate.ledger.iter_entries(0)]


def of(gate: Gate, request_id: str) -> dict[str, tuple[int, dict[str, Any]]]:
    """The records of one execution, by type: ``{type: (index, record)}``."""
    return {rec["type"]: (i, rec) for i, rec, _ in ledger(gate) if rec.get("id") == request_id}


def decisions(gate: Gate, action: str) -> list[tuple[int, dict[str, Any], bytes]]:
    return [
        (i, rec, data)
        for i, rec, data in ledger(gate)
        if rec["type"] == "decision" and rec["request"]["action"] == action
    ]


def decision_hash_in(text: str) -> str:
    m = _HASH_RE.search(text)
    assert m is not None, text
    return m.group(1)


def text_of(result: types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


@contextlib.asynccontextmanager
async def proxied(
    gate: Gate, upstream: Upstream, options: ProxyOptions
) -> AsyncIterator[tuple[McpProxy, ClientSession]]:
    """A proxy session served to a real ``ClientSession`` over in-memory streams."""
    async with (
        open_proxy(gate, upstream, options) as proxy,
        create_client_server_memory_streams() as (client_streams, server_streams),
        anyio.create_task_group() as tg,
    ):
        server = proxy.server
        tg.start_soon(
            partial(
                server.run,
                server_streams[0],
                server_streams[1],
                server.create_initialization_options(),
            )
        )
        async with ClientSession(client_streams[0], client_streams[1]) as client:
            await client.initialize()
            yield proxy, client
        tg.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def relayed(
    gate: Gate, upstream: Upstream, options: ProxyOptions
) -> AsyncIterator[tuple[McpProxy, ToolCallRelay, ClientSession]]:
    """A proxy session served as ``serve_stdio`` serves it (tools/call by the
    :class:`ToolCallRelay`, the rest by the SDK server), over in-memory streams."""
    async with (
        open_proxy(gate, upstream, options) as proxy,
        create_client_server_memory_streams() as (client_streams, server_streams),
        anyio.create_task_group() as tg,
    ):
        relay = ToolCallRelay(proxy, server_streams[1])
        tg.start_soon(relay.serve, proxy.server, server_streams[0])
        async with ClientSession(client_streams[0], client_streams[1]) as client:
            await client.initialize()
            yield proxy, relay, client
        tg.cancel_scope.cancel()


def options(token: str, **extra: Any) -> ProxyOptions:
    return ProxyOptions(principal=RESEARCHER, capability=token, **extra)


# -- allowed, denied -----------------------------------------------------------------------------


async def test_allowed_call_is_recorded_before_it_is_forwarded(
    gate: Gate, token: str, upstream: Upstream, upstream_log: Path
) -> None:
    at_forward: list[dict[str, Any]] = []
    async with proxied(gate, upstream, options(token)) as (proxy, client):
        assert proxy.direct is not None  # a stdio upstream: tools/call is written directly
        real = proxy.direct.request

        async def spy(method: str, *args: Any, **kwargs: Any) -> Any:
            # what the ledger holds at the moment the request leaves for the upstream
            if method == "tools/call":
                at_forward.append({"size": gate.ledger.size(), "records": ledger(gate)})
            return await real(method, *args, **kwargs)

        proxy.direct.request = spy  # type: ignore[method-assign]
        result = await client.call_tool("echo", {"text": "hello"})
        session_id = proxy.session_id
        server_name = proxy.server_name

    assert not result.is_error and text_of(result) == "hello"
    assert server_name == "testsrv"
    assert seen(upstream_log) == [
        {
            "kind": "tool",
            "name": "echo",
            "args": {"text": "hello"},
            "pid": seen(upstream_log)[0]["pid"],
        }
    ]
    ((di, dec, _),) = decisions(gate, "mcp.tools/call")
    assert dec["effect"] == "allow"
    assert dec["request"]["resource"] == {"type": "McpTool", "id": "testsrv/echo"}
    assert dec["request"]["args_sha256"] == hashlib.sha256(b'{"text":"hello"}').hexdigest()
    assert dec["parent"] == session_id
    recs = of(gate, dec["id"])
    (si, start), (ei, end) = recs["exec.start"], recs["exec.end"]
    # I1: the allow and exec.start were durable before the request was forwarded
    (snap,) = at_forward
    assert di < si < snap["size"] <= ei
    assert start["supervisor"] == "mcp-proxy" and start["server"] == "testsrv"
    assert end["outcome"] == "ok"
    assert end["result_sha256"] == result_digest(
        types.CallToolResult.model_validate(result.model_dump(by_alias=True))
    )
    assert gate.ledger.execution(dec["id"]).status == "ended"  # type: ignore[union-attr]


async def test_a_direct_tools_call_answers_as_the_sdk_session_would(
    gate: Gate, token: str, upstream: Upstream, upstream_log: Path
) -> None:
    """On a stdio upstream a governed tools/call bypasses the SDK client session
    (``DirectRequests``); what comes back is what the session would return: the same result
    model for a result and for a tool error, the same MCPError for an error answer."""

    def call(name: str, arguments: dict[str, Any]) -> types.CallToolRequest:
        return types.CallToolRequest(
            params=types.CallToolRequestParams(name=name, arguments=arguments)
        )

    async with proxied(gate, upstream, options(token)) as (proxy, _client):
        direct = proxy.direct
        assert direct is not None
        sdk_calls: list[str] = []
        real_send = proxy.upstream.send_request

        async def counted(request: Any, *args: Any, **kwargs: Any) -> Any:
            sdk_calls.append(request.method)
            return await real_send(request, *args, **kwargs)

        proxy.upstream.send_request = counted  # type: ignore[method-assign]
        cases = [("echo", {"text": "same"}), ("add", {"a": 2, "b": 3}), ("add", {"a": "x"})]
        answers = []
        for name, arguments in cases:
            proxy.direct = direct
            by_direct = await proxy._send_call(call(name, arguments))
            proxy.direct = None
            by_session = await proxy._send_call(call(name, arguments))
            answers.append((by_direct, by_session))
        proxy.direct = direct
        assert sdk_calls == ["tools/call"] * len(cases)  # only the session's own calls
        with pytest.raises(MCPError) as error:  # an error answer raises, as from the session
            await direct.request("no/such/method", {}, 10)

    for by_direct, by_session in answers:
        assert type(by_direct) is type(by_session)
        assert by_direct.model_dump() == by_session.model_dump()
    assert answers[0][0].content[0].text == "same"  # type: ignore[union-attr]
    assert answers[2][0].is_error  # type: ignore[union-attr]
    assert error.value.code == -32601  # JSON-RPC 2.0 §5.1: method not found
    assert [e["name"] for e in seen(upstream_log)] == ["echo", "echo", "add", "add"]


async def test_denied_call_never_reaches_the_upstream(
    gate: Gate, token: str, upstream: Upstream, upstream_log: Path
) -> None:
    async with proxied(gate, upstream, options(token)) as (_proxy, client):
        result = await client.call_tool("add", {"a": 1, "b": 2})
        ok = await client.call_tool("echo", {"text": "after"})

    assert result.is_error
    text = text_of(result)
    assert "denied by Interlock: POLICY_FORBID" in text
    assert "test-mcp-no-add" in text
    assert [e["name"] for e in seen(upstream_log)] == ["echo"]  # add never arrived
    assert not ok.is_error
    # the hash in the error is the hash of the recorded decision
    digest = decision_hash_in(text)
    (deny,) = [
        (rec, data)
        for _i, rec, data in decisions(gate, "mcp.tools/call")
        if rec["effect"] == "deny"
    ]
    assert hashlib.sha256(deny[1]).hexdigest() == digest
    assert deny[0]["request"]["resource"]["id"] == "testsrv/add"
    assert [r["code"] for r in deny[0]["reasons"]] == ["POLICY_FORBID"]
    assert set(of(gate, deny[0]["id"])) == {"decision"}  # no exec.start, no exec.end


async def test_capability_that_does_not_cover_the_tool_denies(
    gate: Gate, issue: Any, upstream: Upstream, upstream_log: Path
) -> None:
    tok = issue(
        RESEARCHER, "mcp.session:McpServer::testsrv", "mcp.tools/call:McpTool::testsrv/echo"
    )
    async with proxied(gate, upstream, options(tok)) as (_proxy, client):
        denied = await client.call_tool("hang", {"seconds": 0})
        allowed = await client.call_tool("echo", {"text": "x"})
    assert denied.is_error and "CAPABILITY_INSUFFICIENT" in text_of(denied)
    assert not allowed.is_error
    assert [e["name"] for e in seen(upstream_log)] == ["echo"]


async def test_resources_read_is_governed(
    gate: Gate, token: str, upstream: Upstream, upstream_log: Path
) -> None:
    async with proxied(gate, upstream, options(token)) as (_proxy, client):
        listed = await client.list_resources()
        ok = await client.read_resource("note://greeting")
        with pytest.raises(MCPError) as info:
            await client.read_resource("note://secret/plans")

    assert [str(r.uri) for r in listed.resources] == ["note://greeting"]
    content = ok.contents[0]
    assert isinstance(content, types.TextResourceContents)
    assert content.text == "hello from the upstream"
    assert info.value.code == DENIED_ERROR_CODE
    assert "POLICY_NO_PERMIT" in info.value.message
    assert info.value.data["reason_codes"] == ["POLICY_NO_PERMIT"]
    assert info.value.data["decision_hash"] == decision_hash_in(info.value.message)
    assert [e["name"] for e in seen(upstream_log)] == ["note://greeting"]
    resources = {
        rec["request"]["resource"]["id"]: rec["effect"]
        for _i, rec, _d in decisions(gate, "mcp.resources/read")
    }
    assert resources == {
        "testsrv/note://greeting": "allow",
        "testsrv/note://secret/plans": "deny",
    }


async def test_prompts_get_is_governed(
    gate: Gate, token: str, upstream: Upstream, upstream_log: Path
) -> None:
    async with proxied(gate, upstream, options(token)) as (_proxy, client):
        listed = await client.list_prompts()
        ok = await client.get_prompt("greet", {"name": "Ada"})
        with pytest.raises(MCPError) as info:
            await client.get_prompt("exfiltrate", {"name": "Ada"})

    assert [p.name for p in listed.prompts] == ["greet"]
    message = ok.messages[0].content
    assert isinstance(message, types.TextContent) and message.text == "Say hello to Ada."
    assert info.value.code == DENIED_ERROR_CODE and "POLICY_NO_PERMIT" in info.value.message
    assert [e["name"] for e in seen(upstream_log)] == ["greet"]
    ids = [rec["request"]["resource"]["id"] for _i, rec, _d in decisions(gate, "mcp.prompts/get")]
    assert ids == ["testsrv/greet", "testsrv/exfiltrate"]


# -- listing -------------------------------------------------------------------------------------


async def test_hide_denied_lists_only_tools_that_could_be_allowed(
    gate: Gate, issue: Any, upstream: Upstream, upstream_log: Path
) -> None:
    # the capability covers echo and add; the policy forbids add: only echo is shown
    tok = issue(
        RESEARCHER,
        "mcp.session:McpServer::*",
        "mcp.tools/call:McpTool::testsrv/echo",
        "mcp.tools/call:McpTool::testsrv/add",
    )
    async with proxied(gate, upstream, options(tok, hide_denied=True)) as (_proxy, client):
        size = gate.ledger.size()
        listed = await client.list_tools()
        assert gate.ledger.size() == size  # probing records nothing
        hidden_call = await client.call_tool("add", {"a": 1, "b": 1})  # still decided
    async with proxied(gate, upstream, options(tok)) as (_proxy, client):
        everything = await client.list_tools()

    assert [t.name for t in listed.tools] == ["echo"]
    assert [t.name for t in everything.tools] == ["echo", "add", "hang", "die", "env_keys"]
    assert hidden_call.is_error and "POLICY_FORBID" in text_of(hidden_call)
    assert seen(upstream_log) == []


# -- the session -------------------------------------------------------------------------------


async def test_every_request_names_the_session_as_its_parent(
    gate: Gate, token: str, upstream: Upstream
) -> None:
    async with proxied(gate, upstream, options(token)) as (proxy, client):
        await client.call_tool("echo", {"text": "1"})
        await client.call_tool("add", {"a": 1, "b": 2})
        await client.read_resource("note://greeting")
        await client.get_prompt("greet", {"name": "x"})
        session_id = proxy.session_id
        assert gate.ledger.execution(session_id).status == "running"  # type: ignore[union-attr]

    (sess,) = decisions(gate, "mcp.session")
    _si, srec, sdata = sess
    assert srec["id"] == session_id and srec["effect"] == "allow"
    assert srec["request"]["resource"] == {"type": "McpServer", "id": "testsrv"}
    session_leaf = hashlib.sha256(b"\x00" + sdata).hexdigest()
    children = [
        rec
        for _i, rec, _d in ledger(gate)
        if rec["type"] == "decision" and rec["request"]["action"] != "mcp.session"
    ]
    assert len(children) == 4
    for rec in children:
        assert rec["parent"] == session_id
        assert rec["parent_leaf"] == session_leaf
        assert rec["lineage"] == {"status": "running", "depth": 1}
    recs = of(gate, session_id)
    assert set(recs) == {"decision", "exec.start", "exec.end"}
    assert recs["exec.end"][1]["outcome"] == "ok"
    assert gate.ledger.execution(session_id).status == "ended"  # type: ignore[union-attr]


async def test_session_denied_by_default_policy_serves_nothing(
    home: Path, issue: Any, tmp_path: Path, upstream_log: Path, errlog: Any
) -> None:
    """The default policy permits no MCP: the session is denied before the upstream starts."""
    marker = tmp_path / "upstream-started"
    started = Upstream(
        command=("sh", "-c", f'touch "{marker}"; exec "{sys.executable}" "{UPSTREAM}"'),
        env={**os.environ, "MCP_UPSTREAM_LOG": str(upstream_log)},
        errlog=errlog,
    )
    tok = issue(RESEARCHER, *MCP_RIGHTS)
    with Gate.open(home) as g:
        with pytest.raises(Denied) as info:
            async with open_proxy(g, started, options(tok, name="testsrv")):
                pytest.fail("a denied session must not be entered")
        assert info.value.reason_code == "POLICY_NO_PERMIT"
        assert not marker.exists()  # with --name, not even started
        (sess,) = decisions(g, "mcp.session")
        assert sess[1]["effect"] == "deny"

        # without a name the upstream starts (to learn it), is initialized, and is stopped
        with pytest.raises(Denied):
            async with open_proxy(g, started, options(tok)):
                pytest.fail("a denied session must not be entered")
        assert marker.exists()
        assert seen(upstream_log) == []
        assert [rec["effect"] for _i, rec, _d in decisions(g, "mcp.session")] == ["deny", "deny"]


async def test_revocation_terminates_the_session_and_its_running_call(
    gate: Gate, token: str, upstream: Upstream, upstream_log: Path
) -> None:
    opts = options(token, interval=0.2)
    async with proxied(gate, upstream, opts) as (proxy, client):
        async with anyio.create_task_group() as tg:

            async def revoke_soon() -> None:
                await anyio.sleep(0.5)
                await anyio.to_thread.run_sync(gate.revoke, revocation_ids(token))

            tg.start_soon(revoke_soon)
            with anyio.fail_after(10):
                stopped = await client.call_tool("hang", {"seconds": 30})
        with anyio.fail_after(5):  # the session's own watch terminates it within its interval
            while proxy.session.reason is None:  # noqa: ASYNC110 - set by the watch thread
                await anyio.sleep(0.05)
        later = await client.call_tool("echo", {"text": "too late"})
        with pytest.raises(MCPError) as listing:
            await client.list_tools()
        session_id = proxy.session_id

    assert stopped.is_error
    assert "terminated by Interlock" in text_of(stopped)
    assert later.is_error and "denied by Interlock" in text_of(later)
    assert "CAPABILITY_REVOKED" in text_of(later) or "LINEAGE_BROKEN" in text_of(later)
    assert listing.value.code == DENIED_ERROR_CODE
    assert "session was terminated: CAPABILITY_REVOKED" in listing.value.message
    assert [e["name"] for e in seen(upstream_log)] == ["hang"]
    hang = next(
        rec
        for _i, rec, _d in decisions(gate, "mcp.tools/call")
        if rec["request"]["resource"]["id"] == "testsrv/hang"
    )
    recs = of(gate, hang["id"])
    assert recs["exec.terminated"][1]["reason"]["code"] == "CAPABILITY_REVOKED"
    assert "exec.terminated" in recs and "exec.end" not in recs
    assert gate.ledger.execution(hang["id"]).status == "terminated"  # type: ignore[union-attr]
    assert gate.ledger.execution(session_id).status == "terminated"  # type: ignore[union-attr]


# -- the upstream fails ----------------------------------------------------------------------------


async def test_upstream_that_dies_mid_session_answers_errors_and_gets_nothing_more(
    gate: Gate, token: str, upstream: Upstream, upstream_log: Path
) -> None:
    async with proxied(gate, upstream, options(token)) as (_proxy, client):
        died = await client.call_tool("die", {})
        after = await client.call_tool("echo", {"text": "anyone there?"})
        with pytest.raises(MCPError) as listing:
            await client.list_tools()
        with pytest.raises(MCPError) as reading:
            await client.read_resource("note://greeting")

    assert died.is_error and "upstream unavailable" in text_of(died)
    assert after.is_error and "not forwarded" in text_of(after)
    assert listing.value.code == types.CONNECTION_CLOSED
    assert reading.value.code == types.CONNECTION_CLOSED
    assert [e["name"] for e in seen(upstream_log)] == ["die"]
    # every attempt is on the ledger: decided, started, ended with the failure
    ends = [
        of(gate, rec["id"])["exec.end"][1]
        for _i, rec, _d in ledger(gate)
        if rec["type"] == "decision" and rec["request"]["action"] != "mcp.session"
    ]
    assert [(e["outcome"], e["error"]) for e in ends] == [("error", "upstream_unavailable")] * 3


async def test_upstream_that_hangs_times_out(
    gate: Gate, token: str, upstream: Upstream, upstream_log: Path
) -> None:
    async with proxied(gate, upstream, options(token, timeout=0.5)) as (_proxy, client):
        with anyio.fail_after(10):
            hung = await client.call_tool("hang", {"seconds": 30})
        alive = await client.call_tool("echo", {"text": "still here"})

    assert hung.is_error and "upstream timeout: no answer within 0.5 s" in text_of(hung)
    assert not alive.is_error
    hang = next(
        rec
        for _i, rec, _d in decisions(gate, "mcp.tools/call")
        if rec["request"]["resource"]["id"] == "testsrv/hang"
    )
    end = of(gate, hang["id"])["exec.end"][1]
    assert (end["outcome"], end["error"]) == ("error", "timeout")
    assert end["duration_ms"] >= 450


async def test_a_request_the_client_abandons_is_recorded_as_cancelled(
    gate: Gate, token: str, upstream: Upstream, upstream_log: Path
) -> None:
    async with proxied(gate, upstream, options(token)) as (_proxy, client):
        with anyio.move_on_after(0.5):  # the client sends notifications/cancelled
            await client.call_tool("hang", {"seconds": 30})
        hang = next(
            rec
            for _i, rec, _d in decisions(gate, "mcp.tools/call")
            if rec["request"]["resource"]["id"] == "testsrv/hang"
        )
        with anyio.fail_after(5):
            while "exec.end" not in of(gate, hang["id"]):  # noqa: ASYNC110 - a ledger poll
                await anyio.sleep(0.05)
        after = await client.call_tool("echo", {"text": "next"})

    end = of(gate, hang["id"])["exec.end"][1]
    assert (end["outcome"], end["error"]) == ("error", "cancelled")
    assert gate.ledger.execution(hang["id"]).status == "ended"  # type: ignore[union-attr]
    assert not after.is_error


async def test_upstream_that_cannot_start_or_never_initializes(
    gate: Gate, token: str, errlog: Any
) -> None:
    missing = Upstream(command=("/nonexistent/mcp-server",), errlog=errlog)
    with pytest.raises(UpstreamError, match="cannot start the upstream"):
        async with open_proxy(gate, missing, options(token, name="missing")):
            pytest.fail("unreachable")
    # the session was admitted (with --name, before the start) and is ended, not left running
    (sess,) = decisions(gate, "mcp.session")
    assert gate.ledger.execution(sess[1]["id"]).status == "ended"  # type: ignore[union-attr]

    slow = Upstream(command=(sys.executable, UPSTREAM, "--slow-start"), errlog=errlog)
    with anyio.fail_after(15), pytest.raises(UpstreamError, match="did not initialize within"):
        async with open_proxy(gate, slow, options(token, startup_timeout=0.5)):
            pytest.fail("unreachable")


async def test_unrecorded_start_is_not_forwarded(
    gate: Gate, token: str, upstream: Upstream, upstream_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The allow and its exec.start are one commit: if it fails, nothing is forwarded."""
    real = gate.ledger.append

    def failing(items: Any, **kw: Any) -> Any:
        if any(b'"exec.start"' in it.record for it in items):
            raise LedgerUnavailable("disk full")
        return real(items, **kw)

    async with proxied(gate, upstream, options(token)) as (_proxy, client):
        monkeypatch.setattr(gate.ledger, "append", failing)
        result = await client.call_tool("echo", {"text": "must not run"})
        monkeypatch.setattr(gate.ledger, "append", real)

    assert result.is_error
    assert "denied by Interlock: LEDGER_UNAVAILABLE" in text_of(result)
    assert seen(upstream_log) == []


async def test_unrecorded_decision_is_a_denial_and_not_forwarded(
    gate: Gate, token: str, upstream: Upstream, upstream_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with proxied(gate, upstream, options(token)) as (_proxy, client):

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise LedgerUnavailable("cannot commit")

        monkeypatch.setattr(gate.ledger, "append", broken)
        result = await client.call_tool("echo", {"text": "must not run"})
        monkeypatch.undo()

    assert result.is_error
    assert "denied by Interlock: LEDGER_UNAVAILABLE" in text_of(result)
    assert seen(upstream_log) == []


async def test_relayed_tool_calls_are_governed_like_the_sdk_path(
    gate: Gate, token: str, upstream: Upstream, upstream_log: Path
) -> None:
    """The stdio fast path (no SDK server stack for tools/call) keeps every check: an allow is
    recorded and forwarded, a deny and a schema failure never reach the upstream, malformed
    params are INVALID_PARAMS; listing still goes through the SDK server."""
    async with relayed(gate, upstream, options(token)) as (_proxy, relay, client):
        listed = await client.list_tools()  # read after notifications/initialized
        assert relay.active and relay.version == "2025-11-25"  # the handshake era
        ok = await client.call_tool("echo", {"text": "relayed"})
        denied = await client.call_tool("add", {"a": 1, "b": 2})
        bad_args = await client.call_tool("echo", {"text": 5})
        unknown = await client.call_tool("nope", {})
        with pytest.raises(MCPError) as invalid:
            await client.send_request(
                types.CallToolRequest(params=types.CallToolRequestParams(name="echo")).model_copy(
                    update={"params": None}
                ),
                types.CallToolResult,
            )
        relayed_count = relay.relayed

    assert "echo" in [t.name for t in listed.tools]
    assert text_of(ok) == "relayed" and not ok.is_error
    assert ok.structured_content == {"result": "relayed"}
    assert denied.is_error and "denied by Interlock: POLICY_FORBID" in text_of(denied)
    assert bad_args.is_error and "MALFORMED_REQUEST" in text_of(bad_args)
    assert unknown.is_error and "MALFORMED_REQUEST" in text_of(unknown)
    assert invalid.value.error.code == types.INVALID_PARAMS
    assert relayed_count == 4  # every answered tools/call went through the relay
    assert [e["name"] for e in seen(upstream_log) if e["kind"] == "tool"] == ["echo"]
    effects = [
        (r["request"]["resource"]["id"], r["effect"])
        for _i, r, _d in decisions(gate, "mcp.tools/call")
    ]
    assert effects == [
        ("testsrv/echo", "allow"),
        ("testsrv/add", "deny"),
        ("testsrv/echo", "deny"),
        ("testsrv/nope", "deny"),
    ]
    ((_i, call, _d),) = [d for d in decisions(gate, "mcp.tools/call") if d[1]["effect"] == "allow"]
    assert set(of(gate, call["id"])) == {"decision", "exec.start", "exec.end"}


async def test_end_is_recorded_after_the_answer(
    gate: Gate, token: str, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One durable commit on the critical path: the answer reaches the client while its
    exec.end is still waiting to be committed; exec.end follows, after exec.start."""
    real = gate.record_execution
    release = threading.Event()
    held: list[str] = []

    def held_end(kind: RecordType, request_id: str, fields: Any, **kw: Any) -> int:
        if kind is RecordType.EXEC_END and request_id != session_id:
            held.append(request_id)
            release.wait(30)
        return real(kind, request_id, fields, **kw)

    async with proxied(gate, upstream, options(token)) as (proxy, client):
        session_id = proxy.session_id
        monkeypatch.setattr(gate, "record_execution", held_end)
        try:
            result = await client.call_tool("echo", {"text": "fast"})
            ((_i, call, _d),) = decisions(gate, "mcp.tools/call")
            # answered: started on the ledger, its end not committed yet
            assert text_of(result) == "fast" and not result.is_error
            assert set(of(gate, call["id"])) == {"decision", "exec.start"}
            assert gate.ledger.execution(call["id"]).status == "running"  # type: ignore[union-attr]
        finally:
            release.set()
        assert await anyio.to_thread.run_sync(proxy.ends.wait_idle, 30)
        assert held == [call["id"]]
        recs = of(gate, call["id"])
        assert recs["exec.start"][0] < recs["exec.end"][0]
        assert recs["exec.end"][1]["result_sha256"] == result_digest(result)
        assert gate.ledger.execution(call["id"]).status == "ended"  # type: ignore[union-attr]


async def test_an_end_is_committed_after_the_next_admission_not_before_it(
    gate: Gate, token: str, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The end of a call waits for the next call's admission (then the ledger is idle while
    that call is upstream), so that admission never queues behind it: on the ledger the
    second call's decision and exec.start come before the first call's exec.end. With no next
    call, closing the session commits the waiting end at once (here the linger is 60 s)."""
    monkeypatch.setattr(ending, "DEFAULT_LINGER_S", 60.0)
    async with proxied(gate, upstream, options(token)) as (proxy, client):
        first = await client.call_tool("echo", {"text": "one"})
        ((_i, call1, _d),) = decisions(gate, "mcp.tools/call")
        await anyio.sleep(0.3)  # a commit at once would have happened by now
        assert set(of(gate, call1["id"])) == {"decision", "exec.start"}
        assert proxy.ends.pending == 1
        second = await client.call_tool("echo", {"text": "two"})
        with anyio.fail_after(10):  # nudged by the second admission, not by the 60 s linger
            while proxy.ends.pending > 1:  # noqa: ASYNC110 - the recorder is a thread
                await anyio.sleep(0.02)
        (call2,) = [r for _i, r, _d in decisions(gate, "mcp.tools/call") if r["id"] != call1["id"]]
        with anyio.fail_after(10):
            closed = await anyio.to_thread.run_sync(proxy.ends.close)
    assert closed == []
    assert text_of(first) == "one" and text_of(second) == "two"
    one, two = of(gate, call1["id"]), of(gate, call2["id"])
    assert one["exec.start"][0] < two["decision"][0] < two["exec.start"][0] < one["exec.end"][0]
    assert two["exec.start"][0] < two["exec.end"][0]
    assert gate.ledger.execution(call2["id"]).status == "ended"  # type: ignore[union-attr]


async def test_an_end_with_no_next_call_is_committed_after_the_linger(
    gate: Gate, token: str, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No next admission comes: the end waits ``linger`` seconds, then is committed alone."""
    monkeypatch.setattr(ending, "DEFAULT_LINGER_S", 0.5)
    async with proxied(gate, upstream, options(token)) as (proxy, client):
        await client.call_tool("echo", {"text": "last"})
        ((_i, call, _d),) = decisions(gate, "mcp.tools/call")
        assert "exec.end" not in of(gate, call["id"])
        with anyio.fail_after(10):
            while "exec.end" not in of(gate, call["id"]):  # noqa: ASYNC110 - a thread commits
                await anyio.sleep(0.05)
        assert proxy.ends.pending == 0
    assert gate.ledger.execution(call["id"]).status == "ended"  # type: ignore[union-attr]


async def test_a_proxy_whose_watcher_is_not_running_forwards_nothing(
    gate: Gate, token: str, upstream: Upstream, upstream_log: Path
) -> None:
    """Forwarded requests are re-verified by the proxy's one watcher task
    (``McpProxy.watching``): without it a request cannot be supervised, so an allowed call is
    recorded as not run and never reaches the upstream."""
    async with proxied(gate, upstream, options(token)) as (proxy, client):
        proxy._watcher = False  # as outside McpProxy.watching
        result = await client.call_tool("echo", {"text": "unwatched"})
        assert await anyio.to_thread.run_sync(proxy.ends.wait_idle, 30)
    ((_i, call, _d),) = decisions(gate, "mcp.tools/call")
    assert result.is_error and "cannot supervise the request" in text_of(result)
    assert seen(upstream_log) == []
    recs = of(gate, call["id"])
    assert recs["exec.end"][1]["outcome"] == "error"
    assert gate.ledger.execution(call["id"]).status == "ended"  # type: ignore[union-attr]


async def test_unrecorded_end_is_reported_and_the_run_stays_accounted_for(
    gate: Gate,
    token: str,
    upstream: Upstream,
    upstream_log: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """exec.end is off the critical path: if it cannot be committed, the answer has already
    gone back. It is tried again when the session ends; what still fails is reported, and the
    run stays ``running`` on the ledger (its allow and exec.start are durable), for
    reap_orphans to terminate once the proxy is gone (see the crash test below)."""
    real = gate.record_execution
    failed: list[str] = []

    def failing(kind: RecordType, request_id: str, fields: Any, **kw: Any) -> int:
        if kind is RecordType.EXEC_END and request_id != session_id:
            failed.append(request_id)
            raise LedgerUnavailable("disk full")
        return real(kind, request_id, fields, **kw)

    monkeypatch.setattr(gate, "record_execution", failing)
    async with proxied(gate, upstream, options(token)) as (proxy, client):
        session_id = proxy.session_id
        result = await client.call_tool("echo", {"text": "an answer"})

    ((_i, call, _d),) = decisions(gate, "mcp.tools/call")
    assert text_of(result) == "an answer"
    assert [e["name"] for e in seen(upstream_log)] == ["echo"]
    assert failed == [call["id"], call["id"]]  # once in the background, once more at close
    assert proxy.ends.failed[0].request.id == call["id"]
    assert set(of(gate, call["id"])) == {"decision", "exec.start"}
    assert gate.ledger.execution(call["id"]).status == "running"  # type: ignore[union-attr]
    err = capsys.readouterr().err
    assert f"exec.end of execution {call['id']} not recorded" in err
    assert "LEDGER_UNAVAILABLE" in err or "disk full" in err
    # the session itself ended normally, after its request
    assert gate.ledger.execution(session_id).status == "ended"  # type: ignore[union-attr]


_CRASH = """
import json, os, sys, threading
import anyio
from mcp import ClientSession
from mcp.shared.memory import create_client_server_memory_streams
from interlock.adapters.mcp_proxy import ProxyOptions, Upstream, open_proxy
from interlock.core.model import RecordType
from interlock.gate import Gate

home, principal, token, upstream = sys.argv[1:5]
gate = Gate.open(home)
real = gate.record_execution

def never(kind, request_id, fields, **kw):
    if kind is RecordType.EXEC_END:
        threading.Event().wait()  # the window between the answer and its end record
    return real(kind, request_id, fields, **kw)

async def main():
    up = Upstream(command=(sys.executable, upstream))
    async with open_proxy(gate, up, ProxyOptions(principal=principal, capability=token)) as proxy:
        gate.record_execution = never
        server = proxy.server
        async with create_client_server_memory_streams() as (c, s), anyio.create_task_group() as tg:
            tg.start_soon(server.run, s[0], s[1], server.create_initialization_options())
            async with ClientSession(c[0], c[1]) as client:
                await client.initialize()
                result = await client.call_tool("echo", {"text": "answered"})
                line = json.dumps({"text": result.content[0].text, "session": proxy.session_id})
                print(line, flush=True)
                await anyio.sleep(3600)

anyio.run(main)
"""


def test_a_crash_between_answer_and_end_record_is_reaped(
    mcp_home: Path, token: str, tmp_path: Path
) -> None:
    """kill -9 after the client has its answer and before exec.end is committed: the run is
    on the ledger as allowed and started, and the next ``Gate.open`` reaps it (exec.terminated,
    INTERNAL_ERROR, reaped) together with the session, whose supervisor is gone too."""
    script = tmp_path / "crash.py"
    script.write_text(_CRASH, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTERLOCK_")}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(mcp_home), RESEARCHER, token, UPSTREAM],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        answered = json.loads(line)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert answered["text"] == "answered"
    with Gate.open(mcp_home) as gate:  # reap_orphans runs here
        ((_i, call, _d),) = decisions(gate, "mcp.tools/call")
        recs = of(gate, call["id"])
        assert set(recs) == {"decision", "exec.start", "exec.terminated"}
        term = recs["exec.terminated"][1]
        assert term["reaped"] is True
        assert term["reason"]["code"] == ReasonCode.INTERNAL_ERROR.value
        assert gate.ledger.execution(call["id"]).status == "terminated"  # type: ignore[union-attr]
        session = gate.ledger.execution(answered["session"])
        assert session is not None and session.status == "terminated"


# -- a third-party upstream --------------------------------------------------------------------


async def test_third_party_mcp_server_time(gate: Gate, token: str, errlog: Any) -> None:
    time_server = Upstream(
        command=(sys.executable, "-m", "mcp_server_time", "--local-timezone", "UTC"),
        errlog=errlog,
    )
    async with proxied(gate, time_server, options(token)) as (proxy, client):
        assert proxy.server_name == "mcp-time"
        tools = await client.list_tools()
        now = await client.call_tool("get_current_time", {"timezone": "UTC"})
        converted = await client.call_tool(
            "convert_time",
            {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Europe/Paris"},
        )

    assert {t.name for t in tools.tools} == {"get_current_time", "convert_time"}
    assert not now.is_error
    assert json.loads(text_of(now))["timezone"] == "UTC"
    assert converted.is_error and "POLICY_FORBID" in text_of(converted)
    by_tool = {
        rec["request"]["resource"]["id"]: rec for _i, rec, _d in decisions(gate, "mcp.tools/call")
    }
    assert by_tool["mcp-time/get_current_time"]["effect"] == "allow"
    assert by_tool["mcp-time/convert_time"]["effect"] == "deny"
    assert set(of(gate, by_tool["mcp-time/convert_time"]["id"])) == {"decision"}
    end = of(gate, by_tool["mcp-time/get_current_time"]["id"])["exec.end"][1]
    assert end["outcome"] == "ok" and len(end["result_sha256"]) == 64


# -- a streamable-HTTP upstream ------------------------------------------------------------------


@contextlib.contextmanager
def http_upstream(log: Path, errlog: Any) -> Iterator[str]:
    """``tests/mcp_upstream.py --http PORT``; yields its URL once it accepts connections."""
    import socket
    import subprocess
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, UPSTREAM, "--http", str(port)],
        env={**os.environ, "MCP_UPSTREAM_LOG": str(log)},
        stdout=subprocess.DEVNULL,
        stderr=errlog,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the HTTP upstream did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(10)


async def test_streamable_http_upstream(
    gate: Gate, token: str, upstream_log: Path, errlog: Any
) -> None:
    with http_upstream(upstream_log, errlog) as url:
        async with proxied(gate, Upstream(url=url), options(token)) as (_proxy, client):
            ok = await client.call_tool("echo", {"text": "over http"})
            denied = await client.call_tool("add", {"a": 2, "b": 2})
    assert not ok.is_error and text_of(ok) == "over http"
    assert denied.is_error and "POLICY_FORBID" in text_of(denied)
    assert [e["name"] for e in seen(upstream_log)] == ["echo"]
    (sess,) = decisions(gate, "mcp.session")
    assert sess[1]["request"]["resource"]["id"] == "testsrv"


# -- small parts -------------------------------------------------------------------------------


def test_upstream_never_sees_the_capability() -> None:
    up = Upstream(command=("x",), env={"INTERLOCK_CAPABILITY": "tok", "PATH": "/bin"})
    assert up.child_env() == {"PATH": "/bin"}
    every = Upstream(
        command=("x",),
        env={
            "INTERLOCK_CAPABILITY": "tok",
            "INTERLOCK_HOME": "/srv/interlock",
            "INTERLOCK_PRINCIPAL": RESEARCHER,
            "INTERLOCK_EXECUTION_ID": "01a2",
            "INTERLOCK_ANYTHING_ELSE": "x",
            "NOT_INTERLOCK_HOME": "kept",
            "PATH": "/bin",
        },
    )
    assert every.child_env() == {"NOT_INTERLOCK_HOME": "kept", "PATH": "/bin"}
    assert up.describe() == {"transport": "stdio", "command": ["x"]}
    assert Upstream(url="http://127.0.0.1:1/mcp").describe()["transport"] == "streamable-http"


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"command": ("x",), "url": "http://h/mcp"},
        {"url": "file:///etc/passwd"},
        {"url": "http://127.0.0.1:9000/mcp\n"},  # `$` would match before the newline
        {"url": "http://127.0.0.1:9000/mcp\nX-Injected: 1"},
    ],
)
def test_upstream_is_a_command_or_an_http_url(kwargs: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        Upstream(**kwargs)


@pytest.mark.parametrize(
    "name", ["", "a/b", 'x"y', "a b", "-lead", "x" * 129, "é", "testsrv\n", "testsrv\r\n"]
)
def test_server_names_that_cannot_name_a_resource_are_refused(name: str) -> None:
    with pytest.raises(UsageError):
        check_server_name(name)
    with pytest.raises(UsageError):
        ProxyOptions(principal=RESEARCHER, capability="t", name=name)


def test_options_refuse_non_positive_durations() -> None:
    with pytest.raises(UsageError):
        ProxyOptions(principal=RESEARCHER, capability="t", timeout=0)
    with pytest.raises(UsageError):
        ProxyOptions(principal=RESEARCHER, capability="t", startup_timeout=0)
    with pytest.raises(UsageError):
        ProxyOptions(principal=RESEARCHER, capability="t", interval=-1)


def test_denial_text_names_codes_and_hash_but_not_capability_details() -> None:
    def deny(code: ReasonCode, detail: str) -> Decision:
        return Decision(
            request_id="r-1",
            effect=Effect.DENY,
            reasons=(Reason(code=code, detail=detail),),
            snapshot="s",
            decision_hash="ab" * 32,
        )

    policy = denial_text(deny(ReasonCode.POLICY_NO_PERMIT, "no policy permits it"))
    assert policy == (
        f"denied by Interlock: POLICY_NO_PERMIT: no policy permits it (decision {'ab' * 32},"
        " request r-1)"
    )
    token = denial_text(deny(ReasonCode.CAPABILITY_INVALID, "signature of block 2 invalid"))
    assert "CAPABILITY_INVALID" in token and "signature" not in token


# -- review fixes: environment, DNS rebinding, stdin lines, continuations ------------------------


async def test_the_upstream_process_sees_no_interlock_variables(
    gate: Gate,
    token: str,
    upstream: Upstream,
    upstream_log: Path,
    errlog: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Neither an explicit ``env`` nor the proxy's own environment (``env=None``) passes any
    ``INTERLOCK_*`` variable to the real upstream subprocess."""
    async with proxied(gate, upstream, options(token)) as (_proxy, client):
        explicit = await client.call_tool("env_keys", {})
    for key, value in INTERLOCK_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MCP_UPSTREAM_LOG", str(upstream_log))
    inherited = Upstream(command=(sys.executable, UPSTREAM), errlog=errlog)
    async with proxied(gate, inherited, options(token)) as (_proxy, client):
        default = await client.call_tool("env_keys", {})

    assert not explicit.is_error and json.loads(text_of(explicit)) == []
    assert not default.is_error and json.loads(text_of(default)) == []
    assert [e["args"] for e in seen(upstream_log)] == [{"keys": []}, {"keys": []}]


async def test_listen_refuses_a_foreign_host_on_any_loopback_address(
    gate: Gate, token: str, upstream: Upstream
) -> None:
    """DNS rebinding: on 127.0.0.2 (loopback, but not one of the hosts for which the SDK turns
    its protection on by itself) a request naming another host or origin is refused; the
    proxy's own address is served (all with the bearer token: without it, 401 comes first)."""
    import httpx
    from mcp.client.streamable_http import streamable_http_client

    sock = bind("127.0.0.2", 0)
    port = sock.getsockname()[1]
    url = f"http://127.0.0.2:{port}/mcp"
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": types.LATEST_PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "rebinding-page", "version": "0"},
        },
    }
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    secret = ListenToken.generate()
    auth = f"Bearer {secret.reveal()}"
    headers["authorization"] = auth
    stop = anyio.Event()
    try:
        async with (
            open_proxy(gate, upstream, options(token, listen=f"127.0.0.2:{port}")) as proxy,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(partial(serve_http, proxy, sock, "127.0.0.2", stop, token=secret))
            with anyio.fail_after(20):
                async with httpx.AsyncClient() as http:
                    foreign = await http.post(
                        url, json=initialize, headers={**headers, "host": f"evil.example:{port}"}
                    )
                    origin = await http.post(
                        url, json=initialize, headers={**headers, "origin": "http://evil.example"}
                    )
                async with (
                    httpx.AsyncClient(
                        headers={"authorization": headers["authorization"]}
                    ) as ok_http,
                    streamable_http_client(url, http_client=ok_http) as (read, write),
                    ClientSession(read, write) as client,
                ):
                    await client.initialize()
                    ok = await client.call_tool("echo", {"text": "local"})
            stop.set()
    finally:
        sock.close()

    assert foreign.status_code == 421
    assert origin.status_code == 403
    assert not ok.is_error and text_of(ok) == "local"


def test_transport_security_names_only_the_bound_address_and_localhost() -> None:
    settings = transport_security("0:0:0:0:0:0:0:1", 8765)
    assert settings.enable_dns_rebinding_protection
    assert set(settings.allowed_hosts) == {
        "[0:0:0:0:0:0:0:1]:8765",
        "[::1]:8765",
        "127.0.0.1:8765",
        "localhost:8765",
    }
    assert set(settings.allowed_origins) == {f"http://{h}" for h in settings.allowed_hosts}
    assert "127.0.0.2:8765" in transport_security("127.0.0.2", 8765).allowed_hosts


async def _lines_of(data: bytes, limit: int, *, close: bool) -> tuple[list[str], bool]:
    """What ``_StdinLines`` yields for ``data`` written to a pipe (left open unless ``close``)."""
    r, w = os.pipe()
    try:
        lines = _StdinLines(r, limit)
        os.write(w, data)
        if close:
            os.close(w)
        with anyio.fail_after(10):
            got = [line async for line in lines]
        lines.close()
        return got, lines.overflow
    finally:
        with contextlib.suppress(OSError):
            os.close(w)
        with contextlib.suppress(OSError):
            os.close(r)


async def test_stdin_lines_are_capped() -> None:
    assert MAX_LINE_BYTES == 4 * 1024 * 1024
    # a line of exactly the limit (newline included) passes; EOF ends the lines as before
    fits = b"z" * 15 + b"\n"
    assert await _lines_of(b"{}\n" + fits + b"tail", 16, close=True) == (
        ["{}\n", fits.decode(), "tail"],
        False,
    )
    # a longer line ends them at once, without waiting for its newline or for EOF
    assert await _lines_of(b"{}\n" + b"x" * 17, 16, close=False) == (["{}\n"], True)
    # also when the newline arrives in the same read
    assert await _lines_of(b"{}\n" + b"y" * 16 + b"\n{}\n", 16, close=False) == (["{}\n"], True)


@pytest.fixture
def continuation_gate(mcp_home: Path) -> Iterator[Gate]:
    """The test MCP policy plus: no continued ``tools/call`` of ``echo``."""
    (mcp_home / "policy" / "continuations.cedar").write_text(
        """
@id("test-mcp-no-continued-echo")
forbid (principal, action == Action::"mcp.tools/call", resource == McpTool::"testsrv/echo")
when { context.request has mcp };
""",
        encoding="utf-8",
    )
    sign_bundle(mcp_home / "policy", Home.load(mcp_home).private_key("policy"), version=3)
    g = Gate.open(mcp_home)
    yield g
    g.close()


async def test_input_responses_and_request_state_are_decided_and_recorded(
    continuation_gate: Gate, token: str, upstream: Upstream, upstream_log: Path
) -> None:
    """What a continued request carries besides its arguments is forwarded only as part of
    what was decided: its digests are in the request's context (so on the ledger, and visible
    to policy as ``context.request.mcp``)."""
    gate = continuation_gate
    answers: dict[str, Any] = {"confirm": types.ElicitResult(action="accept", content={"ok": True})}
    both = types.CallToolRequestParams(
        name="echo", arguments={"text": "again"}, input_responses=answers, request_state="st-1"
    )
    answered = types.CallToolRequestParams(name="env_keys", arguments={}, input_responses=answers)

    async with proxied(gate, upstream, options(token)) as (_proxy, client):
        allowed = await client.send_request(
            types.CallToolRequest(params=answered), types.CallToolResult
        )
        denied = await client.send_request(types.CallToolRequest(params=both), types.CallToolResult)
        plain = await client.call_tool("echo", {"text": "plain"})
        with pytest.raises(MCPError) as refused:  # forwarded: the upstream checks its state
            await client.send_request(
                types.ReadResourceRequest(
                    params=types.ReadResourceRequestParams(
                        uri="note://greeting", request_state="r-9"
                    )
                ),
                types.ReadResourceResult,
            )

    answers_sha = digest({"confirm": {"action": "accept", "content": {"ok": True}}})
    full = {"mcp": {"input_responses_sha256": answers_sha, "request_state_sha256": digest("st-1")}}
    assert continuation_context(both) == full
    assert continuation_context(types.CallToolRequestParams(name="x")) is None
    assert not allowed.is_error and not plain.is_error
    assert denied.is_error and "POLICY_FORBID" in text_of(denied)
    assert "test-mcp-no-continued-echo" in text_of(denied)
    assert "requestState" in refused.value.message
    assert [(e["name"], e["args"]) for e in seen(upstream_log)] == [
        ("env_keys", {"keys": []}),
        ("echo", {"text": "plain"}),
    ]
    by_resource = {
        (rec["request"]["resource"]["id"], rec["effect"]): rec
        for _i, rec, _d in ledger(gate)
        if rec["type"] == "decision" and rec["request"]["action"] != "mcp.session"
    }
    for key, context in [
        (("testsrv/env_keys", "allow"), {"mcp": {"input_responses_sha256": answers_sha}}),
        (("testsrv/echo", "deny"), full),
        (("testsrv/echo", "allow"), {}),
        (("testsrv/note://greeting", "allow"), {"mcp": {"request_state_sha256": digest("r-9")}}),
    ]:
        rec = by_resource[key]
        assert rec["request"]["context_sha256"] == digest(context), key
        blob = gate.ledger.blob(f"req:{rec['id']}")
        assert blob is not None and json.loads(blob)["context"] == context
    read_end = of(gate, by_resource[("testsrv/note://greeting", "allow")]["id"])["exec.end"][1]
    assert (read_end["outcome"], read_end["error"]) == ("error", "upstream_error")
