"""Intake: strict schema, limits and encodings; every violation is MalformedRequest."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import uuid
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interlock import intake
from interlock.errors import MalformedRequest
from interlock.intake import new_request_id, parse_request

RID = "0190b3f6-7a1c-7000-8000-000000000000"
WHEN = "2026-01-01T00:00:00.000000Z"
GOOD = {
    "principal": "spiffe://acme.test/agent/researcher",
    "action": "tool.call",
    "resource": {"type": "Tool", "id": "web_search"},
}


def parse(raw: object) -> object:
    return parse_request(raw, request_id=RID, time=WHEN)  # type: ignore[arg-type]


def with_(**kw: object) -> dict[str, object]:
    return {**GOOD, **kw}


def test_good_request_parses_from_bytes_text_and_mapping() -> None:
    for raw in (json.dumps(GOOD).encode(), json.dumps(GOOD), GOOD):
        req = parse(raw)
        assert req.principal == GOOD["principal"]  # type: ignore[attr-defined]
        assert req.resource.uid == "Tool::web_search"  # type: ignore[attr-defined]
        assert req.id == RID
        assert req.time == WHEN


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"{not json", "not valid UTF-8 JSON"),
        (b"\xff\xfe", "not valid UTF-8 JSON"),
        (b"[]", "JSON object"),
        (json.dumps({**GOOD, "sudo": True}).encode(), "unknown field"),
        (json.dumps({**GOOD, "id": RID}).encode(), "unknown field"),
        (json.dumps({"action": "tool.call", "resource": GOOD["resource"]}).encode(), "missing"),
        (json.dumps(with_(principal=7)).encode(), "'principal' must be a string"),
        (json.dumps(with_(principal="root")).encode(), "not well-formed"),
        (json.dumps(with_(principal="spiffe://acme.test/a\nb")).encode(), "control characters"),
        (json.dumps(with_(action="Tool Call")).encode(), "not well-formed"),
        (json.dumps(with_(resource="everything")).encode(), "exactly 'type' and 'id'"),
        (json.dumps(with_(resource={"type": "Tool", "id": "a\x00b"})).encode(), "control"),
        (json.dumps(with_(resource={"type": "tool; drop", "id": "x"})).encode(), "not well-formed"),
        (json.dumps(with_(resource={"type": "Tool", "id": "x", "extra": 1})).encode(), "exactly"),
        (json.dumps(with_(args=[1, 2])).encode(), "'args' must be an object"),
        (json.dumps(with_(context="x")).encode(), "'context' must be an object"),
        (json.dumps(with_(capability=5)).encode(), "'capability' must be a string"),
        (json.dumps(with_(capability="not base64!")).encode(), "base64url"),
        (json.dumps(with_(parent="not-a-uuid")).encode(), "not well-formed"),
        (json.dumps(with_(traceparent="00-xyz")).encode(), "not well-formed"),
        (json.dumps(with_(args={"n": 2**60})).encode(), "I-JSON"),
        (b'{"principal": "a", "principal": "b"}', "duplicate key"),
        (b'{"args": NaN}', "not valid JSON"),
        (json.dumps(with_(args={"a": "x" * (70 * 1024)})).encode(), "64 KiB"),
        (json.dumps(with_(capability="A" * (65 * 1024))).encode(), "64 KiB"),
    ],
)
def test_malformed_inputs_are_refused_with_a_clear_message(raw: bytes, fragment: str) -> None:
    with pytest.raises(MalformedRequest, match=fragment):
        parse(raw)


def test_deep_nesting_is_refused() -> None:
    deep: object = "x"
    for _ in range(40):
        deep = {"a": deep}
    with pytest.raises(MalformedRequest, match="nested deeper"):
        parse(with_(args={"d": deep}))


def test_non_json_python_values_are_refused() -> None:
    with pytest.raises(MalformedRequest):
        parse(with_(args={"s": {1, 2}}))
    with pytest.raises(MalformedRequest):
        parse(12)


def test_request_ids_are_uuidv7_and_time_ordered() -> None:
    a = uuid.UUID(new_request_id(1_700_000_000_000_000_000))
    b = uuid.UUID(new_request_id(1_700_000_000_001_000_000))
    assert a.version == 7
    assert b.version == 7
    assert a.variant == uuid.RFC_4122
    assert a.int >> 80 < b.int >> 80
    assert new_request_id(1) != new_request_id(1)


def _reference_id(unix_ns: int, random10: bytes) -> str:
    """RFC 9562 §5.7 spelled out with uuid.UUID: the layout new_request_id must produce."""
    rand = int.from_bytes(random10, "big")
    value = (unix_ns // 1_000_000 & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76 | ((rand >> 62) & 0xFFF) << 64 | 0b10 << 62 | rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


@settings(max_examples=500, deadline=None)
@given(st.integers(-(2**70), 2**70), st.binary(min_size=10, max_size=10))
def test_request_id_layout_is_uuidv7_of_its_random_bytes(unix_ns: int, random10: bytes) -> None:
    with mock.patch.object(intake, "_random10", return_value=random10):
        assert new_request_id(unix_ns) == _reference_id(unix_ns, random10)


def test_request_id_random_bytes_are_never_handed_out_twice() -> None:
    seen: list[bytes] = []

    def draw() -> None:
        seen.extend(intake._random10() for _ in range(3000))

    threads = [threading.Thread(target=draw) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 12000
    assert len(set(seen)) == len(seen)
    assert all(len(b) == 10 for b in seen)


def test_a_forked_child_draws_other_request_id_bytes_than_its_parent() -> None:
    intake._random10()  # the pool now holds bytes the child must not reuse
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ten draws, to the parent
        os.close(read)
        os.write(write, b"".join(intake._random10() for _ in range(10)))
        os._exit(0)
    os.close(write)
    child = b""
    while len(child) < 100:
        more = os.read(read, 100)
        if not more:
            break
        child += more
    os.close(read)
    os.waitpid(pid, 0)
    parent = b"".join(intake._random10() for _ in range(10))
    assert len(child) == 100
    assert child != parent


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_escape_as_another_exception(raw: bytes) -> None:
    with contextlib.suppress(MalformedRequest):
        parse(raw)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
        max_leaves=10,
    )
)
def test_arbitrary_json_never_escapes_as_another_exception(value: object) -> None:
    with contextlib.suppress(MalformedRequest):
        parse(json.dumps(value).encode())


@pytest.mark.parametrize(
    ("rid", "fragment"),
    [
        ("web\u200bsearch", "U\\+200B"),
        ("\u202eweb_search", "U\\+202E"),
        ("\u00a0web_search", "U\\+00A0"),
        ("web_search ", "start or end"),
        ("/tmp/../etc/passwd", "'..' path segment"),
        ("./x", "'.' path segment"),
        ("cafe\u0301", "NFC"),
        ("\uff57eb_search", "compatibility"),
    ],
)
def test_resource_ids_outside_the_grammar_are_refused(rid: str, fragment: str) -> None:
    raw = json.dumps(with_(resource={"type": "Tool", "id": rid})).encode()
    with pytest.raises(MalformedRequest, match="'resource.id' .*" + fragment):
        parse(raw)


@pytest.mark.parametrize("rid", ["café", "données/été.txt", "Web Search", "a//b", "..."])
def test_resource_ids_in_the_grammar_are_kept_verbatim(rid: str) -> None:
    req = parse(with_(resource={"type": "Tool", "id": rid}))
    assert req.resource.id == rid  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "action",
    ["tool..call", "tool.", ".tool", "tool/", "mcp.tools//call", "mcp/../call", "Tool.call", "a b"],
)
def test_actions_are_lowercase_words_joined_by_single_dots_or_slashes(action: str) -> None:
    with pytest.raises(MalformedRequest, match="'action' is not well-formed"):
        parse(with_(action=action))


@pytest.mark.parametrize(
    "action", ["tool.call", "shell.exec", "mcp.tools/call", "k8s.admission", "act.a5", "a", "x-y_z"]
)
def test_well_formed_actions_parse(action: str) -> None:
    # shell.exec also requires args.argv (tested below); give every action one
    raw = with_(action=action, args={"argv": ["ls"]})
    assert parse(raw).action == action  # type: ignore[attr-defined]


_SHELL = {**GOOD, "action": "shell.exec", "resource": {"type": "Host", "id": "localhost"}}


@pytest.mark.parametrize(
    "args",
    [
        {},
        {"argv": "rm -rf x"},
        {"argv": []},
        {"argv": ["rm", 1]},
        {"argv": ["rm", None]},
        {"argv": [["rm", "-rf"]]},
        {"argv": ["rm", ["-rf", "x"]]},
        {"argv": ["rm", {"a": 1}]},
        {"argv": [""]},
        {"argv": ["rm", "a\u0000b"]},
        {"argv": ["ls"], "executable": "ls"},
        {"argv": ["ls"], "executable": ["/bin/ls"]},
        {"argv": ["ls"], "command": {"recursive_delete": False}},
    ],
)
def test_shell_exec_argv_must_be_a_list_of_strings(args: dict[str, object]) -> None:
    with pytest.raises(MalformedRequest):
        parse(with_(**_SHELL, args=args))


def test_shell_exec_args_that_parse() -> None:
    req = parse({**_SHELL, "args": {"argv": ["rm", "x"], "executable": "/usr/bin/rm"}})
    assert req.args == {"argv": ["rm", "x"], "executable": "/usr/bin/rm"}  # type: ignore[attr-defined]
