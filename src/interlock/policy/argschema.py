"""The argument types a bundle's schema declares, and the check a request's ``args`` must pass
before Cedar runs.

    >>> types = read_arg_types(
    ...     'entity Tool; action "tool.call" appliesTo { principal: [Tool], resource: [Tool],'
    ...     ' context: { args: { query?: String, argv?: Set<String> } } };'
    ... )
    >>> check_args(types["tool.call"], {"query": "cedar", "extra": [1, 2]}) is None
    True
    >>> check_args(types["tool.call"], {"argv": [["rm"], ["-rf"]]})
    'args.argv[0]: expected String, got a list'

Cedar's schema types the *policies* (checked at load). A request's context is built from the
agent's JSON without a schema, so a value of the wrong type used to reach Cedar and make a
policy error (``POLICY_ERROR``) — or, where no policy happened to read it, be allowed with a
shape the tool did not expect. Interlock reads the declared type of ``context.args`` for each
action once per bundle (:func:`read_arg_types`) and refuses, before Cedar, a request whose
args do not fit it (:func:`check_args`, ``MALFORMED_REQUEST``):

* a declared attribute must have its declared type: ``String`` a JSON string, ``Long`` an
  integer (not a boolean) in 64 bits, ``Bool`` a boolean, ``Set<T>`` a list of ``T``, a record
  an object checked the same way, recursively;
* a required (non-``?``) attribute must be present;
* attributes the schema does not declare are allowed, at every level: no validated policy can
  read them, they are recorded on the ledger, and a capability's argument checks may still
  constrain them;
* entity and extension types (``ipaddr``, ``decimal``, ...) are not checked here: Cedar cannot
  receive them from JSON without the reserved ``__entity``/``__extn`` keys, which the engine
  refuses, so a policy reading one errors and denies (``POLICY_ERROR``) as before.

The check sees what Cedar sees: after floats became decimal strings and null-valued attributes
were dropped (:mod:`interlock.pipeline`). Only actions of the empty namespace are read: requests
name ``Action::"<action>"``. Both schema forms are read: the Cedar form (``.cedarschema`` text)
and the JSON form. Pure: no I/O, no cedarpy (Cedar has already accepted the text when this runs).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

__all__ = ["ArgType", "SchemaReadError", "check_args", "read_arg_types"]

#: a compiled type: ``("any",)``, ``("String",)``, ``("Long",)``, ``("Bool",)``,
#: ``("Set", element)`` or ``("Record", {name: (required, type)})``
ArgType = tuple[Any, ...]

_ANY: Final[ArgType] = ("any",)
_STRING: Final[ArgType] = ("String",)
_LONG: Final[ArgType] = ("Long",)
_BOOL: Final[ArgType] = ("Bool",)
_I64: Final = (-(2**63), 2**63 - 1)

_PRIMITIVES: Final[Mapping[str, ArgType]] = {
    "String": _STRING,
    "Long": _LONG,
    "Bool": _BOOL,
    "Boolean": _BOOL,  # the JSON form's spelling
}


class SchemaReadError(ValueError):
    """The schema text could not be read for its argument types (the bundle is refused)."""


# -- checking -----------------------------------------------------------------------------------


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    if value is None:
        return "null"
    return type(value).__name__


def _check(t: ArgType, value: object, where: str) -> str | None:
    tag = t[0]
    if tag == "String":
        return None if type(value) is str else f"{where}: expected String, got {_kind(value)}"
    if tag == "Long":
        if type(value) is int and _I64[0] <= value <= _I64[1]:
            return None
        return f"{where}: expected Long (a 64-bit integer), got {_kind(value)}"
    if tag == "Bool":
        return None if type(value) is bool else f"{where}: expected Bool, got {_kind(value)}"
    if tag == "Set":
        if not isinstance(value, list | tuple):
            return f"{where}: expected Set (a list), got {_kind(value)}"
        element: ArgType = t[1]
        if element[0] == "any":
            return None
        for i, item in enumerate(value):
            problem = _check(element, item, f"{where}[{i}]")
            if problem is not None:
                return problem
        return None
    if tag == "Record":
        if not isinstance(value, Mapping):
            return f"{where}: expected a record (an object), got {_kind(value)}"
        return _check_record(t[1], value, where)
    return None  # "any"


def _check_record(
    attrs: Mapping[str, tuple[bool, ArgType]], value: Mapping[str, Any], where: str
) -> str | None:
    for name, item in value.items():
        declared = attrs.get(name)
        if declared is not None:
            problem = _check(declared[1], item, f"{where}.{name}")
            if problem is not None:
                return problem
    for name, (required, _) in attrs.items():
        if required and name not in value:
            return f"{where}.{name}: required by the schema, missing"
    return None


def _fits(t: ArgType, value: object) -> bool:
    """Whether ``value`` fits ``t``: :func:`_check` without building paths (the hot path)."""
    tag = t[0]
    if tag == "String":
        return type(value) is str
    if tag == "Record":
        if type(value) is not dict and not isinstance(value, Mapping):
            return False
        attrs: Mapping[str, tuple[bool, ArgType]] = t[1]
        for name, item in value.items():
            declared = attrs.get(name)
            if declared is not None and not _fits(declared[1], item):
                return False
        for name, (required, _) in attrs.items():  # noqa: SIM110 - a loop beats all() here
            if required and name not in value:
                return False
        return True
    if tag == "Set":
        if type(value) is not list and type(value) is not tuple:
            return False
        element: ArgType = t[1]
        if element is _STRING or element[0] == "String":
            for item in value:  # noqa: SIM110 - the hot path: a loop beats all() here
                if type(item) is not str:
                    return False
            return True
        return all(_fits(element, item) for item in value)
    if tag == "Long":
        return type(value) is int and _I64[0] <= value <= _I64[1]
    if tag == "Bool":
        return type(value) is bool
    return True  # "any"


def check_args(declared: ArgType, args: Mapping[str, Any]) -> str | None:
    """Why ``args`` does not fit ``declared`` (the type of ``context.args``), or None.

    The text names the first offending path (``args.argv[0]``) and the types, never the value.
    Never raises on JSON values.
    """
    if _fits(declared, args):
        return None
    if declared[0] == "Record":
        return _check_record(declared[1], args, "args")
    return _check(declared, args, "args")


# -- reading the Cedar form ---------------------------------------------------------------------

_TOKEN: Final = re.compile(
    r"""
    (?P<ws>\s+|//[^\n]*)
  | (?P<str>"(?:[^"\\]|\\.)*")
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<sep>::)
  | (?P<punct>[{}\[\]<>(),;:?=@])
    """,
    re.VERBOSE | re.DOTALL,
)

#: an unresolved type: ("ref", namespace, path) | ("Set", t) | ("Record", {n: (req, t)})
_Raw = tuple[Any, ...]


class _Parser:
    """Recursive descent over the Cedar schema grammar (cedar-policy docs, "Schema grammar"),
    keeping common types and the context of empty-namespace actions, skipping the rest."""

    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                raise SchemaReadError(f"unexpected character {text[pos]!r} at offset {pos}")
            pos = m.end()
            kind = m.lastgroup or ""
            if kind != "ws":
                self.tokens.append((kind, m.group()))
        self.i = 0
        self.commons: dict[tuple[str, str], _Raw] = {}
        self.contexts: dict[str, tuple[str, _Raw]] = {}

    # token helpers
    def peek(self, offset: int = 0) -> str:
        j = self.i + offset
        return self.tokens[j][1] if j < len(self.tokens) else ""

    def take(self, expected: str | None = None) -> str:
        if self.i >= len(self.tokens):
            raise SchemaReadError("unexpected end of schema")
        text = self.tokens[self.i][1]
        if expected is not None and text != expected:
            raise SchemaReadError(f"expected {expected!r}, found {text!r}")
        self.i += 1
        return text

    def name(self) -> str:
        kind, text = self.tokens[self.i] if self.i < len(self.tokens) else ("", "")
        if kind == "str":
            self.i += 1
            return str(json.loads(text))
        if kind == "ident":
            self.i += 1
            return text
        raise SchemaReadError(f"expected a name, found {text!r}")

    def path(self) -> str:
        parts = [self.take()]
        while self.peek() == "::" and self.tokens[self.i + 1][0] == "ident":
            self.take("::")
            parts.append(self.take())
        return "::".join(parts)

    def annotations(self) -> None:
        while self.peek() == "@":
            self.take("@")
            self.take()
            if self.peek() == "(":
                self.take("(")
                self.take()
                self.take(")")

    # grammar
    def schema(self) -> None:
        while self.i < len(self.tokens):
            self.annotations()
            if self.peek() == "namespace":
                self.take()
                ns = self.path()
                self.take("{")
                while self.peek() != "}":
                    self.decl(ns)
                self.take("}")
            else:
                self.decl("")

    def decl(self, ns: str) -> None:
        self.annotations()
        word = self.take()
        if word == "type":
            name = self.take()
            self.take("=")
            self.commons[(ns, name)] = self.type()
            self.take(";")
        elif word == "entity":
            self.entity()
        elif word == "action":
            self.action(ns)
        else:
            raise SchemaReadError(f"unexpected {word!r} where a declaration starts")

    def entity(self) -> None:
        self.names()
        if self.peek() == "enum":
            self.take()
            self.skip_brackets()
        if self.peek() == "in":
            self.take()
            self.refs()
        if self.peek() == "=":
            self.take()
        if self.peek() == "{":
            self.type()
        if self.peek() == "tags":
            self.take()
            self.type()
        self.take(";")

    def names(self) -> list[str]:
        out = [self.name()]
        while self.peek() == ",":
            self.take(",")
            out.append(self.name())
        return out

    def refs(self) -> None:
        if self.peek() == "[":
            self.skip_brackets()
            return
        self.ref()

    def ref(self) -> None:
        if self.tokens[self.i][0] == "str":
            self.take()
            return
        self.path()
        if self.peek() == "::":
            self.take("::")
            self.take()

    def skip_brackets(self) -> None:
        depth = 0
        while True:
            text = self.take()
            if text == "[":
                depth += 1
            elif text == "]":
                depth -= 1
                if depth == 0:
                    return

    def action(self, ns: str) -> None:
        names = self.names()
        context: _Raw | None = None
        if self.peek() == "in":
            self.take()
            self.refs()
        if self.peek() == "appliesTo":
            self.take()
            self.take("{")
            while self.peek() != "}":
                key = self.take()
                self.take(":")
                if key == "context":
                    context = self.type()
                elif key in ("principal", "resource"):
                    if self.peek() == "[":
                        self.skip_brackets()
                    else:
                        self.path()
                else:
                    raise SchemaReadError(f"unexpected {key!r} in appliesTo")
                if self.peek() == ",":
                    self.take(",")
            self.take("}")
        if self.peek() == "attributes":  # deprecated action attributes: a record literal
            self.take()
            self.type()
        self.take(";")
        if not ns and context is not None:
            for name in names:
                self.contexts[name] = (ns, context)

    def type(self) -> _Raw:
        if self.peek() == "{":
            self.take("{")
            attrs: dict[str, tuple[bool, _Raw]] = {}
            while self.peek() != "}":
                self.annotations()
                name = self.name()
                required = True
                if self.peek() == "?":
                    self.take("?")
                    required = False
                self.take(":")
                attrs[name] = (required, self.type())
                if self.peek() == ",":
                    self.take(",")
            self.take("}")
            return ("Record", attrs)
        if self.peek() == "Set" and self.peek(1) == "<":
            self.take()
            self.take("<")
            element = self.type()
            self.take(">")
            return ("Set", element)
        return ("ref", self.path())


class _Resolver:
    def __init__(self, commons: Mapping[tuple[str, str], _Raw]) -> None:
        self.commons = commons

    def resolve(self, ns: str, raw: _Raw, depth: int = 0) -> ArgType:
        if depth > 64:
            raise SchemaReadError("common types nest deeper than 64 levels (a cycle?)")
        tag = raw[0]
        if tag == "Record":
            return (
                "Record",
                {n: (req, self.resolve(ns, t, depth + 1)) for n, (req, t) in raw[1].items()},
            )
        if tag == "Set":
            return ("Set", self.resolve(ns, raw[1], depth + 1))
        path: str = raw[1]
        if "::" in path:
            head, _, last = path.rpartition("::")
            if head == "__cedar":
                return _PRIMITIVES.get(last, _ANY)
            found = self.commons.get((head, last))
            return _ANY if found is None else self.resolve(head, found, depth + 1)
        for space in (ns, ""):
            found = self.commons.get((space, path))
            if found is not None:
                return self.resolve(space, found, depth + 1)
        # a primitive, or an entity or extension type (not checked here, see the module doc)
        return _PRIMITIVES.get(path, _ANY)


def _args_of(context: ArgType) -> ArgType | None:
    if context[0] != "Record":
        return None
    found = context[1].get("args")
    return None if found is None else found[1]


def _read_cedar(text: str) -> dict[str, ArgType]:
    parser = _Parser(text)
    try:
        parser.schema()
    except IndexError as exc:
        raise SchemaReadError("unexpected end of schema") from exc
    resolver = _Resolver(parser.commons)
    out: dict[str, ArgType] = {}
    for action, (ns, raw) in parser.contexts.items():
        args = _args_of(resolver.resolve(ns, raw))
        if args is not None:
            out[action] = args
    return out


# -- reading the JSON form ----------------------------------------------------------------------


def _json_type(spec: Any) -> _Raw:
    if not isinstance(spec, Mapping) or not isinstance(spec.get("type"), str):
        raise SchemaReadError(f"not a JSON schema type: {spec!r:.80}")
    kind = spec["type"]
    if kind == "Record":
        attrs = spec.get("attributes", {})
        if not isinstance(attrs, Mapping):
            raise SchemaReadError("a Record's attributes must be an object")
        return (
            "Record",
            {
                str(n): (a.get("required", True) is not False, _json_type(a))
                for n, a in attrs.items()
                if isinstance(a, Mapping)
            },
        )
    if kind == "Set":
        return ("Set", _json_type(spec.get("element")))
    if kind in ("Entity", "Extension"):
        return ("ref", "__entity_or_extension")
    if kind == "EntityOrCommon":
        return ("ref", str(spec.get("name", "")))
    return ("ref", kind)  # a primitive or a common type's name


def _read_json(text: str) -> dict[str, ArgType]:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise SchemaReadError(f"not JSON: {exc}") from exc
    if not isinstance(doc, Mapping):
        raise SchemaReadError("a JSON schema is an object of namespaces")
    commons: dict[tuple[str, str], _Raw] = {}
    contexts: dict[str, _Raw] = {}
    for ns, body in doc.items():
        if not isinstance(body, Mapping):
            raise SchemaReadError(f"namespace {ns!r} is not an object")
        for name, spec in (body.get("commonTypes") or {}).items():
            commons[(str(ns), str(name))] = _json_type(spec)
        if ns != "":
            continue
        for action, spec in (body.get("actions") or {}).items():
            applies = spec.get("appliesTo") if isinstance(spec, Mapping) else None
            if isinstance(applies, Mapping) and "context" in applies:
                contexts[str(action)] = _json_type(applies["context"])
    resolver = _Resolver(commons)
    out: dict[str, ArgType] = {}
    for action, raw in contexts.items():
        args = _args_of(resolver.resolve("", raw))
        if args is not None:
            out[action] = args
    return out


def read_arg_types(text: str) -> dict[str, ArgType]:
    """The declared type of ``context.args`` of each empty-namespace action that declares one,
    from a schema in the Cedar form or the JSON form (which starts with ``{``).

    Raises:
        SchemaReadError: the text cannot be read (the caller refuses the bundle).
    """
    reader: Callable[[str], dict[str, ArgType]] = (
        _read_json if text.lstrip().startswith("{") else _read_cedar
    )
    try:
        return reader(text)
    except SchemaReadError:
        raise
    except (ValueError, TypeError, AttributeError, KeyError, RecursionError) as exc:
        raise SchemaReadError(f"{type(exc).__name__}: {exc}") from exc
