"""The Python SDK on a real home: ``@gate.governed``, ``gate.agent``, delegation, lineage and
trace context. Every test asserts on the ledger; every fail-closed test asserts the specific
reason code and that the function body never ran."""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

import interlock
from interlock.adapters import governor, sdk
from interlock.adapters.sdk import Agent, current_agent, current_execution
from interlock.capability import revocation_ids
from interlock.errors import LedgerUnavailable, UsageError
from interlock.gate import Gate
from tests.conftest import RESEARCHER, SUMMARIZER, recorded_args, records, tool_request

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN_ID = 0x00F067AA0BA902B7
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def assert_recorded_deny(gate: Gate, exc: interlock.Denied, code: str) -> dict[str, Any]:
    """The denial carries the code, and its decision is the record at its ledger index."""
    assert exc.reason_code == code
    d = exc.decision
    assert not d.allowed
    assert d.codes[0] == code
    assert d.ledger_index is not None, "the deny must be recorded"
    data = gate.ledger.entry(d.ledger_index)
    assert hashlib.sha256(data).hexdigest() == d.decision_hash
    rec = json.loads(data)
    assert rec["effect"] == "deny"
    assert rec["reasons"][0]["code"] == code
    assert "exec.start" not in records(gate, d.request_id)
    return rec


# -- allow: decision, exec.start, exec.end, args ---------------------------------------------------


def test_sync_call_is_decided_recorded_and_run_inside_an_execution(
    gate: Gate, researcher: Agent
) -> None:
    seen: list[str] = []

    @researcher.governed(resource={"type": "Tool", "id": "web_search"})
    def web_search(q: str, limit: int = 5, *more: str, **opts: bool) -> str:
        run = current_execution()
        assert run is not None
        run.check()
        seen.append(run.id)
        return f"{q}:{limit}"

    assert web_search("hello", 3, "a", "b", exact=True) == "hello:3"
    (exec_id,) = seen
    recs = records(gate, exec_id)
    assert recs["decision"]["effect"] == "allow"
    assert recs["decision"]["request"]["principal"] == RESEARCHER
    assert recs["decision"]["request"]["resource"] == {"type": "Tool", "id": "web_search"}
    assert recs["decision"]["parent"] is None
    assert recs["exec.start"]["supervisor"] == "in-process"
    assert recs["exec.end"]["outcome"] == "ok"
    assert recorded_args(gate, exec_id) == {
        "q": "hello",
        "limit": 3,
        "more": ["a", "b"],
        "opts": {"exact": True},
    }
    assert gate.ledger.execution(exec_id).status == "ended"  # type: ignore[union-attr]
    assert current_execution() is None


def test_defaults_are_applied_to_the_recorded_args(gate: Gate, researcher: Agent) -> None:
    seen: list[str] = []

    @researcher.governed(resource="Tool::web_search")
    def web_search(q: str, limit: int = 5) -> None:
        seen.append(current_execution().id)  # type: ignore[union-attr]

    web_search(q="x")
    assert recorded_args(gate, seen[0]) == {"q": "x", "limit": 5}


def test_async_call_is_decided_recorded_and_run(gate: Gate, researcher: Agent) -> None:
    seen: list[str] = []

    @researcher.governed(resource={"type": "Tool", "id": "summarize"})
    async def summarize(text: str) -> str:
        await asyncio.sleep(0)
        seen.append(current_execution().id)  # type: ignore[union-attr]
        return text.upper()

    assert asyncio.run(summarize("abc")) == "ABC"
    recs = records(gate, seen[0])
    assert recs["decision"]["effect"] == "allow"
    assert recs["exec.end"]["outcome"] == "ok"
    assert recorded_args(gate, seen[0]) == {"text": "abc"}


def test_default_resource_is_the_function_name(gate: Gate, researcher: Agent) -> None:
    seen: list[str] = []

    @researcher.governed()
    def read_file(path: str) -> None:
        seen.append(current_execution().id)  # type: ignore[union-attr]

    read_file("/tmp/x")
    rec = records(gate, seen[0])["decision"]
    assert rec["request"]["resource"] == {"type": "Tool", "id": "read_file"}


def test_an_error_in_the_body_propagates_and_is_recorded(gate: Gate, researcher: Agent) -> None:
    seen: list[str] = []

    @researcher.governed(resource="Tool::web_search")
    def web_search(q: str) -> None:
        seen.append(current_execution().id)  # type: ignore[union-attr]
        raise KeyError(q)

    with pytest.raises(KeyError):
        web_search("x")
    end = records(gate, seen[0])["exec.end"]
    assert (end["outcome"], end["error_type"]) == ("error", "KeyError")


def test_methods_can_exclude_self(gate: Gate, researcher: Agent) -> None:
    class Searcher:
        calls: list[str] = []  # noqa: RUF012

        @researcher.governed(resource="Tool::web_search", exclude=("self",))
        def search(self, q: str) -> str:
            self.calls.append(current_execution().id)  # type: ignore[union-attr]
            return q

    s = Searcher()
    assert s.search("hi") == "hi"
    assert recorded_args(gate, s.calls[0]) == {"q": "hi"}


# -- deny: Denied with code, detail, hash; nothing runs --------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_deny_raises_denied_and_the_body_never_runs(
    gate: Gate, researcher: Agent, kind: str
) -> None:
    ran: list[bool] = []
    if kind == "sync":

        @researcher.governed(resource="Tool::delete_database")
        def drop(table: str) -> None:
            ran.append(True)

        with pytest.raises(interlock.Denied) as info:
            drop("users")
    else:

        @researcher.governed(resource="Tool::delete_database")
        async def adrop(table: str) -> None:
            ran.append(True)

        with pytest.raises(interlock.Denied) as info:
            asyncio.run(adrop("users"))
    rec = assert_recorded_deny(gate, info.value, "POLICY_FORBID")
    assert info.value.detail
    assert rec["reasons"][0]["policy"] == "no-delete-database"
    assert recorded_args(gate, info.value.decision.request_id) == {"table": "users"}
    assert ran == []


def test_a_narrow_capability_is_insufficient(gate: Gate, issue: Any) -> None:
    ran: list[bool] = []
    narrow = gate.agent(RESEARCHER, issue(RESEARCHER, "tool.call:Tool::web_search"))

    @narrow.governed(resource="Tool::read_file")
    def read_file(path: str) -> None:
        ran.append(True)

    with pytest.raises(interlock.Denied) as info:
        read_file("/etc/passwd")
    assert_recorded_deny(gate, info.value, "CAPABILITY_INSUFFICIENT")
    assert ran == []


# -- identity: bound agent, acting agent, none -----------------------------------------------------


def test_gate_governed_presents_the_acting_agent(gate: Gate, issue: Any) -> None:
    seen: list[str] = []

    @gate.governed(action="tool.call", resource="Tool::web_search")
    def web_search(q: str) -> None:
        assert current_agent() is not None
        seen.append(current_execution().id)  # type: ignore[union-attr]

    summarizer = gate.agent(SUMMARIZER, issue(SUMMARIZER))
    with summarizer.acting() as acting:
        assert acting is summarizer
        web_search("x")
    assert current_agent() is None
    assert records(gate, seen[0])["decision"]["request"]["principal"] == SUMMARIZER


def test_without_an_agent_the_call_is_denied_malformed(gate: Gate) -> None:
    ran: list[bool] = []

    @gate.governed(resource="Tool::web_search")
    def web_search(q: str) -> None:
        ran.append(True)

    with pytest.raises(interlock.Denied) as info:
        web_search("x")
    assert_recorded_deny(gate, info.value, "MALFORMED_REQUEST")
    assert "principal" in info.value.detail
    assert ran == []


def test_agent_validation_and_repr_hides_the_token(gate: Gate, issue: Any) -> None:
    token = issue()
    agent = gate.agent(RESEARCHER, token)
    assert token not in repr(agent)
    assert agent.capability == token
    with pytest.raises(UsageError):
        gate.agent("researcher", token)
    with pytest.raises(UsageError):
        gate.agent(RESEARCHER, "")


# -- resources -------------------------------------------------------------------------------------


def test_resource_callable_of_the_arguments(gate: Gate, researcher: Agent) -> None:
    ran: list[str] = []

    @researcher.governed(resource=lambda a: {"type": "Tool", "id": a["name"]})
    def call_tool(name: str, q: str = "") -> None:
        ran.append(name)

    call_tool("web_search")
    assert ran == ["web_search"]
    with pytest.raises(interlock.Denied) as info:
        call_tool("delete_database", q="now")
    rec = assert_recorded_deny(gate, info.value, "POLICY_FORBID")
    assert rec["request"]["resource"] == {"type": "Tool", "id": "delete_database"}
    assert ran == ["web_search"]


def test_resource_forms(gate: Gate, researcher: Agent) -> None:
    seen: list[str] = []

    @researcher.governed(resource=interlock.Resource(type="Tool", id="summarize"))
    def a() -> None:
        seen.append(current_execution().id)  # type: ignore[union-attr]

    @researcher.governed(resource=lambda _: "Tool::web_search")
    def b() -> None:
        seen.append(current_execution().id)  # type: ignore[union-attr]

    a()
    b()
    got = [records(gate, i)["decision"]["request"]["resource"]["id"] for i in seen]
    assert got == ["summarize", "web_search"]


def test_invalid_static_resources_and_generators_are_refused_when_decorating(
    gate: Gate, researcher: Agent
) -> None:
    with pytest.raises(UsageError):
        researcher.governed(resource="web_search")
    with pytest.raises(UsageError):
        researcher.governed(resource={"type": "Tool"})
    with pytest.raises(UsageError):
        researcher.governed(resource="Tool::x", interval=0)

    def gen() -> Iterator[int]:
        yield 1

    with pytest.raises(UsageError):
        researcher.governed(resource="Tool::x")(gen)


# -- fail-closed: every error before admission denies, nothing runs --------------------------------


class Opaque:
    """Not JSON."""


@pytest.mark.parametrize(
    "value",
    [Opaque(), {1, 2}, ("a", "b"), b"bytes", float("nan"), {1: "non-string key"}],
    ids=["object", "set", "tuple", "bytes", "nan", "int-key"],
)
def test_non_json_arguments_deny_malformed_and_nothing_runs(
    gate: Gate, researcher: Agent, value: Any
) -> None:
    ran: list[bool] = []

    @researcher.governed(resource="Tool::web_search")
    def web_search(q: Any) -> None:
        ran.append(True)

    with pytest.raises(interlock.Denied) as info:
        web_search(value)
    rec = assert_recorded_deny(gate, info.value, "MALFORMED_REQUEST")
    assert rec["stage"] == "intake"
    assert ran == []


def test_non_json_arguments_deny_an_async_function_too(gate: Gate, researcher: Agent) -> None:
    ran: list[bool] = []

    @researcher.governed(resource="Tool::web_search")
    async def web_search(q: Any) -> None:
        ran.append(True)

    with pytest.raises(interlock.Denied) as info:
        asyncio.run(web_search(Opaque()))
    assert_recorded_deny(gate, info.value, "MALFORMED_REQUEST")
    assert ran == []


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_raising_resource_callable_denies_and_nothing_runs(
    gate: Gate, researcher: Agent, kind: str
) -> None:
    ran: list[bool] = []

    def resource(args: dict[str, Any]) -> Any:
        raise LookupError("no such tool")

    if kind == "sync":

        @researcher.governed(resource=resource)
        def f(name: str) -> None:
            ran.append(True)

        with pytest.raises(interlock.Denied) as info:
            f("x")
    else:

        @researcher.governed(resource=resource)
        async def af(name: str) -> None:
            ran.append(True)

        with pytest.raises(interlock.Denied) as info:
            asyncio.run(af("x"))
    assert_recorded_deny(gate, info.value, "MALFORMED_REQUEST")
    assert isinstance(info.value.__cause__, LookupError)
    assert ran == []


def test_a_resource_callable_returning_garbage_denies(gate: Gate, researcher: Agent) -> None:
    ran: list[bool] = []

    @researcher.governed(resource=lambda a: 42)
    def f() -> None:
        ran.append(True)

    with pytest.raises(interlock.Denied) as info:
        f()
    assert_recorded_deny(gate, info.value, "MALFORMED_REQUEST")
    assert ran == []


def test_arguments_that_do_not_fit_the_signature_deny(gate: Gate, researcher: Agent) -> None:
    ran: list[bool] = []

    @researcher.governed(resource="Tool::web_search")
    def web_search(q: str) -> None:
        ran.append(True)

    with pytest.raises(interlock.Denied) as info:
        web_search("a", "b", "c")  # type: ignore[call-arg]
    assert_recorded_deny(gate, info.value, "MALFORMED_REQUEST")
    assert isinstance(info.value.__cause__, TypeError)
    assert ran == []


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_ledger_failure_denies_and_nothing_runs(
    gate: Gate, researcher: Agent, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    ran: list[bool] = []

    def broken(*a: Any, **kw: Any) -> Any:
        raise LedgerUnavailable("disk full")

    monkeypatch.setattr(gate.ledger, "append", broken)
    if kind == "sync":

        @researcher.governed(resource="Tool::web_search")
        def f() -> None:
            ran.append(True)

        with pytest.raises(interlock.Denied) as info:
            f()
    else:

        @researcher.governed(resource="Tool::web_search")
        async def af() -> None:
            ran.append(True)

        with pytest.raises(interlock.Denied) as info:
            asyncio.run(af())
    assert info.value.reason_code == "LEDGER_UNAVAILABLE"
    assert info.value.decision.ledger_index is None
    assert ran == []


def test_exec_start_not_recorded_denies_and_nothing_runs(
    gate: Gate, researcher: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The allow and its exec.start are one commit: a failing commit leaves neither."""
    ran: list[bool] = []
    real = gate.ledger.append

    def broken(items: Any, **kw: Any) -> Any:
        if any(b'"exec.start"' in it.record for it in items):
            raise LedgerUnavailable("disk full")
        return real(items, **kw)

    monkeypatch.setattr(gate.ledger, "append", broken)

    @researcher.governed(resource="Tool::web_search")
    def f() -> None:
        ran.append(True)

    with pytest.raises(interlock.Denied) as info:
        f()
    assert info.value.reason_code == "LEDGER_UNAVAILABLE"
    assert ran == []
    assert info.value.decision.ledger_index is None
    assert records(gate, info.value.decision.request_id) == {}


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_an_unexpected_gate_error_denies_internal_error(
    gate: Gate, researcher: Agent, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    ran: list[bool] = []

    def broken(*a: Any, **kw: Any) -> Any:
        raise RuntimeError("gate exploded")

    monkeypatch.setattr(gate, "execution", broken)
    if kind == "sync":

        @researcher.governed(resource="Tool::web_search")
        def f() -> None:
            ran.append(True)

        with pytest.raises(interlock.Denied) as info:
            f()
    else:

        @researcher.governed(resource="Tool::web_search")
        async def af() -> None:
            ran.append(True)

        with pytest.raises(interlock.Denied) as info:
            asyncio.run(af())
    assert info.value.reason_code == "INTERNAL_ERROR"
    assert info.value.decision.ledger_index is None  # the gate never saw a request
    assert "gate exploded" not in info.value.detail  # foreign messages may hold inputs
    assert ran == []


def test_a_failing_trace_context_denies(
    gate: Gate, researcher: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[bool] = []

    def broken() -> str:
        raise RuntimeError("otel broke")

    monkeypatch.setattr(governor, "current_traceparent", broken)  # where the engine reads it

    @researcher.governed(resource="Tool::web_search")
    def f() -> None:
        ran.append(True)

    with pytest.raises(interlock.Denied) as info:
        f()
    assert info.value.reason_code == "INTERNAL_ERROR"
    assert ran == []


# -- lineage: nested governed calls get the running execution as parent ----------------------------


def test_nested_governed_calls_are_children_of_the_outer_execution(
    gate: Gate, researcher: Agent
) -> None:
    ids: dict[str, str] = {}

    @researcher.governed(resource="Tool::web_search")
    def web_search(q: str) -> None:
        ids["child"] = current_execution().id  # type: ignore[union-attr]

    @researcher.governed(resource="Tool::summarize")
    def research(topic: str) -> None:
        ids["outer"] = current_execution().id  # type: ignore[union-attr]
        web_search(topic)
        assert current_execution().id == ids["outer"]  # type: ignore[union-attr]

    research("interlock")
    outer, child = records(gate, ids["outer"]), records(gate, ids["child"])
    assert child["decision"]["parent"] == ids["outer"]
    assert child["decision"]["lineage"] == {"status": "running", "depth": 1}
    outer_leaf = gate.ledger.execution(ids["outer"]).leaf_hash.hex()  # type: ignore[union-attr]
    assert child["decision"]["parent_leaf"] == outer_leaf
    assert child["exec.start"]["parent"] == ids["outer"]
    assert outer["decision"]["parent"] is None


def test_nested_async_calls_and_tasks_inherit_the_parent(gate: Gate, researcher: Agent) -> None:
    children: list[str] = []
    outer: list[str] = []

    @researcher.governed(resource="Tool::web_search")
    async def web_search(q: str) -> None:
        children.append(current_execution().id)  # type: ignore[union-attr]

    @researcher.governed(resource="Tool::summarize")
    async def research() -> None:
        outer.append(current_execution().id)  # type: ignore[union-attr]
        await asyncio.gather(web_search("a"), web_search("b"))

    asyncio.run(research())
    assert len(children) == 2
    for child in children:
        assert records(gate, child)["decision"]["parent"] == outer[0]


def test_nested_gate_execution_gets_the_parent_too(
    gate: Gate, researcher: Agent, issue: Any
) -> None:
    ids: dict[str, str] = {}
    token = issue()

    @researcher.governed(resource="Tool::summarize")
    def research() -> None:
        ids["outer"] = current_execution().id  # type: ignore[union-attr]
        with gate.execution(tool_request(token)) as run:
            ids["inner"] = run.id
        with gate.execution({**tool_request(token), "parent": None}) as run:
            ids["explicit_none"] = run.id

    research()
    assert records(gate, ids["inner"])["decision"]["parent"] == ids["outer"]
    assert records(gate, ids["explicit_none"])["decision"]["parent"] is None


def test_a_nested_call_after_the_parent_ended_is_lineage_broken(
    gate: Gate, researcher: Agent
) -> None:
    ran: list[bool] = []
    captured: list[contextvars.Context] = []

    @researcher.governed(resource="Tool::web_search")
    async def web_search() -> None:
        ran.append(True)

    @researcher.governed(resource="Tool::summarize")
    async def research() -> None:
        captured.append(contextvars.copy_context())  # e.g. a task spawned and left running

    async def main() -> None:
        await research()
        # the child runs in the context captured while its parent ran; the parent has ended
        task = asyncio.get_running_loop().create_task(web_search(), context=captured[0])
        with pytest.raises(interlock.Denied) as info:
            await task
        assert_recorded_deny(gate, info.value, "LINEAGE_BROKEN")

    asyncio.run(main())
    assert ran == []


def test_nested_sync_call_inside_a_thread_needs_the_copied_context(
    gate: Gate, researcher: Agent
) -> None:
    ids: dict[str, str] = {}

    @researcher.governed(resource="Tool::web_search")
    def web_search() -> None:
        ids["child"] = current_execution().id  # type: ignore[union-attr]

    @researcher.governed(resource="Tool::summarize")
    async def research() -> None:
        ids["outer"] = current_execution().id  # type: ignore[union-attr]
        await asyncio.to_thread(web_search)  # to_thread copies the context

    asyncio.run(research())
    assert records(gate, ids["child"])["decision"]["parent"] == ids["outer"]


# -- OpenTelemetry trace context -------------------------------------------------------------------


def test_the_current_span_context_is_recorded_as_traceparent(gate: Gate, researcher: Agent) -> None:
    ids: list[str] = []

    @researcher.governed(resource="Tool::web_search")
    def web_search() -> None:
        ids.append(current_execution().id)  # type: ignore[union-attr]

    span = NonRecordingSpan(
        SpanContext(
            trace_id=TRACE_ID,
            span_id=SPAN_ID,
            is_remote=False,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )
    )
    with trace.use_span(span):
        assert sdk.current_traceparent() == TRACEPARENT
        web_search()
    web_search()  # no span: no traceparent
    assert records(gate, ids[0])["decision"]["request"]["traceparent"] == TRACEPARENT
    assert records(gate, ids[1])["decision"]["request"]["traceparent"] is None


# -- delegation ------------------------------------------------------------------------------------


def test_delegate_gives_a_sub_agent_an_attenuated_capability(gate: Gate, researcher: Agent) -> None:
    ran: list[str] = []
    sub = researcher.delegate(
        ["tool.call:Tool::web_search"], timedelta(minutes=5), name="summarizer"
    )
    assert sub.principal == SUMMARIZER
    assert sub.capability != researcher.capability

    @sub.governed(resource="Tool::web_search")
    def web_search() -> None:
        ran.append("web_search")

    # the policy permits read_file for the whole research team: only the token stops it
    @sub.governed(resource="Tool::read_file")
    def read_file() -> None:
        ran.append("read_file")

    web_search()
    with pytest.raises(interlock.Denied) as info:
        read_file()
    assert_recorded_deny(gate, info.value, "CAPABILITY_INSUFFICIENT")
    assert ran == ["web_search"]


def test_delegate_without_a_name_narrows_the_same_identity(gate: Gate, researcher: Agent) -> None:
    """``agent.delegate(rights, ttl)``: same principal, fewer rights, shorter life."""
    ran: list[str] = []
    narrow = researcher.delegate(["tool.call:Tool::web_search"], timedelta(minutes=5))
    assert narrow.principal == researcher.principal
    assert narrow.capability != researcher.capability

    @narrow.governed(resource="Tool::web_search")
    def web_search() -> None:
        ran.append("web_search")

    @narrow.governed(resource="Tool::send_email")
    def send_email() -> None:
        ran.append("send_email")

    web_search()
    with pytest.raises(interlock.Denied) as info:
        send_email()  # the lead may send email; this narrowed token may not
    assert_recorded_deny(gate, info.value, "CAPABILITY_INSUFFICIENT")
    assert ran == ["web_search"]


def test_a_sub_agent_cannot_exceed_its_holder(gate: Gate, researcher: Agent) -> None:
    ran: list[bool] = []
    sub = researcher.delegate("shell.exec:Host::*", 60, name="summarizer")

    @sub.governed(action="shell.exec", resource="Host::localhost")
    def sh(argv: list[str]) -> None:  # a shell.exec without an argv is MALFORMED_REQUEST
        ran.append(True)

    with pytest.raises(interlock.Denied) as info:
        sh(["ls"])
    assert_recorded_deny(gate, info.value, "CAPABILITY_INSUFFICIENT")
    assert ran == []


def test_sub_agent_calls_nested_in_the_holders_call_are_its_children(
    gate: Gate, researcher: Agent
) -> None:
    ids: dict[str, str] = {}
    sub = researcher.delegate(
        ["tool.call:Tool::web_search"], timedelta(minutes=5), name="summarizer"
    )

    @sub.governed(resource="Tool::web_search")
    def web_search() -> None:
        ids["child"] = current_execution().id  # type: ignore[union-attr]
        assert current_agent() is sub

    @researcher.governed(resource="Tool::summarize")
    def research() -> None:
        ids["outer"] = current_execution().id  # type: ignore[union-attr]
        web_search()

    research()
    child = records(gate, ids["child"])["decision"]
    assert child["parent"] == ids["outer"]
    assert child["request"]["principal"] == SUMMARIZER


def test_a_parent_bound_delegation_works_only_under_that_parent(
    gate: Gate, researcher: Agent
) -> None:
    ran: list[str] = []
    subs: list[Agent] = []

    @researcher.governed(resource="Tool::summarize")
    def research() -> None:
        run = current_execution()
        assert run is not None
        sub = researcher.delegate(
            "tool.call:Tool::web_search", 60, name="summarizer", parent=run.id
        )
        subs.append(sub)

        @sub.governed(resource="Tool::web_search")
        def web_search() -> None:
            ran.append("child")

        web_search()

    research()
    assert ran == ["child"]

    @subs[0].governed(resource="Tool::web_search")
    def outside() -> None:
        ran.append("outside")

    with pytest.raises(interlock.Denied) as info:
        outside()  # no parent: the token's parent check fails
    assert_recorded_deny(gate, info.value, "CAPABILITY_INSUFFICIENT")
    assert ran == ["child"]


def test_revoking_the_holder_revokes_the_delegation(gate: Gate, researcher: Agent) -> None:
    ran: list[bool] = []
    sub = researcher.delegate("tool.call:Tool::web_search", 60, name="summarizer")

    @sub.governed(resource="Tool::web_search")
    def web_search() -> None:
        ran.append(True)

    gate.revoke(revocation_ids(researcher.capability))
    with pytest.raises(interlock.Denied) as info:
        web_search()
    assert_recorded_deny(gate, info.value, "CAPABILITY_REVOKED")
    assert ran == []


def test_delegate_refuses_names_outside_the_holders_path(researcher: Agent) -> None:
    for name in ("../other", "", "spiffe://acme.test/agent/other", RESEARCHER):
        with pytest.raises(UsageError):
            researcher.delegate("tool.call:Tool::web_search", 60, name=name)
    with pytest.raises(UsageError):
        researcher.delegate("tool.call:Tool::web_search", 0, name="summarizer")
    with pytest.raises(interlock.Error):  # CapabilityError: not a right
        researcher.delegate("web_search", 60, name="summarizer")


# -- continuous verification -----------------------------------------------------------------------


def test_an_async_call_is_stopped_when_its_capability_is_revoked(gate: Gate, issue: Any) -> None:
    token = issue()
    agent = gate.agent(RESEARCHER, token)
    finished: list[bool] = []

    @agent.governed(resource="Tool::web_search", interval=0.1)
    async def slow() -> None:
        await asyncio.to_thread(gate.revoke, revocation_ids(token))
        await asyncio.sleep(5)
        finished.append(True)

    with pytest.raises(interlock.Revoked) as info:
        asyncio.run(slow())
    assert info.value.reason_code == "CAPABILITY_REVOKED"
    exec_id = info.value.execution_id or ""
    assert records(gate, exec_id)["exec.terminated"]["reason"]["code"] == "CAPABILITY_REVOKED"
    assert finished == []


# -- cancellation during admission ---------------------------------------------------------------


def _exec_records(gate: Gate) -> list[dict[str, Any]]:
    """The decision and execution records on the ledger, in order."""
    recs = [json.loads(d) for _i, _h, d in gate.ledger.iter_entries(0)]
    return [r for r in recs if r["type"] == "decision" or r["type"].startswith("exec.")]


@pytest.mark.parametrize("form", ["governed", "execution"])
def test_a_task_cancelled_during_admission_ends_its_execution_as_cancelled(
    gate: Gate, researcher: Agent, monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    """The admission runs in a thread that cannot be interrupted: a task cancelled while it
    runs must not leave an execution started (exec.start, a watch thread) that nobody ends."""
    admitted = threading.Event()
    real_admit = gate.admit

    def slow_admit(*a: Any, **kw: Any) -> Any:
        out = real_admit(*a, **kw)  # allow + exec.start committed
        admitted.set()
        time.sleep(0.5)  # the task is cancelled while the admission is still on its way back
        return out

    monkeypatch.setattr(gate, "admit", slow_admit)
    ran: list[bool] = []

    @researcher.governed(resource="Tool::web_search", interval=0.05)
    async def web_search() -> None:
        ran.append(True)

    async def with_execution() -> None:
        request = {
            "principal": RESEARCHER,
            "action": "tool.call",
            "resource": {"type": "Tool", "id": "web_search"},
            "args": {},
            "capability": researcher.capability,
        }
        async with gate.execution(request, interval=0.05):
            ran.append(True)

    async def main() -> None:
        task = asyncio.create_task(web_search() if form == "governed" else with_execution())
        assert await asyncio.to_thread(admitted.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert current_execution() is None

    asyncio.run(main())
    assert ran == []
    (start,) = [r for r in _exec_records(gate) if r["type"] == "exec.start"]
    exec_id = start["id"]
    types_in_order = [r["type"] for r in _exec_records(gate) if r.get("id") == exec_id]
    assert types_in_order == ["decision", "exec.start", "exec.end"]
    assert records(gate, exec_id)["exec.end"]["outcome"] == "cancelled"
    assert gate.ledger.execution(exec_id).status == "ended"  # type: ignore[union-attr]
    assert not [t for t in threading.enumerate() if t.name == f"interlock-watch-{exec_id}"]


def test_a_task_cancelled_during_a_denied_admission_records_only_the_denial(
    gate: Gate, issue: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    admitted = threading.Event()
    real_admit = gate.admit

    def slow_admit(*a: Any, **kw: Any) -> Any:
        out = real_admit(*a, **kw)
        admitted.set()
        time.sleep(0.5)
        return out

    monkeypatch.setattr(gate, "admit", slow_admit)
    agent = gate.agent(RESEARCHER, issue(RESEARCHER, "tool.call:Tool::summarize"))

    @agent.governed(resource="Tool::web_search")
    async def web_search() -> None:
        raise AssertionError("must not run")

    async def main() -> None:
        task = asyncio.create_task(web_search())
        assert await asyncio.to_thread(admitted.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert [r["type"] for r in _exec_records(gate)] == ["decision"]
    assert _exec_records(gate)[0]["effect"] == "deny"


# -- what the model reads -------------------------------------------------------------------------


def test_denial_text_hides_the_same_details_as_the_mcp_proxy() -> None:
    """One rule for every adapter: the detail of CAPABILITY_INVALID, IDENTITY_UNVERIFIED and
    INTERNAL_ERROR never reaches the model — not from the SDK adapters, not from the MCP
    proxy."""
    from interlock.adapters import mcp_proxy
    from interlock.core.model import Decision, Effect, Reason, ReasonCode

    assert {"CAPABILITY_INVALID", "IDENTITY_UNVERIFIED", "INTERNAL_ERROR"} == sdk.OPAQUE_CODES
    for code in ReasonCode:
        decision = Decision(
            request_id="r-1",
            effect=Effect.DENY,
            reasons=(Reason(code=code, detail="the-secret-detail"),),
            snapshot="s",
            decision_hash="ab" * 32,
        )
        sdk_text = sdk.denial_text(interlock.Denied(decision))
        stopped = sdk.denial_text(interlock.Revoked(code.value, "the-secret-detail"))
        mcp_text = mcp_proxy.denial_text(decision)
        shown = code.value not in sdk.OPAQUE_CODES
        assert sdk_text.startswith(f"Interlock denied this call: {code.value}")
        assert ("the-secret-detail" in sdk_text) is shown, code
        assert ("the-secret-detail" in stopped) is shown, code
        assert ("the-secret-detail" in mcp_text) is shown, code
        assert ("ab" * 32) in sdk_text and ("ab" * 32) in mcp_text


def test_an_opaque_sdk_denial_carries_no_evidence(
    gate: Gate, researcher: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    from interlock.errors import ConfigError

    ran: list[bool] = []

    def broken(*a: Any, **kw: Any) -> Any:
        raise ConfigError("home unreadable", path="/srv/secret/home")

    monkeypatch.setattr(gate, "execution", broken)

    @researcher.governed(resource="Tool::web_search")
    def f() -> None:
        ran.append(True)

    with pytest.raises(interlock.Denied) as info:
        f()
    assert info.value.reason_code == "INTERNAL_ERROR"
    assert "/srv/secret" not in info.value.detail
    assert info.value.detail == "ConfigError while admitting the call: it was not made"
    text = sdk.denial_text(info.value)
    assert text == (
        f"Interlock denied this call: INTERNAL_ERROR (decision {info.value.decision.decision_hash})"
    )
    assert ran == []
