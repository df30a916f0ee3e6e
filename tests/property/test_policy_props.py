"""Partitioned evaluation answers exactly as cedarpy on the whole, unpartitioned policy text."""

from __future__ import annotations

import json
from typing import Any

import cedarpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interlock.core.model import ReasonCode
from interlock.policy.engine import PolicyEngine, unsigned_engine

SCHEMA = """
entity Team;
entity Agent in [Team];
entity Tool;
entity File;
type Ctx = { args: { n: Long, s?: String }, request: {}, time: Long };
action "grp";
action "a" in ["grp"] appliesTo { principal: [Agent], resource: [Tool, File], context: Ctx };
action "b" in ["grp"] appliesTo { principal: [Agent], resource: [Tool, File], context: Ctx };
action "c" appliesTo { principal: [Agent], resource: [Tool, File], context: Ctx };
"""
ENTITIES = json.dumps(
    [
        {
            "uid": {"type": "Agent", "id": "p0"},
            "attrs": {},
            "parents": [{"type": "Team", "id": "t"}],
        },
        {"uid": {"type": "Agent", "id": "p1"}, "attrs": {}, "parents": []},
        {"uid": {"type": "Team", "id": "t"}, "attrs": {}, "parents": []},
    ]
)
_SCHEMA = cedarpy.Schema.from_str(SCHEMA)
_ENTITIES = cedarpy.Entities.from_json_str(ENTITIES, _SCHEMA)

PRINCIPALS = ["principal", 'principal == Agent::"p0"', 'principal in Team::"t"']
ACTIONS = [
    "action",
    'action == Action::"a"',
    'action == Action::"c"',
    'action in [Action::"grp"]',
    'action in [Action::"b", Action::"c"]',
]
RESOURCES = [
    "resource",
    'resource == Tool::"r0"',
    'resource == Tool::"r1"',
    'resource == File::"r0"',
    "resource is Tool",
    'resource is File in File::"r1"',
    'resource in Tool::"r1"',
]
CONDITIONS = [
    "",
    " when { context.args.n > 3 }",  # errors when n is missing or not a Long
    ' when { context.args has s && context.args.s == "x" }',
    " unless { context.time > 50 }",
    ' when { resource == Tool::"r1" }',
]

policy = st.tuples(
    st.sampled_from(["permit", "forbid"]),
    st.sampled_from(PRINCIPALS),
    st.sampled_from(ACTIONS),
    st.sampled_from(RESOURCES),
    st.sampled_from(CONDITIONS),
)
request = st.fixed_dictionaries(
    {
        "principal": st.sampled_from(["p0", "p1", "p2"]),
        "action": st.sampled_from(["a", "b", "c", "grp", "zzz"]),
        "resource_type": st.sampled_from(["Tool", "File"]),
        "resource_id": st.sampled_from(["r0", "r1", "r2"]),
        "args": st.fixed_dictionaries(
            {},
            optional={
                "n": st.one_of(st.integers(0, 6), st.just("str")),
                "s": st.sampled_from(["x", "y"]),
            },
        ),
        "context": st.just({}),
        "now": st.integers(0, 100),
    }
)


def render(policies: list[tuple[str, str, str, str, str]]) -> str:
    return "\n".join(
        f'@id("p{i}")\n{effect}({p}, {a}, {r}){cond};'
        for i, (effect, p, a, r, cond) in enumerate(policies)
    )


def build(text: str) -> PolicyEngine:
    return unsigned_engine(
        {
            "schema.cedarschema": SCHEMA.encode(),
            "entities.json": ENTITIES.encode(),
            "policies.cedar": text.encode(),
        }
    )


def oracle(text: str, req: dict[str, Any]) -> tuple[bool, ReasonCode | None, frozenset[str]]:
    result = cedarpy.is_authorized(
        {
            "principal": {"type": "Agent", "id": req["principal"]},
            "action": {"type": "Action", "id": req["action"]},
            "resource": {"type": req["resource_type"], "id": req["resource_id"]},
            "context": {"args": req["args"], "request": req["context"], "time": req["now"]},
        },
        text,
        _ENTITIES,
    )
    diagnostics = result.diagnostics
    ids = frozenset(diagnostics.id_annotations_by_reason[r] for r in diagnostics.reasons)
    if diagnostics.errors:
        return False, ReasonCode.POLICY_ERROR, frozenset()
    if result.decision is cedarpy.Decision.Allow:
        return True, None, ids
    if result.decision is cedarpy.Decision.Deny:
        return False, ReasonCode.POLICY_FORBID if ids else ReasonCode.POLICY_NO_PERMIT, ids
    return False, ReasonCode.POLICY_ERROR, frozenset()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    policies=st.lists(policy, min_size=0, max_size=12),
    requests=st.lists(request, min_size=1, max_size=15),
)
def test_partitioned_engine_matches_unpartitioned_cedar(
    policies: list[tuple[str, str, str, str, str]], requests: list[dict[str, Any]]
) -> None:
    text = render(policies)
    engine = build(text)
    for req in requests:
        result = engine.evaluate(**req)
        permitted, code, ids = oracle(text, req)
        assert (result.permitted, result.code) == (permitted, code)
        if code is not ReasonCode.POLICY_ERROR:
            assert frozenset(result.policies) == ids
        # deterministic: same inputs, same value
        assert engine.evaluate(**req) == result
