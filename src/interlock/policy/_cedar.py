"""The only module that imports ``cedarpy``: parsing, schema validation, building pre-parsed
policy sets, and the authorization call.

Everything ``cedarpy`` raises is turned into a :class:`~interlock.errors.PolicyError` (at load)
or into an error outcome (at evaluation) here, so no third-party exception leaves this module.

    >>> files = {
    ...     "schema.cedarschema": b'entity Agent; entity Tool; action "tool.call" appliesTo '
    ...     b"{ principal: [Agent], resource: [Tool] };",
    ...     "entities.json": b"[]",
    ...     "p.cedar": b'@id("any") permit(principal, action, resource);',
    ... }
    >>> [p.id for p in compile_files(files).policies]
    ['any']
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import cedarpy
from cedarpy import pst

from interlock.errors import PolicyError
from interlock.policy.argschema import ArgType, SchemaReadError, read_arg_types

__all__ = [
    "ENTITIES_FILE",
    "SCHEMA_FILE",
    "Compiled",
    "CompiledPolicy",
    "Outcome",
    "PolicySetHandle",
    "Uid",
    "authorize",
    "build_policy_set",
    "check_files",
    "compile_files",
    "policy_files",
]

SCHEMA_FILE: Final = "schema.cedarschema"
ENTITIES_FILE: Final = "entities.json"
#: policy test cases live here; they are signed with the bundle but are not policies
TESTS_PREFIX: Final = "tests/"

#: an entity uid as ``(type, id)``, e.g. ``("Action", "tool.call")``
Uid = tuple[str, str]
#: an opaque pre-parsed ``cedarpy.PolicySet``
PolicySetHandle = Any

#: ``(decision, reasons, errors)``: decision is ``"Allow"``, ``"Deny"``, ``"NoDecision"`` or
#: ``"Exception"`` (cedarpy raised); reasons are Cedar policy ids; errors are messages.
Outcome = tuple[str, list[str], list[str]]

_EVAL_ERROR_RE: Final = re.compile(r"^error while evaluating policy `(.*?)`: ")
_EVAL_ERROR_GREEDY_RE: Final = re.compile(r"^error while evaluating policy `(.*)`: ")


@dataclass(frozen=True, slots=True, kw_only=True)
class CompiledPolicy:
    """One static policy, its identity and the parts of its scope used for partitioning.

    ``actions`` is None when the policy applies to any action; otherwise the uids named by
    ``action == A`` / ``action in [A, B]`` (which also match descendants of those actions).
    ``resource_uid`` is set for ``resource == R``; ``resource_type`` for ``resource == R`` and
    ``resource is T [in E]``; both are None for any other resource constraint.
    """

    id: str
    file: str
    index: int
    effect: Literal["permit", "forbid"]
    obligation: str | None
    actions: tuple[Uid, ...] | None
    resource_type: str | None
    resource_uid: Uid | None
    node: pst.Template = dataclasses.field(repr=False, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Compiled:
    """A bundle's parsed and schema-validated contents."""

    policies: tuple[CompiledPolicy, ...]
    entities: cedarpy.Entities = dataclasses.field(repr=False, compare=False)
    #: every action entity in the store -> its transitive ancestors (from schema and entities)
    action_ancestors: Mapping[Uid, frozenset[Uid]]
    #: the declared type of ``context.args`` per action (see :mod:`interlock.policy.argschema`)
    arg_types: Mapping[str, ArgType] = dataclasses.field(default_factory=dict)
    #: every non-action entity uid a policy or ``entities.json`` names
    named: frozenset[Uid] = frozenset()


def policy_files(paths: Iterable[str]) -> list[str]:
    """The policy files of a bundle, in evaluation-report order: ``*.cedar`` outside ``tests/``."""
    return sorted(p for p in paths if p.endswith(".cedar") and not p.startswith(TESTS_PREFIX))


def compile_files(files: Mapping[str, bytes]) -> Compiled:
    """Parse and validate a bundle's files (relative path -> bytes).

    Raises:
        PolicyError: listing every problem found (parse errors, schema validation errors,
            duplicate policy ids, templates).
    """
    compiled, problems = _compile(files)
    if problems or compiled is None:
        listing = "; ".join(problems) if problems else "bundle could not be compiled"
        raise PolicyError(
            f"policy bundle is invalid: {listing}; fix it and run `interlock policy validate`",
            problems=len(problems),
        )
    return compiled


def check_files(files: Mapping[str, bytes]) -> list[str]:
    """Every problem :func:`compile_files` would raise for, as messages (empty when valid)."""
    return _compile(files)[1]


def _compile(files: Mapping[str, bytes]) -> tuple[Compiled | None, list[str]]:
    problems: list[str] = []
    texts: dict[str, str] = {}
    for path in sorted(files):
        if path in (ENTITIES_FILE, SCHEMA_FILE) or path.endswith(".cedar"):
            try:
                texts[path] = files[path].decode("utf-8")
            except UnicodeDecodeError:
                problems.append(f"{path}: not UTF-8 text")

    schema: cedarpy.Schema | None = None
    arg_types: dict[str, ArgType] = {}
    if SCHEMA_FILE not in files:
        problems.append(f"the bundle has no {SCHEMA_FILE}")
    elif SCHEMA_FILE in texts:
        try:
            schema = cedarpy.Schema.from_str(texts[SCHEMA_FILE])
        except ValueError as exc:
            problems.append(f"{SCHEMA_FILE}: {_one_line(exc)}")
        else:
            try:
                arg_types = read_arg_types(texts[SCHEMA_FILE])
            except SchemaReadError as exc:
                # Cedar accepted it but Interlock cannot read the argument types it declares:
                # refuse the bundle rather than let requests through unchecked
                problems.append(
                    f"{SCHEMA_FILE}: Interlock cannot read the declared argument types: {exc}"
                )

    entities: cedarpy.Entities | None = None
    if ENTITIES_FILE not in files:
        problems.append(f"the bundle has no {ENTITIES_FILE}")
    elif ENTITIES_FILE in texts and schema is not None:
        try:
            # With the schema, Cedar checks the entities against it and adds the schema's
            # action entities (and their `in` hierarchy) to the store.
            entities = cedarpy.Entities.from_json_str(texts[ENTITIES_FILE], schema)
        except ValueError as exc:
            problems.append(f"{ENTITIES_FILE}: {_one_line(exc)} (checked against {SCHEMA_FILE})")

    policies: list[CompiledPolicy] = []
    for path in policy_files(files):
        if path not in texts:
            continue
        policies.extend(_parse_file(path, texts[path], len(policies), problems))
        if schema is not None:
            problems.extend(_validate_file(path, texts[path], schema))

    seen: dict[str, str] = {}
    for policy in policies:
        if policy.id in seen:
            problems.append(
                f"{policy.file}: policy id {policy.id!r} is also used in {seen[policy.id]}; "
                "every @id must be unique so decisions name one policy"
            )
        else:
            seen[policy.id] = policy.file

    if problems or entities is None:
        return None, problems
    try:
        store = json.loads(str(entities))
        ancestors = _action_ancestors(store)
        named = _named_uids(store, policies)
    except (ValueError, TypeError, KeyError) as exc:
        return None, [f"cannot read the action hierarchy: {exc}"]
    return Compiled(
        policies=tuple(policies),
        entities=entities,
        action_ancestors=ancestors,
        arg_types=arg_types,
        named=named,
    ), []


def _named_uids(store: list[dict[str, Any]], policies: Sequence[CompiledPolicy]) -> frozenset[Uid]:
    """Every entity uid in the store or written in a policy (scope or condition), except
    actions: the ids whose case and slash variants requests may not use."""
    found: set[Uid] = set()
    for entity in store:
        inner = entity["uid"].get("__entity", entity["uid"])
        found.add((str(inner["type"]), str(inner["id"])))
    stack: list[Any] = [p.node for p in policies]
    while stack:
        node = stack.pop()
        if isinstance(node, pst.EntityUid):
            found.add(_uid(node))
        elif dataclasses.is_dataclass(node) and not isinstance(node, type):
            stack.extend(getattr(node, f.name) for f in dataclasses.fields(node))
        elif isinstance(node, tuple | list):
            stack.extend(node)
    return frozenset(u for u in found if not (u[0] == "Action" or u[0].endswith("::Action")))


def _parse_file(path: str, text: str, start: int, problems: list[str]) -> list[CompiledPolicy]:
    try:
        parsed = cedarpy.policies_to_pst(text)
    except ValueError as exc:
        problems.append(f"{path}: cannot parse policies: {_one_line(exc)}")
        return []
    if parsed.templates or parsed.template_links:
        problems.append(f"{path}: templates (`?principal`, `?resource`) are not supported")
        return []
    out: list[CompiledPolicy] = []
    # Cedar names the policies of one parse policy0, policy1, ... in source order.
    for n, key in enumerate(sorted(parsed.static_policies, key=_positional)):
        node = parsed.static_policies[key]
        annotations = node.annotations
        policy_id = annotations.get("id") or f"{path}#{n}"
        obligation = annotations.get("obligation") or None
        rtype, ruid = _resource_scope(node.resource)
        out.append(
            CompiledPolicy(
                id=policy_id,
                file=path,
                index=start + n,
                effect=node.effect,
                obligation=obligation,
                actions=_action_scope(node.action),
                resource_type=rtype,
                resource_uid=ruid,
                node=dataclasses.replace(node, id=policy_id),
            )
        )
    return out


def _validate_file(path: str, text: str, schema: cedarpy.Schema) -> list[str]:
    try:
        result = cedarpy.validate_policies(text, schema)
    except ValueError as exc:
        return [f"{path}: cannot validate: {_one_line(exc)}"]
    if result.validation_passed:
        return []
    names: Mapping[str, str] = result.id_annotations_by_policy_id
    out: list[str] = []
    for error in result.errors:
        pid = error.policy_id
        label = names.get(pid) or (f"{path}#{_positional(pid)}" if pid else path)
        out.append(f"{path}: policy {label!r} does not validate against the schema: {error.error}")
    return out or [f"{path}: does not validate against the schema"]


def _positional(policy_id: str) -> int:
    digits = policy_id.removeprefix("policy")
    return int(digits) if digits.isdigit() else -1


def _uid(uid: pst.EntityUid) -> Uid:
    return (str(uid.type), uid.id)


def _action_scope(scope: pst.ActionConstraint) -> tuple[Uid, ...] | None:
    if isinstance(scope, pst.ActionEq):
        return (_uid(scope.entity),)
    if isinstance(scope, pst.ActionIn):
        return tuple(_uid(e) for e in scope.entities)
    # ScopeAny, or a constraint this code does not know: treat it as "any action", which
    # only ever adds the policy to more partitions (a superset never changes Cedar's answer).
    return None


def _resource_scope(scope: pst.PrincipalOrResourceConstraint) -> tuple[str | None, Uid | None]:
    if isinstance(scope, pst.ScopeEq) and isinstance(scope.entity, pst.EntityUid):
        uid = _uid(scope.entity)
        return uid[0], uid
    if isinstance(scope, pst.ScopeIs | pst.ScopeIsIn):
        return str(scope.entity_type), None
    # `resource`, `resource in E`: may apply to any resource type (E's descendants are
    # whatever the entity store says), so it goes to every resource partition.
    return None, None


def _action_ancestors(entities: list[dict[str, Any]]) -> dict[Uid, frozenset[Uid]]:
    def uid_of(value: Mapping[str, Any]) -> Uid:
        inner = value.get("__entity", value)
        return (str(inner["type"]), str(inner["id"]))

    parents: dict[Uid, list[Uid]] = {}
    for entity in entities:
        uid = uid_of(entity["uid"])
        if uid[0] == "Action" or uid[0].endswith("::Action"):
            parents[uid] = [uid_of(p) for p in entity.get("parents", [])]
    closure: dict[Uid, frozenset[Uid]] = {}
    for uid in parents:
        seen: set[Uid] = set()
        stack = list(parents[uid])
        while stack:
            parent = stack.pop()
            if parent not in seen:
                seen.add(parent)
                stack.extend(parents.get(parent, ()))
        closure[uid] = frozenset(seen)
    return closure


def build_policy_set(policies: Sequence[CompiledPolicy]) -> PolicySetHandle:
    """A pre-parsed ``cedarpy.PolicySet`` of ``policies``, keyed by their Interlock ids.

    Raises:
        PolicyError: if cedarpy refuses the set.
    """
    nodes = pst.PolicySet(
        templates=pst.FrozenMap(),
        static_policies=pst.FrozenMap({p.id: p.node for p in policies}),
        template_links=(),
    )
    try:
        return cedarpy.PolicySet.from_pst(nodes)
    except (ValueError, TypeError) as exc:
        raise PolicyError(f"cannot build a policy set: {_one_line(exc)}") from exc


_CONTEXT_WORD = re.compile(r"\bcontext\b")


def reads_context(policy_set: PolicySetHandle) -> bool:
    """Whether any policy of ``policy_set`` may read ``context``: the word appears in its text.

    Conservative on purpose: the word inside a string literal also counts, which only costs
    time. Cedar policies reach the request context only through the variable ``context``, so
    a set without the word decides the same with any context — and cedarpy spends ~45 µs
    building a non-empty context, most of a decision.

    Never raises.
    """
    try:
        return _CONTEXT_WORD.search(str(policy_set)) is not None
    except Exception:  # noqa: BLE001 - if the set cannot be printed, assume it reads context
        return True


def authorize(
    policy_set: PolicySetHandle, entities: cedarpy.Entities, request: dict[str, Any]
) -> Outcome:
    """Run Cedar. Never raises: an exception from cedarpy becomes an ``"Exception"`` outcome."""
    try:
        result = cedarpy.is_authorized(request, policy_set, entities)
        diagnostics = result.diagnostics
        return result.decision.value, diagnostics.reasons, diagnostics.errors
    except Exception as exc:  # noqa: BLE001 - third-party boundary: anything cedarpy raises denies
        return "Exception", [], [f"cedarpy raised {type(exc).__name__}: {_one_line(exc)}"]
    except BaseException as exc:
        # a Rust panic (pyo3 PanicException) derives from BaseException: deny on it too
        if type(exc).__name__ != "PanicException":
            raise
        return "Exception", [], [f"cedarpy panicked: {_one_line(exc)}"]


def erroring_policy(message: str, known: Mapping[str, object]) -> str | None:
    """The policy id named by a Cedar evaluation error message, if it is one of ``known``."""
    for pattern in (_EVAL_ERROR_RE, _EVAL_ERROR_GREEDY_RE):
        match = pattern.match(message)
        if match and match.group(1) in known:
            return match.group(1)
    return None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
