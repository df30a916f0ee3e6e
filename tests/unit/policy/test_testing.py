"""Policy test cases (``interlock policy test``) and bundle diffs (``interlock policy diff``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from interlock.core.model import ReasonCode
from interlock.errors import PolicyError
from interlock.policy import DEFAULT_BUNDLE, diff_bundles, run_policy_tests
from interlock.policy.testing import parse_request

from .conftest import LEAD, SUMMARIZER


def test_default_bundle_cases_pass() -> None:
    results = run_policy_tests(DEFAULT_BUNDLE)
    assert len(results) == 23
    failed = [r.to_json() for r in results if not r.passed]
    assert failed == []
    codes = {r.result.code for r in results}
    assert codes == {
        None,
        ReasonCode.POLICY_FORBID,
        ReasonCode.POLICY_NO_PERMIT,
        # argv as a string: refused against the schema's declared Set<String> before Cedar
        ReasonCode.MALFORMED_REQUEST,
    }
    assert {r.file for r in results} == {"tests/cases.json"}


def write_cases(directory: Path, cases: list[dict[str, Any]], name: str = "extra.json") -> None:
    (directory / "tests" / name).write_text(json.dumps(cases))


def test_failing_case_reported(default_dir: Path) -> None:
    request = {
        "principal": LEAD,
        "action": "tool.call",
        "resource": {"type": "Tool", "id": "delete_database"},
    }
    write_cases(
        default_dir,
        [
            {"name": "wrong effect", "request": request, "expect": "allow"},
            {
                "name": "wrong code",
                "request": request,
                "expect": "deny",
                "code": "POLICY_NO_PERMIT",
            },
            {"name": "right", "request": request, "expect": "deny", "code": "POLICY_FORBID"},
            {"name": "effect only", "request": request, "expect": "deny"},
        ],
    )
    results = {r.name: r for r in run_policy_tests(default_dir) if r.file == "tests/extra.json"}
    assert [name for name, r in results.items() if r.passed] == ["right", "effect only"]
    assert results["wrong code"].expect_code is ReasonCode.POLICY_NO_PERMIT
    assert results["wrong code"].result.code is ReasonCode.POLICY_FORBID


_OK = {"principal": "p", "action": "a", "resource": {"type": "T", "id": "i"}}


@pytest.mark.parametrize(
    "case",
    [
        {"request": {}, "expect": "allow"},
        {"request": {**_OK, "resource": {"type": "T"}}, "expect": "deny"},
        {"request": _OK, "expect": "maybe"},
        {"request": _OK, "expect": "allow", "code": "POLICY_FORBID"},
        {"request": _OK, "expect": "deny", "code": "NOPE"},
        {"request": {**_OK, "time": "now"}, "expect": "deny"},
        {"request": {**_OK, "contxt": {}}, "expect": "deny"},
        {"request": _OK, "expect": "deny", "expected": "x"},
    ],
)
def test_malformed_case_refused(default_dir: Path, case: dict[str, Any]) -> None:
    write_cases(default_dir, [case])
    with pytest.raises(PolicyError, match=r"tests/extra\.json case 0"):
        run_policy_tests(default_dir)


def test_malformed_test_file_refused(default_dir: Path) -> None:
    (default_dir / "tests" / "extra.json").write_text("{not json")
    with pytest.raises(PolicyError, match="not JSON"):
        run_policy_tests(default_dir)
    (default_dir / "tests" / "extra.json").write_text("{}")
    with pytest.raises(PolicyError, match="list of cases"):
        run_policy_tests(default_dir)


def test_no_cases(default_dir: Path) -> None:
    shutil.rmtree(default_dir / "tests")
    assert run_policy_tests(default_dir) == []


def test_parse_request_defaults() -> None:
    parsed = parse_request(
        {"principal": "p", "action": "a", "resource": {"type": "T", "id": "i"}, "time": 5}
    )
    assert parsed["now"] == 5
    assert parsed["args"] == {}
    assert parsed["context"] == {}


def test_diff_reports_changed_decisions(default_dir: Path, tmp_path: Path) -> None:
    new_dir = Path(shutil.copytree(default_dir, tmp_path / "new"))
    policies = new_dir / "policies.cedar"
    text = policies.read_text()
    # drop the delete_database forbid: the lead's broad permit now lets it through
    start = text.index('@id("no-delete-database")')
    end = text.index(");", start) + 2
    policies.write_text(text[:start] + text[end:])

    def req(principal: str, tool: str) -> dict[str, Any]:
        return {
            "principal": principal,
            "action": "tool.call",
            "resource": {"type": "Tool", "id": tool},
        }

    requests = [
        req(LEAD, "web_search"),
        req(LEAD, "delete_database"),
        req(SUMMARIZER, "delete_database"),
        req(SUMMARIZER, "send_email"),
    ]
    rows = diff_bundles(default_dir, new_dir, requests)
    assert [r.index for r in rows] == [1, 2]
    assert rows[0].before.code is ReasonCode.POLICY_FORBID
    assert rows[0].after.permitted
    # the summarizer is still denied, but for another reason: a changed code is a change
    assert rows[1].before.code is ReasonCode.POLICY_FORBID
    assert rows[1].after.code is ReasonCode.POLICY_NO_PERMIT
    assert rows[0].to_json()["request"] == requests[1]
    assert diff_bundles(default_dir, default_dir, requests) == []


def test_diff_refuses_malformed_request(default_dir: Path) -> None:
    with pytest.raises(PolicyError, match="request 0"):
        diff_bundles(default_dir, default_dir, [{"principal": "p"}])


def test_policy_test_applies_the_bundles_request_checks(tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    shutil.copytree(DEFAULT_BUNDLE, bundle)
    base = {
        "principal": "spiffe://acme.test/agent/researcher",
        "action": "tool.call",
    }
    write_cases(
        bundle,
        [
            {
                "name": "a case variant of a forbidden tool",
                "request": {**base, "resource": {"type": "Tool", "id": "Delete_Database"}},
                "expect": "deny",
                "code": "MALFORMED_REQUEST",
            },
            {
                "name": "a query that is not a string",
                "request": {
                    **base,
                    "resource": {"type": "Tool", "id": "web_search"},
                    "args": {"query": ["x"]},
                },
                "expect": "deny",
                "code": "MALFORMED_REQUEST",
            },
        ],
    )
    results = [r for r in run_policy_tests(bundle) if r.file == "tests/extra.json"]
    assert len(results) == 2
    assert all(r.passed for r in results), [r.to_json() for r in results]
