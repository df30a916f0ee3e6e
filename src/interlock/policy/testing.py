"""Policy test cases and bundle diffs (``interlock policy test`` and ``interlock policy diff``).

    >>> from interlock.policy import DEFAULT_BUNDLE
    >>> results = run_policy_tests(DEFAULT_BUNDLE)
    >>> all(r.passed for r in results), len(results) > 0
    (True, True)

A test file ``tests/<name>.json`` in a bundle is a JSON list of cases::

    {"name": "nobody may delete the database",
     "request": {"principal": "spiffe://acme.test/agent/researcher",
                 "action": "tool.call",
                 "resource": {"type": "Tool", "id": "delete_database"},
                 "args": {}, "context": {}, "time": 0},
     "expect": "deny", "code": "POLICY_FORBID"}

``args``, ``context`` (default ``{}``) and ``time`` (epoch seconds, default 0) are optional;
``code`` is optional and only allowed with ``"expect": "deny"``. The same ``request`` objects are
what :func:`diff_bundles` takes. Both evaluate **unsigned** bundle folders
(:func:`~interlock.policy.load_unsigned`): they are authoring tools, not enforcement.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from interlock.core.model import ReasonCode
from interlock.errors import PolicyError
from interlock.policy.bundle import read_bundle_files
from interlock.policy.engine import PolicyEngine, PolicyResult, load_unsigned, unsigned_engine

__all__ = [
    "CaseResult",
    "DiffRow",
    "diff_bundles",
    "diff_engines",
    "parse_request",
    "run_policy_tests",
]

_REQUEST_KEYS: Final = frozenset({"principal", "action", "resource", "args", "context", "time"})
_CASE_KEYS: Final = frozenset({"name", "request", "expect", "code"})


@dataclass(frozen=True, slots=True, kw_only=True)
class CaseResult:
    """One test case's outcome. ``passed`` when the effect (and ``code``, if given) matched."""

    file: str
    name: str
    passed: bool
    expect: str
    expect_code: ReasonCode | None
    result: PolicyResult

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "file": self.file,
            "name": self.name,
            "passed": self.passed,
            "expect": self.expect,
            "code": None if self.expect_code is None else self.expect_code.value,
            "result": self.result.to_json(),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class DiffRow:
    """A request whose decision (effect or reason code) differs between two bundles."""

    index: int
    request: Mapping[str, Any]
    before: PolicyResult
    after: PolicyResult

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "index": self.index,
            "request": dict(self.request),
            "before": self.before.to_json(),
            "after": self.after.to_json(),
        }


def _evaluate(engine: PolicyEngine, kwargs: Mapping[str, Any]) -> PolicyResult:
    """What the gate's policy stage would answer: the bundle's request checks (argument types,
    near-duplicate ids: ``MALFORMED_REQUEST``), then Cedar."""
    problem = engine.request_problem(
        action=kwargs["action"],
        resource_type=kwargs["resource_type"],
        resource_id=kwargs["resource_id"],
        args=kwargs["args"],
    )
    if problem is not None:
        return PolicyResult(permitted=False, code=ReasonCode.MALFORMED_REQUEST, detail=problem)
    return engine.evaluate(**kwargs)


def parse_request(request: object, where: str = "request") -> dict[str, Any]:
    """Check a test/diff request object and return :meth:`PolicyEngine.evaluate` keyword
    arguments.

        >>> parse_request({"principal": "p", "action": "a", "resource": {"type": "T", "id": "i"}})
        {'principal': 'p', 'action': 'a', 'resource_type': 'T', 'resource_id': 'i', 'args': {}, \
'context': {}, 'now': 0}

    Raises:
        PolicyError: if the object is malformed (unknown or missing keys, wrong types).
    """
    if not isinstance(request, Mapping):
        raise PolicyError(f"{where}: a request must be a JSON object")
    unknown = sorted(set(request) - _REQUEST_KEYS)
    if unknown:
        raise PolicyError(f"{where}: unknown request keys {unknown}")
    principal, action = request.get("principal"), request.get("action")
    resource = request.get("resource")
    args, context = request.get("args", {}), request.get("context", {})
    now = request.get("time", 0)
    if not isinstance(principal, str) or not isinstance(action, str):
        raise PolicyError(f"{where}: principal and action must be strings")
    if (
        not isinstance(resource, Mapping)
        or set(resource) != {"type", "id"}
        or not isinstance(resource["type"], str)
        or not isinstance(resource["id"], str)
    ):
        raise PolicyError(f'{where}: resource must be {{"type": "...", "id": "..."}}')
    if not isinstance(args, Mapping) or not isinstance(context, Mapping):
        raise PolicyError(f"{where}: args and context must be JSON objects")
    if type(now) is not int:
        raise PolicyError(f"{where}: time must be an integer (epoch seconds)")
    return {
        "principal": principal,
        "action": action,
        "resource_type": resource["type"],
        "resource_id": resource["id"],
        "args": args,
        "context": context,
        "now": now,
    }


def run_policy_tests(directory: Path) -> list[CaseResult]:
    """Evaluate every case of every ``tests/*.json`` file of an (unsigned) bundle folder, in
    file and case order. An empty list means the bundle has no cases.

    Raises:
        PolicyError: if the bundle does not load (see :func:`~interlock.policy.load_unsigned`)
            or a test file is malformed.
    """
    files = read_bundle_files(directory)
    engine = unsigned_engine(files)
    results: list[CaseResult] = []
    for path in sorted(p for p in files if p.startswith("tests/") and p.endswith(".json")):
        try:
            cases = json.loads(files[path])
        except ValueError as exc:
            raise PolicyError(f"{path}: not JSON: {exc}") from exc
        if not isinstance(cases, list):
            raise PolicyError(f"{path}: a test file is a JSON list of cases")
        for n, case in enumerate(cases):
            results.append(_run_case(engine, path, n, case))
    return results


def _run_case(engine: PolicyEngine, path: str, n: int, case: object) -> CaseResult:
    where = f"{path} case {n}"
    if not isinstance(case, Mapping):
        raise PolicyError(f"{where}: a case must be a JSON object")
    unknown = sorted(set(case) - _CASE_KEYS)
    if unknown:
        raise PolicyError(f"{where}: unknown case keys {unknown}")
    name = case.get("name", f"case {n}")
    expect, code = case.get("expect"), case.get("code")
    if not isinstance(name, str):
        raise PolicyError(f"{where}: name must be a string")
    if expect not in ("allow", "deny"):
        raise PolicyError(f'{where}: expect must be "allow" or "deny"')
    expect_code: ReasonCode | None = None
    if code is not None:
        if expect != "deny" or code not in ReasonCode.__members__:
            raise PolicyError(f"{where}: code must be a reason code, and only with expect deny")
        expect_code = ReasonCode(code)
    result = _evaluate(engine, parse_request(case.get("request"), where))
    passed = result.permitted == (expect == "allow") and (
        expect_code is None or result.code is expect_code
    )
    return CaseResult(
        file=path, name=name, passed=passed, expect=expect, expect_code=expect_code, result=result
    )


def diff_bundles(
    old_dir: Path, new_dir: Path, requests: Sequence[Mapping[str, Any]]
) -> list[DiffRow]:
    """The requests whose decision — effect or reason code — differs between two (unsigned)
    bundle folders, in request order. Requests have the test-case ``request`` shape.

    Raises:
        PolicyError: if either bundle does not load or a request is malformed.
    """
    return diff_engines(load_unsigned(old_dir), load_unsigned(new_dir), requests)


def diff_engines(
    before_engine: PolicyEngine, after_engine: PolicyEngine, requests: Sequence[Mapping[str, Any]]
) -> list[DiffRow]:
    """:func:`diff_bundles` for two engines already built (the console builds them from a
    recorded bundle and an edited candidate, :func:`interlock.policy.engine.unsigned_engine`).

    Raises:
        PolicyError: if a request is malformed.
    """
    rows: list[DiffRow] = []
    for n, request in enumerate(requests):
        kwargs = parse_request(request, f"request {n}")
        before = _evaluate(before_engine, kwargs)
        after = _evaluate(after_engine, kwargs)
        if (before.permitted, before.code) != (after.permitted, after.code):
            rows.append(DiffRow(index=n, request=request, before=before, after=after))
    return rows
