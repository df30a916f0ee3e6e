"""A tool's ``inputSchema``, compiled once per listing into a bounded validator.

    >>> check = compile_input_schema({"type": "object", "properties": {"a": {"type": "integer"}},
    ...                               "required": ["a"], "additionalProperties": False})
    >>> check({"a": 1}) is None
    True
    >>> check({"a": "1"})
    "$.a: '1' is not of type 'integer'"

The schema comes from the upstream server, which the proxy does not trust to be kind: every
bound below refuses the *schema* (the tool cannot be called: :class:`UnsafeSchema`) rather than
letting one validation run unbounded. Validation is the ``jsonschema`` library (the one the MCP
SDK uses), with:

* **Size**: at most :data:`MAX_SCHEMA_BYTES` of JSON, nested at most :data:`MAX_SCHEMA_DEPTH`
  deep, and at most :data:`MAX_EXPANDED_NODES` nodes with every ``$ref`` expanded (a chain of
  ``anyOf`` of ``$ref`` to the next level is small as text and exponential as work).
* **References**: only ``$ref`` to a JSON pointer in the same document (``#`` or ``#/...``);
  no ``$id`` below the root, no ``$dynamicRef``/``$recursiveRef``; an empty
  ``referencing.Registry``: nothing is ever fetched. A recursive ``$ref`` that does not descend
  into the instance ends in Python's recursion limit: that call is refused.
* **Drafts**: ``$schema`` names a draft ``jsonschema`` knows, or is absent (JSON Schema
  2020-12, as MCP says); the schema must pass its meta-schema.
* **Regular expressions** (``pattern``, ``patternProperties``): Python's ``re`` backtracks and
  holds the GIL, so a pathological pattern would freeze the proxy. Each pattern is parsed and
  its backtracking cost modelled (:func:`subject_limit`): backreferences, and a repeat or an
  alternation inside a variable-length repeat (``(a+)+``, ``(a|aa)*``: exponential), refuse
  the schema; otherwise the cost is polynomial — the product of the variable repeats' ranges,
  times the start positions unless anchored with ``^`` — and a string longer than the length
  that keeps it under :data:`PATTERN_BUDGET` steps fails validation at its path instead of
  being matched; all the matches of one call together get :data:`CALL_BUDGET`.
* ``uniqueItems`` is checked in linear time (canonical keys) instead of ``jsonschema``'s
  quadratic fallback for objects; ``format`` is an annotation (no format checker), as
  JSON Schema 2020-12 makes it by default.
"""

from __future__ import annotations

import contextvars
import functools
import json
import re
from collections.abc import Callable, Iterator, Mapping
from re import _constants as _sre_constants  # type: ignore[attr-defined,unused-ignore]
from re import _parser as _sre_parser  # type: ignore[attr-defined,unused-ignore]
from typing import Any

import jsonschema
import jsonschema.validators
from jsonschema.exceptions import ValidationError
from referencing import Registry

from interlock.errors import Error

#: the largest ``inputSchema`` accepted, as compact JSON
MAX_SCHEMA_BYTES = 64 * 1024

#: the deepest nesting of objects and arrays in an ``inputSchema``
MAX_SCHEMA_DEPTH = 32

#: the most schema nodes with every ``$ref`` expanded in place (recursive ones counted once)
MAX_EXPANDED_NODES = 20_000

#: the longest ``pattern`` (characters)
MAX_PATTERN_CHARS = 1_000

#: the modelled backtracking steps one string may cost one pattern (about 0.05-0.5 s of
#: Python's ``re`` in the worst case measured here)
PATTERN_BUDGET = 10**8

#: the modelled backtracking steps all the pattern matches of one call may cost together
CALL_BUDGET = 2 * PATTERN_BUDGET

#: the longest string ever matched against a pattern (arguments are at most 64 KiB anyway)
MAX_PATTERN_SUBJECT = 64 * 1024

#: a validation that reports at most this many characters of detail
_DETAIL = 300


class UnsafeSchema(Error):
    """An upstream's ``inputSchema`` that the proxy will not validate against: too large, too
    deep, a remote or unsupported reference, an unknown draft, invalid against its
    meta-schema, or a regular expression whose matching cost cannot be bounded."""


Check = Callable[[Any], "str | None"]


def compile_input_schema(schema: Any) -> Check:
    """Compile ``schema`` (a tool's ``inputSchema``) into a check of a call's arguments: the
    check returns ``None`` when they validate, else one line naming the first failing path
    (``$.a.b: <what failed>``). The check never raises: a validation that errs (a recursion
    without end) is reported as a failure.

    Raises:
        UnsafeSchema: the schema is refused (see the module docstring for every bound).
    """
    if not isinstance(schema, Mapping):
        raise UnsafeSchema("the inputSchema is not a JSON object")
    try:
        text = json.dumps(schema, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise UnsafeSchema("the inputSchema is not JSON") from exc
    if len(text.encode("utf-8", "surrogatepass")) > MAX_SCHEMA_BYTES:
        raise UnsafeSchema(f"the inputSchema is larger than {MAX_SCHEMA_BYTES} bytes")
    _check_depth(schema, 0)
    _check_references(schema)
    _expanded_size(schema)
    for pattern in _patterns(schema):
        subject_limit(pattern)  # raises UnsafeSchema
    cls = _validator_class(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = exc.json_path if hasattr(exc, "json_path") else "$"
        raise UnsafeSchema(
            f"the inputSchema is not a valid JSON Schema ({where}: {exc.message[:200]})"
        ) from exc
    except RecursionError as exc:
        raise UnsafeSchema("the inputSchema is not a valid JSON Schema (too recursive)") from exc
    validator = cls(schema, registry=Registry())

    def check(arguments: Any) -> str | None:
        token = _SPENT.set([0])
        try:
            error = jsonschema.exceptions.best_match(validator.iter_errors(arguments))
        except _OverBudget:
            return (
                f"$: matching the arguments against the inputSchema's patterns would cost more"
                f" than {CALL_BUDGET:.0e} steps"
            )
        except RecursionError:
            return "$: the inputSchema recurses without end on these arguments"
        except Exception as exc:  # noqa: BLE001 - an unresolvable $ref, a broken regex: not valid
            return f"$: cannot be validated against the inputSchema ({type(exc).__name__})"
        finally:
            _SPENT.reset(token)
        if error is None:
            return None
        return f"{error.json_path}: {error.message}"[:_DETAIL]

    return check


class _OverBudget(Exception):
    """One call's pattern matches went over :data:`CALL_BUDGET`."""


#: the modelled steps spent by the pattern matches of the call being checked
_SPENT: contextvars.ContextVar[list[int]] = contextvars.ContextVar("interlock_mcp_pattern_steps")


def _search(patrn: str, subject: str) -> bool:
    """``re.search``, charged to the current call's budget first."""
    spent = _SPENT.get(None)
    if spent is not None:
        items, anchored = _model(patrn)
        spent[0] += _cost(items, len(subject)) * (1 if anchored else len(subject) + 1)
        if spent[0] > CALL_BUDGET:
            raise _OverBudget
    return re.search(patrn, subject) is not None


# -- the validator class ------------------------------------------------------------------------


def _bounded_pattern(
    validator: Any, patrn: str, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "string"):
        return
    limit = subject_limit(patrn)
    if len(instance) > limit:
        yield ValidationError(
            f"a string of {len(instance)} characters is longer than the {limit} that can be"
            f" matched against {patrn[:80]!r} in bounded time"
        )
    elif not _search(patrn, instance):
        yield ValidationError(f"{instance[:80]!r} does not match {patrn[:80]!r}")


def _bounded_pattern_properties(
    validator: Any, properties: Mapping[str, Any], instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for patrn, subschema in properties.items():
        limit = subject_limit(patrn)
        for key, value in instance.items():
            if len(key) > limit:
                yield ValidationError(
                    f"a property name of {len(key)} characters is longer than the {limit}"
                    f" that can be matched against {patrn[:80]!r} in bounded time"
                )
            elif _search(patrn, key):
                yield from validator.descend(value, subschema, path=key, schema_path=patrn)


def _unique_key(value: Any) -> str:
    """A key equal for JSON-Schema-equal values: ``1`` and ``1.0`` alike, ``true`` and ``1``
    apart, object keys in any order."""

    def norm(v: Any) -> Any:
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return v
        if isinstance(v, int | float):
            if isinstance(v, float) and v.is_integer():
                return ["n", int(v)]
            return ["n", v]
        if isinstance(v, list):
            return [norm(i) for i in v]
        if isinstance(v, Mapping):
            return {k: norm(i) for k, i in v.items()}
        return repr(v)

    return json.dumps(norm(value), sort_keys=True, separators=(",", ":"))


def _linear_unique_items(
    validator: Any, unique: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set[str] = set()
    for item in instance:
        key = _unique_key(item)
        if key in seen:
            yield ValidationError("the array has non-unique elements")
            return
        seen.add(key)


_OVERRIDES = {
    "pattern": _bounded_pattern,
    "patternProperties": _bounded_pattern_properties,
    "uniqueItems": _linear_unique_items,
}


@functools.cache
def _bounded(cls: Any) -> Any:
    """``cls`` with the bounded ``pattern``, ``patternProperties`` and ``uniqueItems``."""
    present = {k: v for k, v in _OVERRIDES.items() if k in cls.VALIDATORS}
    return jsonschema.validators.extend(cls, validators=present)


def _validator_class(schema: Mapping[str, Any]) -> Any:
    if "$schema" not in schema:
        # MCP: an inputSchema without $schema is JSON Schema 2020-12
        return _bounded(jsonschema.Draft202012Validator)
    cls = jsonschema.validators.validator_for(schema, default=None)
    if cls is None:
        raise UnsafeSchema(f"unsupported $schema {str(schema['$schema'])[:100]!r}")
    return _bounded(cls)


# -- structural bounds --------------------------------------------------------------------------


def _check_depth(node: Any, depth: int) -> None:
    if depth > MAX_SCHEMA_DEPTH:
        raise UnsafeSchema(f"the inputSchema is nested deeper than {MAX_SCHEMA_DEPTH} levels")
    if isinstance(node, Mapping):
        for value in node.values():
            _check_depth(value, depth + 1)
    elif isinstance(node, list):
        for value in node:
            _check_depth(value, depth + 1)


def _check_references(node: Any, root: bool = True) -> None:
    if isinstance(node, list):
        for value in node:
            _check_references(value, False)
        return
    if not isinstance(node, Mapping):
        return
    for key in ("$dynamicRef", "$recursiveRef"):
        if key in node:
            raise UnsafeSchema(f"{key} is not supported in an inputSchema")
    if not root and "$id" in node and isinstance(node["$id"], str):
        raise UnsafeSchema("$id below the root of an inputSchema is not supported")
    ref = node.get("$ref")
    if ref is not None and not (isinstance(ref, str) and (ref == "#" or ref.startswith("#/"))):
        raise UnsafeSchema(f"$ref {str(ref)[:100]!r} is not a pointer into the inputSchema itself")
    for value in node.values():
        _check_references(value, False)


def _resolve(root: Any, ref: str) -> Any:
    """The node a ``#/...`` JSON pointer (RFC 6901) names in ``root``."""
    node = root
    for raw in ref[2:].split("/") if ref != "#" else ():
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise UnsafeSchema(f"$ref {ref[:100]!r} names nothing in the inputSchema")
    return node


def _expanded_size(root: Any) -> int:
    """The number of nodes of ``root`` with every ``$ref`` expanded in place (a reference back
    to a node being expanded counts as one node). Raises UnsafeSchema over the bound."""
    memo: dict[str, int] = {}
    active: set[str] = set()

    def size(node: Any) -> int:
        total = 1
        if isinstance(node, Mapping):
            ref = node.get("$ref")
            if isinstance(ref, str):
                total += ref_size(ref)
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            return total
        for child in children:
            total += size(child)
            if total > MAX_EXPANDED_NODES:
                raise UnsafeSchema(
                    f"the inputSchema has more than {MAX_EXPANDED_NODES} nodes with its $refs"
                    " expanded"
                )
        return total

    def ref_size(ref: str) -> int:
        if ref in active:
            return 1
        if ref not in memo:
            active.add(ref)
            try:
                memo[ref] = size(_resolve(root, ref))
            finally:
                active.discard(ref)
        return memo[ref]

    return size(root)


def _patterns(node: Any) -> Iterator[str]:
    """Every ``pattern`` string and ``patternProperties`` key in ``node`` (conservatively: also
    such keys in ``const``, ``default``, ...)."""
    if isinstance(node, list):
        for value in node:
            yield from _patterns(value)
    elif isinstance(node, Mapping):
        if isinstance(node.get("pattern"), str):
            yield node["pattern"]
        props = node.get("patternProperties")
        if isinstance(props, Mapping):
            yield from (k for k in props if isinstance(k, str))
        for value in node.values():
            yield from _patterns(value)


# -- regular expressions ------------------------------------------------------------------------

_C = _sre_constants
_VARIABLE_OK = frozenset({_C.LITERAL, _C.NOT_LITERAL, _C.ANY, _C.IN, _C.AT, _C.CATEGORY})
_REPEATS = frozenset(
    op
    for op in (
        _C.MAX_REPEAT,
        _C.MIN_REPEAT,
        getattr(_C, "POSSESSIVE_REPEAT", None),
    )
    if op is not None
)


def _cost(items: Any, length: int) -> int:
    """The modelled backtracking cost of the parsed pattern ``items`` on a string of
    ``length`` characters, at one start position. Raises UnsafeSchema for the exponential
    shapes."""
    total = 1
    for op, av in items:
        if op in _VARIABLE_OK:
            continue
        if op == _C.SUBPATTERN:
            total *= _cost(av[-1], length)
        elif op == getattr(_C, "ATOMIC_GROUP", None):
            total *= _cost(av, length)
        elif op in (_C.ASSERT, _C.ASSERT_NOT):
            total *= _cost(av[1], length)
        elif op == _C.BRANCH:
            total *= sum(_cost(alt, length) for alt in av[1])
        elif op in _REPEATS:
            low, high, body = av
            inner = _cost(body, length)
            if low == high:
                total *= inner**low if inner > 1 else 1
            elif inner > 1 or _has_choice(body):
                raise UnsafeSchema(
                    "a pattern repeats a repeat or an alternation (exponential backtracking)"
                )
            else:
                top = length if high == _C.MAXREPEAT else min(high, length)
                total *= max(top - low + 1, 1)
        else:  # backreferences (GROUPREF, GROUPREF_EXISTS) and anything unknown
            raise UnsafeSchema(f"a pattern uses {op} (unbounded matching cost)")
        if total > PATTERN_BUDGET * MAX_PATTERN_SUBJECT:
            return total
    return total


def _has_choice(items: Any) -> bool:
    """Whether ``items`` holds an alternation or a variable-length repeat at any depth."""
    for op, av in items:
        if op == _C.BRANCH:
            return True
        if op in _REPEATS and (av[0] != av[1] or _has_choice(av[2])):
            return True
        if op == _C.SUBPATTERN and _has_choice(av[-1]):
            return True
        if op in (_C.ASSERT, _C.ASSERT_NOT) and _has_choice(av[1]):
            return True
        if op == getattr(_C, "ATOMIC_GROUP", None) and _has_choice(av):
            return True
    return False


@functools.lru_cache(maxsize=4096)
def _model(pattern: str) -> tuple[list[Any], bool]:
    """The parsed ``pattern`` and whether ``re.search`` tries it at one start position only."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise UnsafeSchema(f"a pattern is longer than {MAX_PATTERN_CHARS} characters")
    try:
        re.compile(pattern)
        parsed = _sre_parser.parse(pattern)
    except (re.error, RecursionError, OverflowError, ValueError) as exc:
        raise UnsafeSchema(f"a pattern does not compile: {pattern[:80]!r}") from exc
    items = list(parsed)
    anchored = (
        bool(items)
        and items[0][0] == _C.AT
        and items[0][1] in (_C.AT_BEGINNING, _C.AT_BEGINNING_STRING)
        and not parsed.state.flags & re.MULTILINE
    )
    return items, anchored


@functools.lru_cache(maxsize=4096)
def subject_limit(pattern: str) -> int:
    """The longest string (characters, at most :data:`MAX_PATTERN_SUBJECT`) that ``pattern``
    may be matched against with Python's ``re`` within :data:`PATTERN_BUDGET` modelled
    backtracking steps: the product of its variable-length repeats' ranges, times the start
    positions ``re.search`` tries (one when the pattern starts with ``^`` and is not
    multi-line).

    Raises:
        UnsafeSchema: the pattern is too long, does not compile, or has a backreference or a
            repeat/alternation inside a variable-length repeat (exponential backtracking).
    """
    items, anchored = _model(pattern)

    def fits(length: int) -> bool:
        starts = 1 if anchored else length + 1
        return _cost(items, length) * starts <= PATTERN_BUDGET

    if fits(MAX_PATTERN_SUBJECT):  # raises for the exponential shapes, whatever the length
        return MAX_PATTERN_SUBJECT
    if not fits(0):
        raise UnsafeSchema(f"a pattern costs too much to match at all: {pattern[:80]!r}")
    low, high = 0, MAX_PATTERN_SUBJECT  # fits(low) holds, fits(high) does not
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


__all__ = [
    "MAX_EXPANDED_NODES",
    "MAX_PATTERN_SUBJECT",
    "MAX_SCHEMA_BYTES",
    "MAX_SCHEMA_DEPTH",
    "PATTERN_BUDGET",
    "UnsafeSchema",
    "compile_input_schema",
    "subject_limit",
]
