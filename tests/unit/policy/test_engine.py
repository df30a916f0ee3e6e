"""Evaluation: reason codes, fail-closed errors, obligations, and partitioning equivalence."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import cedarpy
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from interlock.core.model import ReasonCode
from interlock.policy import (
    DEFAULT_BUNDLE,
    PolicyEngine,
    _cedar,
    load_bundle,
    load_unsigned,
    sign_bundle,
)
from interlock.policy.engine import _Partitioner, unsigned_engine

from .conftest import ENTITIES, LEAD, SCHEMA, SUMMARIZER, write_bundle


def call(engine: PolicyEngine, **overrides: Any) -> Any:
    request: dict[str, Any] = {
        "principal": "alice",
        "action": "tool.call",
        "resource_type": "Tool",
        "resource_id": "t1",
        "args": {"x": 1},
        "context": {},
        "now": 1_700_000_000,
    }
    request.update(overrides)
    return engine.evaluate(**request)


def engine_for(tmp_path: Path, policies: str, **kwargs: Any) -> PolicyEngine:
    return load_unsigned(write_bundle(tmp_path / "b", policies, **kwargs))


# --- the default bundle, signed ------------------------------------------------------------


@pytest.fixture
def default_engine(default_dir: Path, key: Ed25519PrivateKey) -> PolicyEngine:
    sign_bundle(default_dir, key)
    return PolicyEngine.from_bundle(load_bundle(default_dir, [key.public_key()]))


def test_permit(default_engine: PolicyEngine) -> None:
    result = call(default_engine, principal=SUMMARIZER, resource_id="summarize", args={})
    assert result.permitted
    assert result.code is None
    assert result.policies == ("research-tools",)
    assert result.obligations == ()


def test_forbid_overrides_broad_permit(default_engine: PolicyEngine) -> None:
    result = call(default_engine, principal=LEAD, resource_id="delete_database", args={})
    assert not result.permitted
    assert result.code is ReasonCode.POLICY_FORBID
    assert result.policies == ("no-delete-database",)
    assert "no-delete-database" in result.detail


def test_no_permit(default_engine: PolicyEngine) -> None:
    result = call(default_engine, principal=SUMMARIZER, resource_id="send_email", args={})
    assert not result.permitted
    assert result.code is ReasonCode.POLICY_NO_PERMIT
    assert result.policies == ()


def test_shell_forbid_and_error(default_engine: PolicyEngine) -> None:
    base = {"principal": LEAD, "action": "shell.exec", "resource_type": "Host"}
    ok = call(default_engine, **base, resource_id="localhost", args={"argv": ["ls"]})
    assert ok.permitted
    rm = call(default_engine, **base, resource_id="localhost", args={"argv": ["rm", "-rf", "/"]})
    assert rm.code is ReasonCode.POLICY_FORBID
    assert rm.policies == ("no-recursive-delete",)
    # intake refuses it (MALFORMED_REQUEST); the engine alone, as `policy test` runs it, cannot
    # derive the canonical command and denies
    as_string = call(default_engine, **base, resource_id="localhost", args={"argv": "rm -rf /"})
    assert as_string.code is ReasonCode.POLICY_ERROR
    assert "argv" in as_string.detail


# --- fail-closed ---------------------------------------------------------------------------

ALLOW_ALL_AND_ERRORING_FORBID = """
@id("allow-all") permit(principal, action, resource);
@id("x-too-big") forbid(principal, action == Action::"tool.call", resource)
  when { context.args.x > 5 };
"""


@pytest.mark.parametrize(
    "args",
    [{"x": "seven"}, {}, {"x": {"nested": 1}}, {"x": [1]}],
    ids=["string", "missing", "record", "set"],
)
def test_erroring_forbid_denies_even_when_cedar_allows(
    tmp_path: Path, args: dict[str, Any]
) -> None:
    engine = engine_for(tmp_path, ALLOW_ALL_AND_ERRORING_FORBID)

    # The premise: Cedar itself skips the erroring forbid and says Allow.
    cedar = cedarpy.is_authorized(
        {
            "principal": {"type": "Agent", "id": "alice"},
            "action": {"type": "Action", "id": "tool.call"},
            "resource": {"type": "Tool", "id": "t1"},
            "context": {"args": args, "request": {}, "time": 0},
        },
        ALLOW_ALL_AND_ERRORING_FORBID,
        json.dumps(ENTITIES),
    )
    assert cedar.decision is cedarpy.Decision.Allow
    assert cedar.diagnostics.errors

    result = call(engine, args=args)
    assert not result.permitted
    assert result.code is ReasonCode.POLICY_ERROR
    assert result.policies == ("x-too-big",)
    assert result.obligations == ()
    # the same forbid decides normally when the attribute is well-typed
    assert call(engine, args={"x": 9}).code is ReasonCode.POLICY_FORBID
    assert call(engine, args={"x": 1}).permitted


@pytest.mark.parametrize(
    "args",
    [
        {"x": None},
        {"x": 1.5},
        {"x": 2**70},
        {"x": float("nan")},
        {"x": object()},
        {"x": 1, "e": {"__entity": {"type": "Team", "id": "t"}}},
        {"x": 1, "e": {"__extn": {"fn": "ip", "arg": "127.0.0.1"}}},
    ],
    ids=["null", "float", "bigint", "nan", "object", "entity-escape", "extn-escape"],
)
def test_values_cedar_cannot_take_deny(tmp_path: Path, args: dict[str, Any]) -> None:
    engine = engine_for(tmp_path, '@id("all") permit(principal, action, resource);')
    result = call(engine, args=args)
    assert result.code is ReasonCode.POLICY_ERROR
    assert not result.permitted


def test_reserved_key_in_request_context_denies(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, '@id("all") permit(principal, action, resource);')
    assert call(engine, context={"k": {"__expr": "1"}}).code is ReasonCode.POLICY_ERROR
    # a string value that merely mentions the key is fine
    assert call(engine, args={"x": 1, "s": '"__entity"'}).permitted


def test_bad_resource_type_denies(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, '@id("all") permit(principal, action, resource);')
    result = call(engine, resource_type="not a type!")
    assert result.code is ReasonCode.POLICY_ERROR


def test_now_must_be_int(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, '@id("all") permit(principal, action, resource);')
    with pytest.raises(TypeError):
        call(engine, now="2024-01-01T00:00:00Z")
    with pytest.raises(TypeError):
        call(engine, now=True)


def test_any_principal_string_works(tmp_path: Path) -> None:
    weird = 'spiffe://acme.test/agent/"quoted"\n::newline'
    engine = engine_for(
        tmp_path,
        '@id("all") permit(principal, action, resource);',
        entities=[*ENTITIES, {"uid": {"type": "Agent", "id": weird}, "attrs": {}, "parents": []}],
    )
    assert call(engine, principal=weird, resource_id=weird).permitted


# --- ids, obligations, time ----------------------------------------------------------------


def test_obligations_from_determining_permits(tmp_path: Path) -> None:
    engine = engine_for(
        tmp_path,
        """
        @id("a") @obligation("approval") permit(principal, action, resource == Tool::"t1");
        @id("b") @obligation("audit") permit(principal in Team::"t", action, resource);
        @id("c") permit(principal, action, resource == Tool::"t2");
        @id("f") @obligation("ignored") forbid(principal, action, resource == Tool::"t3");
        """,
    )
    both = call(engine)
    assert both.permitted
    assert both.policies == ("a", "b")
    assert both.obligations == ("approval", "audit")
    assert call(engine, principal="bob").obligations == ("approval",)
    assert call(engine, principal="bob", resource_id="t2").obligations == ()
    denied = call(engine, resource_id="t3")
    assert denied.code is ReasonCode.POLICY_FORBID
    assert denied.obligations == ()


def test_generated_policy_ids(tmp_path: Path) -> None:
    engine = engine_for(
        tmp_path,
        """
        permit(principal, action, resource == Tool::"t1");
        @id("named") permit(principal, action, resource == Tool::"t2");
        forbid(principal, action, resource == Tool::"t3");
        """,
    )
    assert engine.policy_ids == ("policies.cedar#0", "named", "policies.cedar#2")
    assert call(engine).policies == ("policies.cedar#0",)
    assert call(engine, resource_id="t3").policies == ("policies.cedar#2",)


def test_time_in_context(tmp_path: Path) -> None:
    engine = engine_for(
        tmp_path, '@id("until") permit(principal, action, resource) when { context.time < 100 };'
    )
    assert call(engine, now=99).permitted
    assert call(engine, now=100).code is ReasonCode.POLICY_NO_PERMIT


def test_request_context(tmp_path: Path) -> None:
    schema = SCHEMA.replace("request: {}", "request: { ticket?: String }")
    engine = engine_for(
        tmp_path,
        '@id("t") permit(principal, action, resource) '
        'when { context.request has ticket && context.request.ticket == "T-1" };',
        schema=schema,
    )
    assert call(engine, context={"ticket": "T-1"}).permitted
    assert call(engine, context={"ticket": "T-2"}).code is ReasonCode.POLICY_NO_PERMIT


def test_action_groups_and_unknown_actions(tmp_path: Path) -> None:
    engine = engine_for(
        tmp_path,
        """
        @id("reads") permit(principal, action in [Action::"read"], resource);
        @id("any-t9") permit(principal, action, resource == Tool::"t9");
        @id("no-list-secret")
        forbid(principal, action == Action::"file.list", resource == File::"secret");
        """,
    )
    assert call(engine, action="file.read", resource_type="File").policies == ("reads",)
    assert call(engine, action="file.list", resource_type="File").permitted
    secret = call(engine, action="file.list", resource_type="File", resource_id="secret")
    assert secret.code is ReasonCode.POLICY_FORBID
    assert call(engine, action="read", resource_type="File").permitted
    assert call(engine, action="tool.call").code is ReasonCode.POLICY_NO_PERMIT
    # an action the schema does not know only meets policies with no action constraint
    assert call(engine, action="k8s.admission").code is ReasonCode.POLICY_NO_PERMIT
    assert call(engine, action="k8s.admission", resource_id="t9").policies == ("any-t9",)


def test_deterministic(default_engine: PolicyEngine) -> None:
    first = call(default_engine, principal=LEAD, resource_id="web_search", args={})
    assert first.policies == ("research-tools", "lead-any-tool")
    for _ in range(20):
        assert call(default_engine, principal=LEAD, resource_id="web_search", args={}) == first


# --- partitioning ---------------------------------------------------------------------------

PARTITION_POLICIES = """
@id("p-any") permit(principal in Team::"t", action, resource == Tool::"t1");
@id("p-read") permit(principal, action in [Action::"read"], resource is File);
@id("p-list") permit(principal == Agent::"bob", action == Action::"file.list", resource);
@id("p-call-t2") permit(principal, action == Action::"tool.call", resource == Tool::"t2")
  when { context.args.x > 2 };
@id("p-call-in")
permit(principal, action in [Action::"tool.call", Action::"file.read"], resource == File::"f1");
@id("f-read-f2") forbid(principal, action == Action::"file.read", resource == File::"f2");
@id("f-big") forbid(principal, action, resource) when { context.args.x > 100 };
@id("f-s") forbid(principal, action == Action::"tool.call", resource is Tool)
  when { context.args has s && context.args.s == "stop" };
@id("f-t3") forbid(principal in Team::"t", action, resource == Tool::"t3");
@id("p-t3") permit(principal, action, resource == Tool::"t3");
"""


def oracle(policies: str, request: dict[str, Any]) -> tuple[bool, ReasonCode | None, set[str]]:
    """cedarpy on the whole, unpartitioned policy text, mapped with the documented rules."""
    schema = cedarpy.Schema.from_str(SCHEMA)
    entities = cedarpy.Entities.from_json_str(json.dumps(ENTITIES), schema)
    result = cedarpy.is_authorized(
        {
            "principal": {"type": "Agent", "id": request["principal"]},
            "action": {"type": "Action", "id": request["action"]},
            "resource": {"type": request["resource_type"], "id": request["resource_id"]},
            "context": {"args": request["args"], "request": {}, "time": request["now"]},
        },
        policies,
        entities,
    )
    ids = {result.diagnostics.id_annotations_by_reason[r] for r in result.diagnostics.reasons}
    if result.diagnostics.errors:
        return False, ReasonCode.POLICY_ERROR, set()
    if result.decision is cedarpy.Decision.Allow:
        return True, None, ids
    if result.decision is cedarpy.Decision.Deny:
        return False, (ReasonCode.POLICY_FORBID if ids else ReasonCode.POLICY_NO_PERMIT), ids
    return False, ReasonCode.POLICY_ERROR, set()


def all_requests() -> list[dict[str, Any]]:
    return [
        {
            "principal": principal,
            "action": action,
            "resource_type": rtype,
            "resource_id": rid,
            "args": args,
            "context": {},
            "now": 0,
        }
        for principal, action, (rtype, rid), args in itertools.product(
            ["alice", "bob", "carol"],
            ["tool.call", "file.read", "file.list", "read", "unknown.action"],
            [("Tool", "t1"), ("Tool", "t2"), ("Tool", "t3"), ("File", "f1"), ("File", "f2")],
            [{"x": 1}, {"x": 3}, {"x": 101}, {"x": 3, "s": "stop"}, {"x": "bad"}],
        )
    ]


def test_partitioned_matches_unpartitioned(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, PARTITION_POLICIES)
    assert engine.partition_count > 1
    seen_codes = set()
    for request in all_requests():
        result = engine.evaluate(**request)
        permitted, code, ids = oracle(PARTITION_POLICIES, request)
        assert (result.permitted, result.code) == (permitted, code), request
        if code is not ReasonCode.POLICY_ERROR:
            assert set(result.policies) == ids, request
        seen_codes.add(result.code)
    assert seen_codes == {
        None,
        ReasonCode.POLICY_FORBID,
        ReasonCode.POLICY_NO_PERMIT,
        ReasonCode.POLICY_ERROR,
    }


def test_partitioning_over_budget_still_correct(tmp_path: Path) -> None:
    """With no budget for resource splits, each action gets one set: same answers."""
    compiled = _cedar.compile_files(
        {p.name: p.read_bytes() for p in write_bundle(tmp_path / "b", PARTITION_POLICIES).iterdir()}
    )
    unsplit = _Partitioner(budget=0)
    index = unsplit.index(list(compiled.policies))
    assert index.by_uid == {}
    assert index.by_type == {}
    split = _Partitioner(budget=10_000).index(list(compiled.policies))
    assert split.by_uid
    assert split.by_type


def test_unsigned_engine_from_default_files() -> None:
    files = {
        p.relative_to(DEFAULT_BUNDLE).as_posix(): p.read_bytes()
        for p in DEFAULT_BUNDLE.rglob("*")
        if p.is_file()
    }
    engine = unsigned_engine(files)
    assert "no-delete-database" in engine.policy_ids


def test_context_free_answers_are_memoised_and_equal_to_cedars(tmp_path: Path) -> None:
    """Issue 14's memo: a set no policy of which reads ``context`` answers from the memo on a
    repeat, and the memo's answers are exactly a fresh engine's (Cedar asked each time)."""
    policies = (
        '@id("p") permit(principal == Agent::"alice", action, resource == Tool::"t1");\n'
        '@id("f") forbid(principal, action, resource == Tool::"t2");\n'
        '@id("e") permit(principal == Agent::"bob", action, resource)'
        " when { 9223372036854775807 + 1 > 0 };\n"
    )
    engine = engine_for(tmp_path / "a", policies)
    asks = [
        {"principal": p, "resource_id": r, "args": {"x": i}}
        for i in range(3)
        for p in ("alice", "bob", "carol")
        for r in ("t1", "t2", "t3")
    ]
    first = [call(engine, **a) for a in asks]
    assert engine._memo, "a context-free set was not memoised"
    again = [call(engine, **a) for a in asks]
    fresh = [call(engine_for(tmp_path / f"f{i}", policies), **a) for i, a in enumerate(asks)]
    assert first == again == fresh
    codes = {(a["principal"], a["resource_id"]): r.code for a, r in zip(asks, again, strict=True)}
    assert codes[("alice", "t1")] is None
    assert codes[("alice", "t2")] is ReasonCode.POLICY_FORBID
    assert codes[("bob", "t3")] is ReasonCode.POLICY_ERROR  # an error is remembered as one
    assert codes[("carol", "t3")] is ReasonCode.POLICY_NO_PERMIT


def test_values_cedar_cannot_take_deny_even_after_a_memoised_allow(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, '@id("all") permit(principal, action, resource);')
    assert call(engine).permitted
    assert call(engine, args={"x": 2**63}).code is ReasonCode.POLICY_ERROR
    assert call(engine, args={"x": {"__entity": {"type": "T", "id": "i"}}}).code is (
        ReasonCode.POLICY_ERROR
    )
