"""The framework adapters on a real home, without network: LangChain tools driven through
``invoke`` / ``ainvoke`` and a LangChain fake chat model; OpenAI Agents function tools
driven through ``on_invoke_tool`` with a real ``ToolContext`` and through ``Runner`` with a fake
``Model``. Every denial must reach the model as tool output carrying the reason code, be on the
ledger, and leave the tool body unrun."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections.abc import AsyncIterator
from typing import Annotated, Any

import pytest
from agents import Agent as OpenAIAgent
from agents import FunctionTool, ModelResponse, RunConfig, Runner, Usage, function_tool
from agents.models.interface import Model
from agents.tool_context import ToolContext
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import InjectedToolCallId, StructuredTool, Tool, ToolException, tool
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from interlock.adapters import langchain as lc
from interlock.adapters import openai_agents as oa
from interlock.adapters.sdk import Agent, current_execution
from interlock.capability import revocation_ids
from interlock.errors import LedgerUnavailable, UsageError
from interlock.gate import Gate
from tests.conftest import RESEARCHER, SUMMARIZER, recorded_args, records

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def assert_denial_text(gate: Gate, text: Any, code: str) -> dict[str, Any]:
    """``text`` is the model-facing denial naming ``code``; its decision hash is a recorded
    deny with that code and without an ``exec.start``. Returns the decision record."""
    assert isinstance(text, str)
    assert text.startswith(f"Interlock denied this call: {code}: "), text
    decision_hash = text.rsplit("(decision ", 1)[1].rstrip(")")
    for _i, _h, data in gate.ledger.iter_entries(0):
        if hashlib.sha256(data).hexdigest() == decision_hash:
            rec = json.loads(data)
            assert rec["effect"] == "deny"
            assert rec["reasons"][0]["code"] == code
            assert "exec.start" not in records(gate, rec["id"])
            return rec
    raise AssertionError(f"decision {decision_hash} is not on the ledger")


def span() -> NonRecordingSpan:
    return NonRecordingSpan(
        SpanContext(
            trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
            span_id=0x00F067AA0BA902B7,
            is_remote=False,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )
    )


# -- LangChain -----------------------------------------------------------------------------------


def make_lc_tools(ran: list[str]) -> tuple[StructuredTool, StructuredTool]:
    @tool
    def web_search(q: str, limit: int = 3) -> str:
        """Search the web."""
        run = current_execution()
        assert run is not None
        ran.append(run.id)
        return f"results for {q}"

    @tool
    def delete_database(name: str) -> str:
        """Drop a database."""
        ran.append("delete_database")
        return "dropped"

    return web_search, delete_database


def test_langchain_allowed_invocation_runs_inside_a_recorded_execution(
    gate: Gate, researcher: Agent
) -> None:
    ran: list[str] = []
    web_search, _ = make_lc_tools(ran)
    governed = lc.govern(web_search, researcher)
    # the model sees the same tool
    assert (governed.name, governed.description) == (web_search.name, web_search.description)
    assert governed.args == web_search.args
    assert governed.invoke({"q": "hello"}) == "results for hello"
    (exec_id,) = ran
    recs = records(gate, exec_id)
    assert recs["decision"]["effect"] == "allow"
    assert recs["decision"]["request"]["principal"] == RESEARCHER
    assert recs["decision"]["request"]["resource"] == {"type": "Tool", "id": "web_search"}
    assert recs["exec.start"]["supervisor"] == "in-process"
    assert recs["exec.end"]["outcome"] == "ok"
    assert recorded_args(gate, exec_id) == {"q": "hello", "limit": 3}  # validated, defaults


def test_langchain_denial_reaches_the_model_as_a_tool_error(gate: Gate, researcher: Agent) -> None:
    ran: list[str] = []
    _, delete_database = make_lc_tools(ran)
    governed = lc.govern(delete_database, researcher)
    # plain input: the tool's result is the denial text
    assert_denial_text(gate, governed.invoke({"name": "users"}), "POLICY_FORBID")
    # a tool call from a model: an error ToolMessage for that call
    msg = governed.invoke(
        {"type": "tool_call", "name": "delete_database", "args": {"name": "u"}, "id": "call_1"}
    )
    assert isinstance(msg, ToolMessage)
    assert (msg.status, msg.tool_call_id) == ("error", "call_1")
    rec = assert_denial_text(gate, msg.content, "POLICY_FORBID")
    assert rec["reasons"][0]["policy"] == "no-delete-database"
    assert ran == []


def test_langchain_async_tools_are_governed(gate: Gate, researcher: Agent) -> None:
    ran: list[str] = []

    async def summarize(text: str) -> str:
        """Summarize."""
        await asyncio.sleep(0)
        ran.append(current_execution().id)  # type: ignore[union-attr]
        return text.upper()

    async def drop(name: str) -> str:
        """Drop."""
        ran.append("drop")
        return "dropped"

    ok = lc.govern(StructuredTool.from_function(coroutine=summarize), researcher)
    denied = lc.govern(
        StructuredTool.from_function(coroutine=drop, name="delete_database"), researcher
    )

    async def main() -> tuple[Any, Any]:
        return await ok.ainvoke({"text": "abc"}), await denied.ainvoke({"name": "x"})

    result, denial = asyncio.run(main())
    assert result == "ABC"
    assert records(gate, ran[0])["exec.end"]["outcome"] == "ok"
    assert_denial_text(gate, denial, "POLICY_FORBID")
    assert ran[1:] == []


def test_langchain_sync_tool_through_ainvoke_is_governed(gate: Gate, researcher: Agent) -> None:
    ran: list[str] = []
    web_search, delete_database = make_lc_tools(ran)
    assert asyncio.run(lc.govern(web_search, researcher).ainvoke({"q": "x"})) == "results for x"
    assert records(gate, ran[0])["exec.end"]["outcome"] == "ok"
    denial = asyncio.run(lc.govern(delete_database, researcher).ainvoke({"name": "x"}))
    assert_denial_text(gate, denial, "POLICY_FORBID")
    assert len(ran) == 1


def test_langchain_capability_insufficient(gate: Gate, researcher: Agent) -> None:
    ran: list[str] = []
    web_search, _ = make_lc_tools(ran)
    sub = researcher.delegate("tool.call:Tool::summarize", 60, name="summarizer")
    text = lc.govern(web_search, sub).invoke({"q": "x"})
    rec = assert_denial_text(gate, text, "CAPABILITY_INSUFFICIENT")
    assert rec["request"]["principal"] == SUMMARIZER
    assert ran == []


def test_langchain_gate_form_uses_the_acting_agent(gate: Gate, researcher: Agent) -> None:
    ran: list[str] = []
    web_search, _ = make_lc_tools(ran)
    governed = lc.govern(web_search, gate)
    with researcher.acting():
        assert governed.invoke({"q": "x"}) == "results for x"
    assert records(gate, ran[0])["decision"]["request"]["principal"] == RESEARCHER
    # nobody acting: no principal, denied and recorded
    assert_denial_text(gate, governed.invoke({"q": "x"}), "MALFORMED_REQUEST")
    assert len(ran) == 1


def test_langchain_raising_resource_callable_denies(gate: Gate, researcher: Agent) -> None:
    ran: list[str] = []
    web_search, _ = make_lc_tools(ran)

    def resource(args: dict[str, Any]) -> Any:
        raise KeyError("tool")

    governed = lc.govern(web_search, researcher, resource=resource)
    assert_denial_text(gate, governed.invoke({"q": "x"}), "MALFORMED_REQUEST")
    assert ran == []


def test_langchain_non_json_arguments_deny(gate: Gate, researcher: Agent) -> None:
    ran: list[str] = []

    @tool
    def web_search(q: Any) -> str:
        """Search."""
        ran.append("ran")
        return "x"

    governed = lc.govern(web_search, researcher)
    assert_denial_text(gate, governed.invoke({"q": {1, 2}}), "MALFORMED_REQUEST")
    assert ran == []


def test_langchain_gate_errors_deny(
    gate: Gate, researcher: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[str] = []
    web_search, _ = make_lc_tools(ran)
    governed = lc.govern(web_search, researcher)

    def broken_append(*a: Any, **kw: Any) -> Any:
        raise LedgerUnavailable("disk full")

    with monkeypatch.context() as m:
        m.setattr(gate.ledger, "append", broken_append)
        text = governed.invoke({"q": "x"})
    assert text.startswith("Interlock denied this call: LEDGER_UNAVAILABLE: ")

    def broken_execution(*a: Any, **kw: Any) -> Any:
        raise RuntimeError("boom")

    with monkeypatch.context() as m:
        m.setattr(gate, "execution", broken_execution)
        text = governed.invoke({"q": "x"})
    assert text.startswith("Interlock denied this call: INTERNAL_ERROR (decision ")  # no detail
    assert ran == []


def test_langchain_keeps_the_tools_own_error_handling(gate: Gate, researcher: Agent) -> None:
    def fail(q: str) -> str:
        """Search."""
        raise ToolException(f"no results for {q}")

    raising = lc.govern(StructuredTool.from_function(fail, name="web_search"), researcher)
    with pytest.raises(ToolException, match="no results for x") as info:
        raising.invoke({"q": "x"})
    assert not isinstance(info.value, lc.InterlockToolError)

    handled = lc.govern(
        StructuredTool.from_function(fail, name="web_search", handle_tool_error=True), researcher
    )
    assert handled.invoke({"q": "y"}) == "no results for y"
    ends = [json.loads(d) for _i, _h, d in gate.ledger.iter_entries(0) if b'"exec.end"' in d]
    assert [e["outcome"] for e in ends] == ["error", "error"]


def test_langchain_string_input_and_injected_arguments(gate: Gate, researcher: Agent) -> None:
    ran: list[str] = []

    def echo(text: str) -> str:
        ran.append(current_execution().id)  # type: ignore[union-attr]
        return text

    assert (
        lc.govern(Tool(name="summarize", func=echo, description="Echo."), researcher).invoke("hi")
        == "hi"
    )
    assert recorded_args(gate, ran[0]) == {"tool_input": "hi"}

    @tool
    def web_search(q: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Search."""
        ran.append(current_execution().id)  # type: ignore[union-attr]
        return f"{q} for {tool_call_id}"

    msg = lc.govern(web_search, researcher).invoke(
        {"type": "tool_call", "name": "web_search", "args": {"q": "x"}, "id": "call_9"}
    )
    assert isinstance(msg, ToolMessage)
    assert (msg.status, msg.content) == ("success", "x for call_9")
    assert recorded_args(gate, ran[1]) == {"q": "x"}  # injected arguments are not the model's


def test_langchain_fake_model_tool_loop(gate: Gate, researcher: Agent) -> None:
    ran: list[str] = []
    tools = {t.name: lc.govern(t, researcher) for t in make_lc_tools(ran)}
    model = GenericFakeChatModel(
        messages=iter(
            [
                AIMessage(
                    content="",
                    tool_calls=[
                        {"name": "web_search", "args": {"q": "interlock"}, "id": "c1"},
                        {"name": "delete_database", "args": {"name": "prod"}, "id": "c2"},
                    ],
                ),
                AIMessage(content="done"),
            ]
        )
    )
    history: list[Any] = [HumanMessage("research interlock")]
    while True:
        reply = model.invoke(history)
        history.append(reply)
        if not reply.tool_calls:
            break
        for call in reply.tool_calls:
            history.append(tools[call["name"]].invoke({**call, "type": "tool_call"}))
    results = {m.tool_call_id: m for m in history if isinstance(m, ToolMessage)}
    assert (results["c1"].status, results["c1"].content) == ("success", "results for interlock")
    assert results["c2"].status == "error"
    assert_denial_text(gate, results["c2"].content, "POLICY_FORBID")
    assert len(ran) == 1 and ran[0] != "delete_database"


def test_langchain_lineage_and_trace_context(gate: Gate, researcher: Agent) -> None:
    ids: dict[str, str] = {}

    @researcher.governed(resource="Tool::summarize")
    def summarize(text: str) -> str:
        ids["child"] = current_execution().id  # type: ignore[union-attr]
        return text

    @tool
    def web_search(q: str) -> str:
        """Search, then summarize."""
        ids["tool"] = current_execution().id  # type: ignore[union-attr]
        return summarize(q)

    with trace.use_span(span()):
        assert lc.govern(web_search, researcher).invoke({"q": "x"}) == "x"
    tool_rec = records(gate, ids["tool"])["decision"]
    child_rec = records(gate, ids["child"])["decision"]
    assert child_rec["parent"] == ids["tool"]
    assert tool_rec["request"]["traceparent"] == TRACEPARENT
    assert child_rec["request"]["traceparent"] == TRACEPARENT


def test_langchain_async_tool_is_stopped_on_revocation(gate: Gate, issue: Any) -> None:
    token = issue()
    agent = gate.agent(RESEARCHER, token)
    finished: list[bool] = []

    async def slow(q: str) -> str:
        """Search slowly."""
        await asyncio.to_thread(gate.revoke, revocation_ids(token))
        await asyncio.sleep(5)
        finished.append(True)
        return q

    governed = lc.govern(
        StructuredTool.from_function(coroutine=slow, name="web_search"), agent, interval=0.1
    )
    text = asyncio.run(governed.ainvoke({"q": "x"}))
    assert text.startswith("Interlock stopped this call: CAPABILITY_REVOKED: ")
    assert finished == []
    terminated = [
        json.loads(d) for _i, _h, d in gate.ledger.iter_entries(0) if b"exec.terminated" in d
    ]
    assert terminated[0]["reason"]["code"] == "CAPABILITY_REVOKED"


def test_langchain_govern_refuses_what_it_cannot_govern(gate: Gate, researcher: Agent) -> None:
    with pytest.raises(UsageError):
        lc.govern(lambda q: q, researcher)  # type: ignore[arg-type]
    web_search, _ = make_lc_tools([])
    with pytest.raises(UsageError):
        lc.govern(web_search, "gate")  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        lc.govern(web_search, researcher, resource="not a uid")


# -- OpenAI Agents SDK ---------------------------------------------------------------------------


def make_oa_tools(ran: list[str]) -> tuple[FunctionTool, FunctionTool, FunctionTool]:
    @function_tool
    def web_search(q: str) -> str:
        """Search the web."""
        run = current_execution()
        assert run is not None
        ran.append(run.id)
        return f"results for {q}"

    @function_tool
    def read_file(path: str) -> str:
        """Read a file."""
        ran.append("read_file")
        return "contents"

    @function_tool
    def delete_database(name: str) -> str:
        """Drop a database."""
        ran.append("delete_database")
        return "dropped"

    return web_search, read_file, delete_database


def tool_context(name: str, arguments: str) -> ToolContext[Any]:
    return ToolContext(
        context=None, tool_name=name, tool_call_id="call_1", tool_arguments=arguments
    )


def invoke(tool: FunctionTool, arguments: str) -> Any:
    return asyncio.run(tool.on_invoke_tool(tool_context(tool.name, arguments), arguments))


class ScriptedModel(Model):
    """A fake ``Model``: returns the scripted outputs turn by turn and keeps each turn's input
    (so the test sees what the model was told). No network."""

    def __init__(self, turns: list[list[Any]]) -> None:
        self.turns = list(turns)
        self.inputs: list[Any] = []

    async def get_response(
        self,
        system_instructions: Any,
        input: Any,
        model_settings: Any,
        tools: Any,
        output_schema: Any,
        handoffs: Any,
        tracing: Any,
        *,
        previous_response_id: Any = None,
        conversation_id: Any = None,
        prompt: Any = None,
        **kwargs: Any,
    ) -> ModelResponse:
        self.inputs.append(input)
        return ModelResponse(output=self.turns.pop(0), usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise NotImplementedError("the tests do not stream")


def call(call_id: str, name: str, arguments: dict[str, Any]) -> ResponseFunctionToolCall:
    return ResponseFunctionToolCall(
        type="function_call",
        id=f"fc_{call_id}",
        call_id=call_id,
        name=name,
        arguments=json.dumps(arguments),
    )


def final(text: str) -> ResponseOutputMessage:
    return ResponseOutputMessage(
        id="msg_1",
        type="message",
        role="assistant",
        status="completed",
        content=[ResponseOutputText(type="output_text", text=text, annotations=[])],
    )


def tool_outputs(model: ScriptedModel, turn: int) -> dict[str, str]:
    """The function-call outputs the model received at ``turn``, by call id."""
    return {
        item["call_id"]: item["output"]
        for item in model.inputs[turn]
        if isinstance(item, dict) and item.get("type") == "function_call_output"
    }


async def run_agent(model: ScriptedModel, tools: list[FunctionTool]) -> Any:
    agent = OpenAIAgent(name="researcher", instructions="Research.", model=model, tools=tools)
    return await Runner.run(agent, "research", run_config=RunConfig(tracing_disabled=True))


def test_openai_on_invoke_tool_allowed_runs_inside_a_recorded_execution(
    gate: Gate, researcher: Agent
) -> None:
    ran: list[str] = []
    web_search, _, _ = make_oa_tools(ran)
    governed = oa.govern(web_search, researcher)
    assert governed is not web_search
    assert (governed.name, governed.params_json_schema) == (
        web_search.name,
        web_search.params_json_schema,
    )
    assert invoke(governed, '{"q": "hello"}') == "results for hello"
    (exec_id,) = ran
    recs = records(gate, exec_id)
    assert recs["decision"]["effect"] == "allow"
    assert recs["decision"]["request"]["resource"] == {"type": "Tool", "id": "web_search"}
    assert recs["exec.start"]["supervisor"] == "in-process"
    assert recs["exec.end"]["outcome"] == "ok"
    assert recorded_args(gate, exec_id) == {"q": "hello"}


def test_openai_denial_is_the_tool_output(gate: Gate, researcher: Agent) -> None:
    ran: list[str] = []
    _, _, delete_database = make_oa_tools(ran)
    text = invoke(oa.govern(delete_database, researcher), '{"name": "prod"}')
    rec = assert_denial_text(gate, text, "POLICY_FORBID")
    assert rec["request"]["resource"]["id"] == "delete_database"
    assert ran == []


@pytest.mark.parametrize("arguments", ['{"q": ', "[1, 2]", '"q"', '{"q": NaN}'])
def test_openai_malformed_arguments_deny(gate: Gate, researcher: Agent, arguments: str) -> None:
    ran: list[str] = []
    web_search, _, _ = make_oa_tools(ran)
    text = invoke(oa.govern(web_search, researcher), arguments)
    assert_denial_text(gate, text, "MALFORMED_REQUEST")
    assert ran == []


def test_openai_fail_closed_on_resource_and_gate_errors(
    gate: Gate, researcher: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[str] = []
    web_search, _, _ = make_oa_tools(ran)

    def resource(args: dict[str, Any]) -> Any:
        raise ValueError("bad")

    text = invoke(oa.govern(web_search, researcher, resource=resource), '{"q": "x"}')
    assert_denial_text(gate, text, "MALFORMED_REQUEST")

    governed = oa.govern(web_search, researcher)

    def broken_append(*a: Any, **kw: Any) -> Any:
        raise LedgerUnavailable("disk full")

    with monkeypatch.context() as m:
        m.setattr(gate.ledger, "append", broken_append)
        text = invoke(governed, '{"q": "x"}')
    assert text.startswith("Interlock denied this call: LEDGER_UNAVAILABLE: ")

    def broken_execution(*a: Any, **kw: Any) -> Any:
        raise RuntimeError("boom")

    with monkeypatch.context() as m:
        m.setattr(gate, "execution", broken_execution)
        text = invoke(governed, '{"q": "x"}')
    assert text.startswith("Interlock denied this call: INTERNAL_ERROR (decision ")  # no detail
    assert ran == []


def test_openai_runner_with_a_fake_model(gate: Gate, researcher: Agent) -> None:
    ran: list[str] = []
    web_search, read_file, delete_database = make_oa_tools(ran)
    # a sub-agent that may only search: read_file is beyond its capability
    sub = researcher.delegate("tool.call:Tool::web_search", 60, name="summarizer")
    tools = [oa.govern(t, sub) for t in (web_search, read_file, delete_database)]
    model = ScriptedModel(
        [
            [
                call("c1", "web_search", {"q": "interlock"}),
                call("c2", "read_file", {"path": "/etc/passwd"}),
                call("c3", "delete_database", {"name": "prod"}),
            ],
            [final("done")],
        ]
    )
    result = asyncio.run(run_agent(model, tools))
    assert result.final_output == "done"
    outputs = tool_outputs(model, 1)
    assert outputs["c1"] == "results for interlock"
    read_rec = assert_denial_text(gate, outputs["c2"], "CAPABILITY_INSUFFICIENT")
    assert read_rec["request"]["principal"] == SUMMARIZER
    assert_denial_text(gate, outputs["c3"], "CAPABILITY_INSUFFICIENT")
    assert len(ran) == 1
    assert records(gate, ran[0])["exec.end"]["outcome"] == "ok"


def test_openai_runner_inside_a_governed_call_records_lineage_and_trace(
    gate: Gate, researcher: Agent
) -> None:
    ran: list[str] = []
    web_search, _, delete_database = make_oa_tools(ran)
    tools = [oa.govern(web_search, gate), oa.govern(delete_database, gate)]  # acting agent
    model = ScriptedModel(
        [
            [call("c1", "web_search", {"q": "a"}), call("c2", "delete_database", {"name": "b"})],
            [final("done")],
        ]
    )
    outer: list[str] = []

    @researcher.governed(resource="Tool::summarize")
    async def research() -> Any:
        outer.append(current_execution().id)  # type: ignore[union-attr]
        return await run_agent(model, tools)

    with trace.use_span(span()):
        result = asyncio.run(research())
    assert result.final_output == "done"
    child = records(gate, ran[0])["decision"]
    assert child["parent"] == outer[0]
    assert child["request"]["principal"] == RESEARCHER  # the agent acting in research()
    assert child["request"]["traceparent"] == TRACEPARENT
    denied = assert_denial_text(gate, tool_outputs(model, 1)["c2"], "POLICY_FORBID")
    assert denied["parent"] == outer[0]
    assert len(ran) == 1


def test_openai_govern_refuses_what_it_cannot_govern(gate: Gate, researcher: Agent) -> None:
    with pytest.raises(UsageError):
        oa.govern(lambda q: q, researcher)  # type: ignore[arg-type]
    web_search, _, _ = make_oa_tools([])
    with pytest.raises(UsageError):
        oa.govern(web_search, object())  # type: ignore[arg-type]


# -- review fixes ----------------------------------------------------------------------------------


def _terminated(gate: Gate) -> list[dict[str, Any]]:
    return [json.loads(d) for _i, _h, d in gate.ledger.iter_entries(0) if b'"exec.terminated"' in d]


def test_langchain_sync_tool_under_ainvoke_may_run_on_after_it_is_stopped(
    gate: Gate, issue: Any
) -> None:
    """Only the await is cancelled: the model is told the call was stopped while the sync body
    still runs in its worker thread, and the termination record says so."""
    token = issue()
    agent = gate.agent(RESEARCHER, token)
    release = threading.Event()
    finished: list[str] = []

    def slow(q: str) -> str:
        """Search slowly."""
        gate.revoke(revocation_ids(token))
        release.wait(10)
        finished.append(q)
        return q

    governed = lc.govern(StructuredTool.from_function(slow, name="web_search"), agent, interval=0.1)

    async def main() -> tuple[Any, bool]:
        text = await governed.ainvoke({"q": "x"})
        still_running = finished == []
        release.set()
        return text, still_running

    text, still_running = asyncio.run(main())  # waits for the worker thread at shutdown
    assert text.startswith("Interlock stopped this call: CAPABILITY_REVOKED: ")
    assert still_running and finished == ["x"]  # it ran on, and to its end
    (term,) = _terminated(gate)
    assert term["reason"]["code"] == "CAPABILITY_REVOKED"
    assert term["body_may_still_run"] is True


def test_langchain_async_tool_stopped_is_not_flagged_as_running_on(gate: Gate, issue: Any) -> None:
    token = issue()
    agent = gate.agent(RESEARCHER, token)

    async def slow(q: str) -> str:
        """Search slowly."""
        await asyncio.to_thread(gate.revoke, revocation_ids(token))
        await asyncio.sleep(5)
        return q

    governed = lc.govern(
        StructuredTool.from_function(coroutine=slow, name="web_search"), agent, interval=0.1
    )
    assert asyncio.run(governed.ainvoke({"q": "x"})).startswith("Interlock stopped this call")
    (term,) = _terminated(gate)
    assert "body_may_still_run" not in term


def test_openai_sync_function_may_run_on_after_it_is_stopped(gate: Gate, issue: Any) -> None:
    token = issue()
    agent = gate.agent(RESEARCHER, token)
    release = threading.Event()
    finished: list[str] = []

    @function_tool(name_override="web_search")
    def slow(q: str) -> str:
        """Search slowly."""
        gate.revoke(revocation_ids(token))
        release.wait(10)
        finished.append(q)
        return q

    governed = oa.govern(slow, agent, interval=0.1)

    async def main() -> tuple[Any, bool]:
        text = await governed.on_invoke_tool(tool_context("web_search", '{"q": "x"}'), '{"q": "x"}')
        still_running = finished == []
        release.set()
        return text, still_running

    text, still_running = asyncio.run(main())
    assert text.startswith("Interlock stopped this call: CAPABILITY_REVOKED: ")
    assert still_running and finished == ["x"]
    (term,) = _terminated(gate)
    assert term["body_may_still_run"] is True


def test_adapters_do_not_show_the_detail_of_an_opaque_denial(gate: Gate) -> None:
    """A token that does not verify: the model reads the code and the decision hash only (as
    from the MCP proxy); the detail is on the ledger."""
    ran: list[str] = []
    forged = gate.agent(RESEARCHER, "not-a-biscuit-token")
    web_search, _ = make_lc_tools(ran)
    oa_search, _, _ = make_oa_tools(ran)
    texts = [
        lc.govern(web_search, forged).invoke({"q": "x"}),
        invoke(oa.govern(oa_search, forged), '{"q": "x"}'),
    ]
    for text in texts:
        assert isinstance(text, str)
        head, _, tail = text.partition(" (decision ")
        assert head == "Interlock denied this call: CAPABILITY_INVALID", text
        decision_hash = tail.rstrip(")")
        (rec,) = [
            json.loads(d)
            for _i, _h, d in gate.ledger.iter_entries(0)
            if hashlib.sha256(d).hexdigest() == decision_hash
        ]
        assert rec["reasons"][0]["code"] == "CAPABILITY_INVALID"
        assert rec["reasons"][0]["detail"]  # the operator has it
        assert rec["reasons"][0]["detail"] not in text
    assert ran == []


def test_langchain_args_are_what_the_tool_receives(gate: Gate, researcher: Agent) -> None:
    """LangChain validates first: the decided args are the coerced values, defaults applied."""
    got: list[tuple[str, Any, Any]] = []

    @tool
    def web_search(q: str, limit: int = 3, exact: bool = False) -> str:
        """Search."""
        got.append((current_execution().id, limit, exact))  # type: ignore[union-attr]
        return q

    lc.govern(web_search, researcher).invoke({"q": "x", "limit": "5"})
    ((exec_id, limit, exact),) = got
    assert (limit, exact) == (5, False)
    assert recorded_args(gate, exec_id) == {"q": "x", "limit": 5, "exact": False}


def test_openai_args_include_the_schema_defaults(gate: Gate, researcher: Agent) -> None:
    got: list[tuple[str, Any]] = []

    @function_tool
    def web_search(q: str, limit: int = 3) -> str:
        """Search."""
        got.append((current_execution().id, limit))  # type: ignore[union-attr]
        return q

    @function_tool(strict_mode=False, name_override="summarize")
    def loose(text: str, words: int = 50, lang: str | None = None) -> str:
        """Summarize."""
        got.append((current_execution().id, (words, lang)))  # type: ignore[union-attr]
        return text

    assert invoke(oa.govern(web_search, researcher), '{"q": "x"}') == "x"
    assert invoke(oa.govern(web_search, researcher), '{"q": "y", "limit": 7}') == "y"
    assert invoke(oa.govern(loose, researcher), '{"text": "t"}') == "t"
    (a, limit_a), (b, limit_b), (c, loose_values) = got
    assert (limit_a, limit_b, loose_values) == (3, 7, (50, None))
    assert recorded_args(gate, a) == {"q": "x", "limit": 3}
    assert recorded_args(gate, b) == {"q": "y", "limit": 7}
    assert recorded_args(gate, c) == {"text": "t", "words": 50}  # no null: Cedar has none


def test_openai_tool_failures_are_recorded_as_errors(gate: Gate, researcher: Agent) -> None:
    """The SDK's failure handler turns the exception into text for the model; the execution
    still ends as an error."""
    ran: list[str] = []

    @function_tool(name_override="web_search")
    def failing(q: str) -> str:
        """Search."""
        ran.append(current_execution().id)  # type: ignore[union-attr]
        raise ValueError(f"no results for {q}")

    @function_tool(name_override="read_file", failure_error_function=None)
    def raising(path: str) -> str:
        """Read."""
        ran.append(current_execution().id)  # type: ignore[union-attr]
        raise OSError("unreadable")

    text = invoke(oa.govern(failing, researcher), '{"q": "x"}')
    assert text == "An error occurred while running the tool. Please try again."  # the SDK's
    with pytest.raises(OSError, match="unreadable"):
        invoke(oa.govern(raising, researcher), '{"path": "/p"}')
    invalid = invoke(oa.govern(failing, researcher), '{"q": 5}')  # the SDK's validation fails
    assert invalid == text

    model = ScriptedModel([[call("c1", "web_search", {"q": "y"})], [final("done")]])
    result = asyncio.run(run_agent(model, [oa.govern(failing, researcher)]))
    assert result.final_output == "done"
    assert tool_outputs(model, 1)["c1"] == text

    ends = [json.loads(d) for _i, _h, d in gate.ledger.iter_entries(0) if b'"exec.end"' in d]
    assert [(e["outcome"], e.get("error_type")) for e in ends] == [
        ("error", "ValueError"),
        ("error", "OSError"),
        ("error", "ModelBehaviorError"),
        ("error", "ValueError"),
    ]
    assert len(ran) == 3  # the invalid call never reached the function
