"""Reading declared argument types from a bundle schema, and checking args against them."""

from __future__ import annotations

import json
from typing import Any

import cedarpy
import pytest

from interlock.policy import DEFAULT_BUNDLE, load_unsigned
from interlock.policy.argschema import SchemaReadError, check_args, read_arg_types

RICH = """
// comments, annotations, namespaces, common types, enums, tags, quoted names
@doc("a team")
entity Team;
entity Agent in [Team] { name: String, "odd name"?: Long };
entity Color enum ["red", "green"];
entity Doc in Team = { owner: Agent } tags String;
type Args = { n: Long, s?: String, nested?: { ok: Bool, tags?: Set<String> }, who?: Agent };
type Ctx = { args: Args, request: {}, time: Long };
namespace Other {
  type ZArgs = { z: String };
  entity Thing;
  action "tool.call" appliesTo { principal: [Thing], resource: [Thing], context: { args: ZArgs } };
}
action "group";
action "a", "b" in ["group"] appliesTo { principal: [Agent], resource: [Doc], context: Ctx };
action c in [Action::"group"] appliesTo {
  principal: Agent,
  resource: [Doc, Color],
  context: { args: Other::ZArgs, ip?: ipaddr },
};
action "d" appliesTo { principal: [Agent], resource: [Doc],
  context: { args: { "x y"?: __cedar::Long, list?: Set<Set<Long>>, when?: decimal } } };
action "no-context" appliesTo { principal: [Agent], resource: [Doc] };
action "bare";
"""


def test_the_rich_schema_is_valid_cedar() -> None:
    cedarpy.Schema.from_str(RICH)  # the fixture itself must be a schema Cedar accepts


def test_reads_the_rich_schema() -> None:
    types = read_arg_types(RICH)
    assert set(types) == {"a", "b", "c", "d"}
    assert types["a"] == types["b"]
    attrs = types["a"][1]
    assert attrs["n"] == (True, ("Long",))
    assert attrs["s"] == (False, ("String",))
    assert attrs["who"] == (False, ("any",))  # an entity type: not checked here
    assert attrs["nested"][1][1]["tags"] == (False, ("Set", ("String",)))
    # a qualified common type resolves in its namespace
    assert types["c"] == ("Record", {"z": (True, ("String",))})
    assert types["d"][1] == {
        "x y": (False, ("Long",)),
        "list": (False, ("Set", ("Set", ("Long",)))),
        "when": (False, ("any",)),
    }


def test_reads_the_default_bundle() -> None:
    types = read_arg_types((DEFAULT_BUNDLE / "schema.cedarschema").read_text())
    assert types["tool.call"] == (
        "Record",
        {"query": (False, ("String",)), "path": (False, ("String",))},
    )
    assert types["shell.exec"][1]["argv"] == (False, ("Set", ("String",)))
    assert types["mcp.tools/call"] == ("Record", {})


def test_reads_the_json_form() -> None:
    doc = {
        "": {
            "commonTypes": {"Args": {"type": "Record", "attributes": {"q": {"type": "String"}}}},
            "entityTypes": {"Agent": {}, "Tool": {}},
            "actions": {
                "tool.call": {
                    "appliesTo": {
                        "principalTypes": ["Agent"],
                        "resourceTypes": ["Tool"],
                        "context": {
                            "type": "Record",
                            "attributes": {
                                "args": {"type": "Args"},
                                "time": {"type": "Long"},
                            },
                        },
                    }
                },
                "shell.exec": {
                    "appliesTo": {
                        "principalTypes": ["Agent"],
                        "resourceTypes": ["Tool"],
                        "context": {
                            "type": "Record",
                            "attributes": {
                                "args": {
                                    "type": "Record",
                                    "attributes": {
                                        "argv": {
                                            "type": "Set",
                                            "element": {"type": "String"},
                                            "required": False,
                                        },
                                        "ok": {"type": "Boolean", "required": False},
                                    },
                                }
                            },
                        },
                    }
                },
            },
        }
    }
    text = json.dumps(doc)
    cedarpy.Schema.from_json_str(text)  # a schema Cedar accepts
    types = read_arg_types(text)
    assert types["tool.call"] == ("Record", {"q": (True, ("String",))})
    assert types["shell.exec"][1] == {
        "argv": (False, ("Set", ("String",))),
        "ok": (False, ("Bool",)),
    }


@pytest.mark.parametrize("text", ["entity ;", 'action "a" appliesTo { nonsense: X };', "type = ;"])
def test_unreadable_text_raises(text: str) -> None:
    with pytest.raises(SchemaReadError):
        read_arg_types(text)


ARGS = read_arg_types(RICH)["a"]
SHELL_DECLARED = read_arg_types((DEFAULT_BUNDLE / "schema.cedarschema").read_text())["shell.exec"]
# `command` is derived by Interlock, not sent by callers: the engine checks the rest
SHELL = ("Record", {k: v for k, v in SHELL_DECLARED[1].items() if k != "command"})

CASES: list[tuple[Any, dict[str, Any], str | None]] = [
    (ARGS, {"n": 1}, None),
    (ARGS, {"n": 1, "s": "x", "undeclared": [[1], {"a": None}]}, None),
    (ARGS, {"n": 1, "nested": {"ok": True, "tags": ["a", "b"], "extra": 1}}, None),
    (ARGS, {"n": 1, "who": "anything"}, None),
    (ARGS, {}, "args.n: required by the schema, missing"),
    (ARGS, {"n": "1"}, "args.n: expected Long (a 64-bit integer), got a string"),
    (ARGS, {"n": True}, "args.n: expected Long (a 64-bit integer), got a boolean"),
    (ARGS, {"n": 2**63}, "args.n: expected Long (a 64-bit integer), got an integer"),
    (ARGS, {"n": 1, "s": 5}, "args.s: expected String, got an integer"),
    (ARGS, {"n": 1, "nested": []}, "args.nested: expected a record (an object), got a list"),
    (ARGS, {"n": 1, "nested": {"ok": 1}}, "args.nested.ok: expected Bool, got an integer"),
    (ARGS, {"n": 1, "nested": {}}, "args.nested.ok: required by the schema, missing"),
    (
        ARGS,
        {"n": 1, "nested": {"ok": True, "tags": ["a", 2]}},
        "args.nested.tags[1]: expected String, got an integer",
    ),
    (SHELL, {"argv": ["rm", "-rf", "/"]}, None),
    (SHELL, {"argv": []}, None),
    (SHELL, {"argv": [["rm"], ["-rf"]]}, "args.argv[0]: expected String, got a list"),
    (SHELL, {"argv": "rm -rf /"}, "args.argv: expected Set (a list), got a string"),
    (SHELL, {"argv": ["rm", None]}, "args.argv[1]: expected String, got null"),
    (SHELL, {"cwd": ["/"]}, "args.cwd: expected String, got a list"),
    (SHELL, {"cwd": {"path": "/"}}, "args.cwd: expected String, got an object"),
]


@pytest.mark.parametrize(("declared", "args", "expected"), CASES)
def test_check_args(declared: Any, args: dict[str, Any], expected: str | None) -> None:
    assert check_args(declared, args) == expected


def test_the_default_schema_requires_the_derived_command() -> None:
    assert SHELL_DECLARED[1]["command"][0] is True


def test_the_engine_does_not_ask_callers_for_the_derived_command() -> None:
    engine = load_unsigned(DEFAULT_BUNDLE)

    def problem(args: dict[str, Any]) -> str | None:
        return engine.request_problem(
            action="shell.exec", resource_type="Tool", resource_id="shell", args=args
        )

    assert problem({"argv": ["ls", "-l"]}) is None
    # a command the caller sends is replaced by the derived one, never read
    assert problem({"argv": ["ls"], "command": "rm -rf /"}) is None
    assert problem({"argv": [["rm"]]}) == (
        "arguments do not fit the schema of 'shell.exec': args.argv[0]: expected String, got a list"
    )
