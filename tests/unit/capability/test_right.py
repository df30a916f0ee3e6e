from __future__ import annotations

import pytest

from interlock.capability import Right, resource_type_of
from interlock.errors import CapabilityError


@pytest.mark.parametrize(
    ("text", "action", "resource"),
    [
        ("tool.call:Tool::web_search", "tool.call", "Tool::web_search"),
        ("tool.call:Tool::*", "tool.call", "Tool::*"),
        ("*:*", "*", "*"),
        ("*:File::/etc/hosts", "*", "File::/etc/hosts"),
        ("mcp.tools/call:McpTool::fs.read", "mcp.tools/call", "McpTool::fs.read"),
        (
            "http.request:Http::https://api.acme.test/v1",
            "http.request",
            "Http::https://api.acme.test/v1",
        ),
        ("tool.call:Acme::Tool::*", "tool.call", "Acme::Tool::*"),
    ],
)
def test_parse(text: str, action: str, resource: str) -> None:
    right = Right.parse(text)
    assert (right.action, right.resource) == (action, resource)
    assert str(right) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "tool.call",  # no ':'
        ":Tool::x",  # empty action
        "tool.call:",  # empty resource
        "tool.call:Tool",  # no '::'
        "tool.call:Tool::",  # empty id
        "tool.call:::x",  # empty type
        "tool.call:1Tool::x",  # type is not an identifier
        "tool.*:Tool::x",  # glob in action
        "tool.call:Tool::web_*",  # glob in id
        "tool call:Tool::x",  # space in action
        'tool.call:Tool::a"b',  # quote
        "tool.call:Tool::a\\b",  # backslash
        "tool.call:Tool::a\nb",  # control character
    ],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(CapabilityError, match="got"):
        Right.parse(text)


def test_constructor_validates() -> None:
    with pytest.raises(CapabilityError):
        Right(action="tool.call", resource="nope")


@pytest.mark.parametrize(
    ("uid", "rtype"),
    [
        ("Tool::web_search", "Tool"),
        ("Acme::Tool::web_search", "Acme::Tool"),
        ("File::/etc/passwd", "File"),
        ("Http::https://x.test/a::b", "Http"),
        ("*", None),
        ("nothing", None),
        ("::x", None),
    ],
)
def test_resource_type_of(uid: str, rtype: str | None) -> None:
    assert resource_type_of(uid) == rtype


@pytest.mark.parametrize(
    ("right", "action", "uid", "expected"),
    [
        ("tool.call:Tool::a", "tool.call", "Tool::a", True),
        ("tool.call:Tool::a", "tool.call", "Tool::b", False),
        ("tool.call:Tool::a", "shell.exec", "Tool::a", False),
        ("tool.call:Tool::*", "tool.call", "Tool::anything", True),
        ("tool.call:Tool::*", "tool.call", "File::x", False),
        ("tool.call:Tool::*", "tool.call", "Acme::Tool::x", False),
        ("tool.call:Acme::Tool::*", "tool.call", "Acme::Tool::x", True),
        ("*:Tool::a", "anything.at.all", "Tool::a", True),
        ("tool.call:*", "tool.call", "File::x", True),
        ("*:*", "shell.exec", "Cmd::rm", True),
    ],
)
def test_covers(right: str, action: str, uid: str, expected: bool) -> None:
    assert Right.parse(right).covers(action, uid) is expected


def test_covers_with_explicit_type() -> None:
    # 'Tool::a::b' reads as type Tool::a by default; the caller knows it is a Tool named 'a::b'
    right = Right.parse("tool.call:Tool::*")
    assert not right.covers("tool.call", "Tool::a::b")
    assert right.covers("tool.call", "Tool::a::b", resource_type="Tool")
    # a type that is not the uid's prefix matches no type wildcard
    assert not right.covers("tool.call", "File::x", resource_type="Tool")


@pytest.mark.parametrize(
    ("right", "expected"),
    [
        ("admin:Admin::kill-switch", True),
        ("admin:Admin::*", True),
        ("admin:Admin::approval", False),
        ("admin:*", False),
        ("*:Admin::*", False),
        ("*:Admin::kill-switch", False),
        ("*:*", False),
    ],
)
def test_covers_explicit_needs_the_action_and_resource_named(right: str, expected: bool) -> None:
    r = Right.parse(right)
    assert r.covers("admin", "Admin::kill-switch", explicit=True) is expected
    assert r.covers("admin", "Admin::kill-switch", resource_type="Admin", explicit=True) is expected
    # explicit only ever removes: whatever it covers, the plain check covers too
    assert not expected or r.covers("admin", "Admin::kill-switch")
