"""Fault matrix, hostile input: oversized, deeply nested, duplicate keys, invalid UTF-8, NUL
bytes — raw bytes on the stdin of `interlock decide` and given to a running gate. Each must be
a recorded MALFORMED_REQUEST (intake records what it can of a request it refuses)."""

from __future__ import annotations

import json
from pathlib import Path

from interlock.core.model import MAX_REQUEST_BYTES
from interlock.gate import Gate
from tests.conftest import RESEARCHER
from tests.faults.harness import decide_cli, decide_in, on_ledger, record


def _request(token: str, tool: str = "web_search", args: str = '{"q": "x"}') -> bytes:
    return (
        f'{{"principal": "{RESEARCHER}", "action": "tool.call",'
        f' "resource": {{"type": "Tool", "id": "{tool}"}}, "args": {args},'
        f' "capability": "{token}"}}'
    ).encode()


def _row(fault: str, injected: str, home: Path, raws: list[bytes]) -> None:
    attempts = [decide_cli(home, raw) for raw in raws]
    with Gate.open(home) as gate:
        attempts += [decide_in(gate, raw) for raw in raws]
    record(
        fault,
        "input",
        injected,
        ("MALFORMED_REQUEST",),
        attempts,
        recorded=on_ledger(home, attempts),
        must_record=True,
    )


def test_oversized(home: Path, token: str) -> None:
    pad = json.dumps({"q": "x" * MAX_REQUEST_BYTES})
    _row(
        "input.oversized",
        f"a request of over {MAX_REQUEST_BYTES // 1024} KiB (the limit)",
        home,
        [_request(token, args=pad)],
    )


def test_deeply_nested(home: Path, token: str) -> None:
    depth = 100_000
    _row(
        "input.deeply-nested",
        f"args nested {depth} arrays deep (and 40 objects deep: past the 32-level limit, within"
        " the size limit)",
        home,
        [
            _request(token, args='{"q": ' + "[" * depth + "]" * depth + "}"),
            _request(token, args='{"a":' * 40 + "1" + "}" * 40),
        ],
    )


def test_duplicate_keys(home: Path, token: str) -> None:
    raw = _request(token).replace(
        b'"action": "tool.call"', b'"action": "tool.call", "principal": "spiffe://acme.test/x"'
    )
    _row(
        "input.duplicate-keys",
        "a second `principal` key (another identity) in the same request object",
        home,
        [raw],
    )


def test_invalid_utf8(home: Path, token: str) -> None:
    _row(
        "input.invalid-utf8",
        "bytes 0xff 0xfe and a lone surrogate escape (\\ud800) in the resource id",
        home,
        [
            _request(token, tool="web\xff\xfesearch").replace(b"\xc3\xbf\xc3\xbe", b"\xff\xfe"),
            _request(token, tool="\\ud800"),
        ],
    )


def test_nul_bytes(home: Path, token: str) -> None:
    _row(
        "input.nul-bytes",
        "a NUL in the resource id, escaped (\\u0000) and raw",
        home,
        [_request(token, tool="web_search\\u0000x"), _request(token).replace(b"web_", b"web\0")],
    )
