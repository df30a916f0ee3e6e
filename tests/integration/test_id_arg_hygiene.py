"""Resource-id and argument hygiene through a real gate and the HTTP API (issue 11): an id
outside the grammar, a case or slash variant of an id the policy names, or arguments that do
not fit the schema's declared types are denied MALFORMED_REQUEST, recorded, and nothing is
allowed; replay reproduces the pipeline denials."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from interlock.gate import Gate
from interlock.replay import replay
from interlock.trust import keys
from tests.conftest import RESEARCHER, tool_request
from tests.integration.test_server import Api, serving

# ids a forbid on Tool::"delete_database" must not be sidestepped with (the lead researcher
# may call any *other* tool, so each of these was an allow before)
BAD_SPELLINGS = {
    "zero-width space": "delete\u200b_database",
    "zero-width joiner": "delete_database\u200d",
    "BOM": "\ufeffdelete_database",
    "soft hyphen": "delete\u00ad_database",
    "bidi override": "\u202edelete_database",
    "bidi isolate": "\u2066delete_database\u2069",
    "LRM": "delete_database\u200e",
    "NBSP leading": "\u00a0delete_database",
    "trailing space": "delete_database ",
    "trailing tab": "delete_database\t",
    "full-width": "\uff44elete_database",
    "non-NFC": "delete_database\u0301",
    "dot segment": "./delete_database",
    "dot dot segment": "x/../delete_database",
}
# grammatical ids that differ from the named one only by case or slashes: refused later, by
# the pipeline, against the bundle's named ids
VARIANTS = {
    "upper case": "DELETE_DATABASE",
    "mixed case": "Delete_Database",
    "trailing slash": "delete_database/",
}


def _record(gate: Gate, index: int | None) -> dict[str, Any]:
    assert index is not None, "the deny must be recorded"
    rec: dict[str, Any] = json.loads(gate.ledger.entry(index))
    return rec


@pytest.mark.parametrize("name", sorted(BAD_SPELLINGS))
def test_an_id_outside_the_grammar_is_denied_at_intake(gate: Gate, issue: Any, name: str) -> None:
    d = gate.decide(tool_request(issue(), tool=BAD_SPELLINGS[name]))
    assert not d.allowed
    assert d.codes == ("MALFORMED_REQUEST",)
    assert "resource.id" in d.reasons[0].detail
    rec = _record(gate, d.ledger_index)
    assert rec["effect"] == "deny" and rec["stage"] == "intake"
    assert rec["reasons"][0]["code"] == "MALFORMED_REQUEST"


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_a_variant_of_a_named_id_is_denied_by_the_pipeline(
    gate: Gate, issue: Any, name: str
) -> None:
    d = gate.decide(tool_request(issue(), tool=VARIANTS[name]))
    assert not d.allowed
    assert d.codes == ("MALFORMED_REQUEST",)
    assert 'Tool::"delete_database"' in d.reasons[0].detail
    assert _record(gate, d.ledger_index)["stage"] == "pipeline"


def test_the_named_id_itself_and_unrelated_ids_are_decided_by_policy(
    gate: Gate, issue: Any
) -> None:
    token = issue()
    assert gate.decide(tool_request(token, tool="delete_database")).codes == ("POLICY_FORBID",)
    for tool in ("send_email", "Send_Email", "données/résumé", "a//b"):
        d = gate.decide(tool_request(token, tool=tool))
        assert d.allowed, (tool, d.reasons)


def test_args_of_the_wrong_declared_type_are_denied_before_cedar(gate: Gate, issue: Any) -> None:
    shell = issue(RESEARCHER, "shell.exec:Host::*")
    tool = issue()

    def shell_request(args: dict[str, Any]) -> dict[str, Any]:
        return {
            "principal": RESEARCHER,
            "action": "shell.exec",
            "resource": {"type": "Host", "id": "localhost"},
            "args": args,
            "capability": shell,
        }

    cases = [  # (request, what the reason says, the stage that refused it)
        # intake reads a shell.exec argv before the schema check does, and says so its own way
        (
            shell_request({"argv": [["rm"], ["-rf", "/tmp/x"]]}),
            "args.argv[0] is not a string",
            "intake",
        ),
        (
            shell_request({"argv": "rm -rf /tmp/x"}),
            "'args.argv' must be a non-empty list",
            "intake",
        ),
        (shell_request({"argv": ["ls"], "cwd": 7}), "args.cwd: expected String", "pipeline"),
        (tool_request(tool, args={"query": ["a"]}), "args.query: expected String", "pipeline"),
        (tool_request(tool, args={"path": {"p": "/"}}), "args.path: expected String", "pipeline"),
    ]
    for request, expected, stage in cases:
        d = gate.decide(request)
        assert not d.allowed
        assert d.codes == ("MALFORMED_REQUEST",), d.reasons
        assert expected in d.reasons[0].detail
        rec = _record(gate, d.ledger_index)
        assert rec["stage"] == stage and rec["reasons"][0]["code"] == "MALFORMED_REQUEST"
    # well-typed and undeclared arguments are decided by policy as before
    assert gate.decide(shell_request({"argv": ["ls", "-l"], "cwd": "/tmp"})).allowed
    assert gate.decide(tool_request(tool, args={"query": "q", "undeclared": [[1], {}]})).allowed
    assert gate.decide(tool_request(tool, args={"query": "q", "score": 0.5})).allowed
    rep = replay(
        gate.ledger,
        gate.home.trusted_policy_keys(),
        node_public=keys.public_raw(gate.home.private_key("node")),
    )
    assert rep.ok and rep.mismatches == [], rep.to_json()


def test_a_case_variant_is_denied_through_the_sdk_and_does_not_run(gate: Gate, issue: Any) -> None:
    import interlock

    agent = gate.agent(RESEARCHER, issue())
    ran: list[bool] = []

    @agent.governed(resource="Tool::Delete_Database")
    def drop() -> None:
        ran.append(True)

    with pytest.raises(interlock.Denied) as info:
        drop()
    assert info.value.reason_code == "MALFORMED_REQUEST"
    assert ran == []


def test_http_refuses_bad_ids_with_422_and_bad_args_with_a_recorded_deny(
    home: Path, issue: Any
) -> None:
    with serving(home) as api:
        _http_checks(api, issue())


def _http_checks(api: Api, token: str) -> None:
    r = api.decide(tool_request(token, tool="delete\u200b_database"))
    assert r.status_code == 422, r.text
    d = r.json()["decision"]
    assert d["effect"] == "deny" and d["reasons"][0]["code"] == "MALFORMED_REQUEST"
    assert api.record(d["ledger_index"])["stage"] == "intake"

    r = api.decide(tool_request(token, tool="Delete_Database"))
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["effect"] == "deny" and d["reasons"][0]["code"] == "MALFORMED_REQUEST"

    r = api.decide(tool_request(token, args={"query": 42}))
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["effect"] == "deny" and d["reasons"][0]["code"] == "MALFORMED_REQUEST"
    assert "args.query: expected String, got an integer" in d["reasons"][0]["detail"]
    assert api.record(d["ledger_index"])["effect"] == "deny"
