"""Cedar evaluation over a pre-parsed, partitioned policy bundle.

    >>> from interlock.policy import DEFAULT_BUNDLE, load_unsigned
    >>> engine = load_unsigned(DEFAULT_BUNDLE)
    >>> result = engine.evaluate(
    ...     principal="spiffe://acme.test/agent/researcher/summarizer",
    ...     action="tool.call",
    ...     resource_type="Tool",
    ...     resource_id="web_search",
    ...     args={"query": "cedar"},
    ...     context={},
    ...     now=1_700_000_000,
    ... )
    >>> result.permitted, result.code, result.policies
    (True, None, ('research-tools',))

How a request maps to Cedar (policies are written against exactly this):

================  ===========================================================
Cedar             Interlock
================  ===========================================================
``principal``     ``Agent::"<principal>"`` (the SPIFFE ID, verbatim)
``action``        ``Action::"<action>"`` (e.g. ``Action::"tool.call"``)
``resource``      ``<resource_type>::"<resource_id>"`` (e.g. ``Tool::"web_search"``)
``context``       ``{"args": <args>, "request": <context>, "time": <now>}``
================  ===========================================================

For ``shell.exec``, ``args`` also carries ``command``, the canonical command line derived from
``args.argv`` and ``args.executable`` (:mod:`interlock.core.command`); an argv it cannot read
denies with ``POLICY_ERROR`` (the gate's intake refuses it earlier, ``MALFORMED_REQUEST``).

Entity uids are passed to Cedar in the structured ``{"type", "id"}`` form, so any id string
works (no escaping). The bundle's ``entities.json`` (plus the schema's action entities) is the
entity store: ``principal in Team::"research"`` holds when the agent is listed in that team.

The schema types the *policies* (checked once, at load); requests are not validated against it,
because ``args`` and ``context`` are free-form JSON from the agent. Consequently a policy must
guard optional attributes with ``has`` (``context.args has argv && ...``), and a value of the
wrong type makes the policy error — which denies (below). The gate maps floats to decimal
strings and drops null-valued object attributes (absent, ``has`` is false) before they get
here; JSON values Cedar cannot represent (a ``null`` in a list, integers outside 64 bits) and
objects using Cedar's reserved JSON escapes
(``"__entity"``, ``"__extn"``, ``"__expr"``) also deny with ``POLICY_ERROR``: Cedar must see the
same value the tool will receive.

Decisions (DESIGN §3), fail-closed:

* Cedar ``Allow`` and no evaluation error anywhere: permitted; ``policies`` are the permits that
  determined it and ``obligations`` the values of their ``@obligation("...")`` annotations.
* any evaluation error in any policy: ``POLICY_ERROR`` — Cedar skips a policy that errors, and a
  skipped ``forbid`` must never turn into an allow. This holds even when Cedar says ``Allow``.
* ``Deny`` with satisfied forbids: ``POLICY_FORBID`` (``policies`` names them).
* ``Deny`` with none: ``POLICY_NO_PERMIT``.
* ``NoDecision``, anything unexpected, or an exception from cedarpy: ``POLICY_ERROR``.

Policy ids are the ``@id("...")`` annotations, or ``<file>#<n>`` (n-th policy of the file,
from 0) for a policy without one.

Partitioning (DESIGN §5, §10 P2): Cedar evaluates every policy of a set in turn, so the engine
pre-builds one ``PolicySet`` per action holding only the policies whose action scope can match it
(``action == A``, ``action in [..]`` naming A or one of its action groups, or no action
constraint); within an action, policies with ``resource == R`` or ``resource is T`` are further
split by resource. Unknown actions get the policies with no action constraint. Including a policy
whose scope cannot match never changes Cedar's answer, so every partition answers exactly as the
whole set would.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from interlock.core.command import command_context
from interlock.core.ids import fold
from interlock.core.model import ReasonCode
from interlock.errors import MalformedRequest
from interlock.policy import _cedar
from interlock.policy._cedar import Compiled, CompiledPolicy, PolicySetHandle, Uid
from interlock.policy.argschema import ArgType, check_args
from interlock.policy.bundle import PolicyBundle, read_bundle_files

__all__ = ["PolicyEngine", "PolicyResult", "load_unsigned"]

_SHELL_EXEC: Final = "shell.exec"

#: partitioning may copy policies into several sets; past this many copies per policy (plus a
#: constant) an action is not split by resource any more (bounds load time and memory).
_COPY_BUDGET_PER_POLICY: Final = 8
_COPY_BUDGET_CONSTANT: Final = 10_000

#: at most this many distinct (decision, reasons) interpretations are memoised
_RESULT_CACHE_SIZE: Final = 4096

_RESERVED: Final = ('"__entity"', '"__extn"', '"__expr"')


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyResult:
    """The policy stage's answer. ``code`` is None exactly when ``permitted``.

    ``policies`` are the determining policies (permits for an allow, forbids for
    ``POLICY_FORBID``, the erroring ones for ``POLICY_ERROR`` when Cedar names them), in bundle
    order. ``obligations`` (sorted, unique) come from the determining permits' ``@obligation``
    annotations and are empty on a deny.

        >>> PolicyResult(permitted=False, code=ReasonCode.POLICY_NO_PERMIT, detail="x").to_json()
        {'permitted': False, 'code': 'POLICY_NO_PERMIT', 'detail': 'x', 'policies': [], \
'obligations': []}

    Raises:
        ValueError: if ``code`` is None while not permitted, or set while permitted.
    """

    permitted: bool
    code: ReasonCode | None
    detail: str
    policies: tuple[str, ...] = ()
    obligations: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.permitted != (self.code is None):
            raise ValueError("PolicyResult: code must be None exactly when permitted")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "permitted": self.permitted,
            "code": None if self.code is None else self.code.value,
            "detail": self.detail,
            "policies": list(self.policies),
            "obligations": list(self.obligations),
        }


@dataclass(frozen=True, slots=True)
class _ResourceIndex:
    """The policy sets of one action: by resource uid, by resource type, else ``general``."""

    general: PolicySetHandle
    by_type: Mapping[str, PolicySetHandle]
    by_uid: Mapping[Uid, PolicySetHandle]

    def select(self, resource_type: str, resource_id: str) -> PolicySetHandle:
        if self.by_uid:
            found = self.by_uid.get((resource_type, resource_id))
            if found is not None:
                return found
        if self.by_type:
            found = self.by_type.get(resource_type)
            if found is not None:
                return found
        return self.general


class _Partitioner:
    """Builds the partitions, sharing one ``PolicySet`` between identical policy lists."""

    def __init__(self, *, budget: int) -> None:
        self._sets: dict[tuple[int, ...], PolicySetHandle] = {}
        self._budget = budget  # policy copies still allowed

    @property
    def set_count(self) -> int:
        return len(self._sets)

    def policy_set(self, policies: Iterable[CompiledPolicy]) -> PolicySetHandle:
        ordered = sorted(policies, key=lambda p: p.index)
        key = tuple(p.index for p in ordered)
        found = self._sets.get(key)
        if found is None:
            found = _cedar.build_policy_set(ordered)
            self._sets[key] = found
            self._budget -= len(ordered)
        return found

    def index(self, policies: Sequence[CompiledPolicy]) -> _ResourceIndex:
        general = [p for p in policies if p.resource_type is None]
        by_type: dict[str, list[CompiledPolicy]] = defaultdict(list)
        by_uid: dict[Uid, list[CompiledPolicy]] = defaultdict(list)
        for p in policies:
            if p.resource_uid is not None:
                by_uid[p.resource_uid].append(p)
            elif p.resource_type is not None:
                by_type[p.resource_type].append(p)
        # every split set repeats the general policies (and its type's): check the cost first
        cost = (
            len(general) * (1 + len(by_type) + len(by_uid))
            + sum(len(ps) for ps in by_type.values())
            + sum(len(by_type.get(uid[0], ())) + len(ps) for uid, ps in by_uid.items())
        )
        if not (by_type or by_uid) or cost > self._budget:
            return _ResourceIndex(self.policy_set(policies), {}, {})
        return _ResourceIndex(
            self.policy_set(general),
            {t: self.policy_set([*general, *ps]) for t, ps in sorted(by_type.items())},
            {
                uid: self.policy_set([*general, *by_type.get(uid[0], ()), *ps])
                for uid, ps in sorted(by_uid.items())
            },
        )


_I64 = (-(2**63), 2**63 - 1)

#: entries of :class:`PolicyEngine`'s memo of context-free answers (cleared when full)
_MEMO_SIZE = 65_536


def _cedar_can_read(value: object) -> bool:
    """Whether Cedar can build a context value from ``value`` (strings, booleans, 64-bit
    integers, lists and objects; no null, no float)."""
    stack = [value]
    while stack:
        v = stack.pop()
        t = type(v)
        if t is bool:
            continue
        if isinstance(v, str) and t is str:
            if not v.isascii():
                try:
                    v.encode("utf-8")
                except UnicodeEncodeError:
                    return False  # a lone surrogate: Cedar refuses to build it
            continue
        if t is int:
            if not _I64[0] <= v <= _I64[1]:  # type: ignore[operator]
                return False
        elif isinstance(v, Mapping):
            stack.extend(v.values())
        elif t is list or t is tuple:
            stack.extend(v)  # type: ignore[arg-type]
        else:
            return False
    return True


def _encode_default(value: object) -> object:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


_RESERVED_DETAIL = "args or context uses a reserved Cedar JSON key (__entity, __extn, __expr)"
_RESERVED_BYTES = tuple(r.encode() for r in _RESERVED)

_ENCODER: Final = json.JSONEncoder(
    allow_nan=False, separators=(",", ":"), default=_encode_default
).encode


class PolicyEngine:
    """Evaluates requests against one bundle's pre-parsed, partitioned policies.

    Build it with :meth:`from_bundle` (signed bundles, for enforcement) or :func:`load_unsigned`
    (tests, validation, diffs). Safe to share between threads: the pre-parsed policy sets and
    entities never change; the only mutable state is two bounded memos: the answers of policy
    sets that cannot read ``context`` (by principal, action and resource), and the (pure)
    mapping from Cedar's answer to a :class:`PolicyResult`.
    """

    __slots__ = (
        "_arg_types",
        "_entities",
        "_fallback",
        "_folded",
        "_memo",
        "_named",
        "_policies",
        "_reads_context",
        "_results",
        "_routes",
        "_set_count",
    )

    def __init__(self, compiled: Compiled) -> None:
        """Partition ``compiled`` (use :meth:`from_bundle` or :func:`load_unsigned`).

        Raises:
            PolicyError: if cedarpy refuses to build a partition.
        """
        policies = compiled.policies
        self._policies: dict[str, CompiledPolicy] = {p.id: p for p in policies}
        self._entities = compiled.entities

        unconstrained = [p for p in policies if p.actions is None]
        naming: dict[Uid, list[CompiledPolicy]] = defaultdict(list)
        for p in policies:
            for uid in p.actions or ():
                naming[uid].append(p)
        partitioner = _Partitioner(
            budget=_COPY_BUDGET_PER_POLICY * len(policies) + _COPY_BUDGET_CONSTANT
        )

        # Every action a request can name that some policy scope can match: the store's actions
        # (which carry the `in` hierarchy) and any action named in a scope. Requests always use
        # the entity type `Action`.
        actions = {uid for uid in (*compiled.action_ancestors, *naming) if uid[0] == "Action"}
        routes: dict[str, tuple[_ResourceIndex, dict[str, str]]] = {}
        for uid in sorted(actions):
            applicable = {p.index: p for p in unconstrained}
            for scope_uid in (uid, *sorted(compiled.action_ancestors.get(uid, ()))):
                applicable.update((p.index, p) for p in naming.get(scope_uid, ()))
            index = partitioner.index([applicable[i] for i in sorted(applicable)])
            routes[uid[1]] = (index, {"type": "Action", "id": uid[1]})
        self._routes = routes
        self._fallback = partitioner.index(unconstrained)
        self._set_count = partitioner.set_count
        self._results: dict[tuple[str, ...], PolicyResult] = {}
        #: (policy set, principal, action, resource) -> result, for sets no policy of which
        #: reads ``context``: Cedar's answer then depends on nothing else (entities are fixed)
        self._memo: dict[tuple[int, str, str, str, str], PolicyResult] = {}
        self._reads_context: dict[int, bool] = {}
        arg_types = dict(compiled.arg_types)
        declared_exec = arg_types.get(_SHELL_EXEC)
        if declared_exec is not None and declared_exec[0] == "Record":
            # `command` is derived by Interlock (command_context), replacing whatever a request
            # carried: it is neither required from nor checked against the caller
            attrs = {k: v for k, v in declared_exec[1].items() if k != "command"}
            arg_types[_SHELL_EXEC] = ("Record", attrs)
        self._arg_types: Mapping[str, ArgType] = arg_types
        folded: dict[tuple[str, str], set[str]] = defaultdict(set)
        for rtype, rid in compiled.named:
            folded[(rtype, fold(rid))].add(rid)
        self._named: frozenset[tuple[str, str]] = frozenset(compiled.named)
        #: (type, fold(id)) -> the exact ids the bundle names under that key
        self._folded: Mapping[tuple[str, str], frozenset[str]] = {
            k: frozenset(v) for k, v in folded.items()
        }

    @classmethod
    def from_bundle(cls, bundle: PolicyBundle) -> PolicyEngine:
        """The engine for a verified, signed bundle (from ``load_bundle`` / ``from_blob``).

        Raises:
            PolicyError: if cedarpy refuses to build a partition.
        """
        return cls(bundle._compiled)

    @property
    def policy_ids(self) -> tuple[str, ...]:
        """Every policy id, in bundle order."""
        return tuple(self._policies)

    @property
    def partition_count(self) -> int:
        """How many distinct pre-parsed ``PolicySet`` partitions were built."""
        return self._set_count

    def request_problem(
        self, *, action: str, resource_type: str, resource_id: str, args: Mapping[str, Any]
    ) -> str | None:
        """Why the request cannot be put to Cedar as it is (``MALFORMED_REQUEST``), or None.

        Two checks against this bundle, both pure:

        * ``args`` must fit the type the schema declares for ``context.args`` of ``action``
          (:mod:`interlock.policy.argschema`; undeclared attributes are allowed);
        * the resource id must not be a near-duplicate of an id the bundle names (in a policy
          or ``entities.json``): same type, same :func:`interlock.core.ids.fold` (case, repeated
          or trailing ``/``), different string. Cedar compares ids exactly, so
          ``Tool::"RM"`` would otherwise slip past a forbid on ``Tool::"rm"``.

        Never raises on JSON values.
        """
        declared = self._arg_types.get(action)
        if declared is not None:
            problem = check_args(declared, args)
            if problem is not None:
                return f"arguments do not fit the schema of {action!r}: {problem}"
        if self._folded and (resource_type, resource_id) not in self._named:
            named = self._folded.get((resource_type, fold(resource_id)))
            if named is not None and resource_id not in named:
                asked = json.dumps(resource_id, ensure_ascii=False)
                other = json.dumps(min(named), ensure_ascii=False)
                return (
                    f"resource id {asked} differs from {resource_type}::{other}, which"
                    " the policy bundle names, only by case or by repeated or trailing '/':"
                    " ids are compared exactly, so such a variant is refused as ambiguous"
                )
        return None

    def evaluate(
        self,
        *,
        principal: str,
        action: str,
        resource_type: str,
        resource_id: str,
        args: Mapping[str, Any],
        context: Mapping[str, Any],
        now: int,
        env: Mapping[str, Any] | None = None,
    ) -> PolicyResult:
        """Decide one request. Pure and deterministic: no clock, no I/O.

        ``now`` is the request's time in integer epoch seconds (``context.time`` in Cedar);
        ``env`` the node's attestation (``context.env``; absent when None).

        Returns a :class:`PolicyResult`: permitted, or denied with ``POLICY_FORBID``,
        ``POLICY_NO_PERMIT`` or ``POLICY_ERROR`` (see the module docstring).

        Raises:
            TypeError: if ``now`` is not an ``int`` (a programmer error, not a denial).
        """
        if type(now) is not int:
            raise TypeError("now must be an int (epoch seconds)")
        route = self._routes.get(action)
        if route is None:
            index, action_uid = self._fallback, {"type": "Action", "id": action}
        else:
            index, action_uid = route
        if action == _SHELL_EXEC:
            # the canonical command (interlock.core.command): derived here, the one place every
            # decision, replay and `policy test` passes, so that all see the same form
            try:
                args = command_context(args)
            except MalformedRequest as exc:  # intake refuses these; `policy test` does not
                return _error(f"shell.exec arguments Cedar cannot be given: {exc.message}")
        ctx: dict[str, Any] = {"args": args, "request": context, "time": now}
        if env is not None:
            ctx["env"] = env
        policy_set = index.select(resource_type, resource_id)
        reads = self._reads_context.get(id(policy_set))
        if reads is None:
            reads = _cedar.reads_context(policy_set)
            self._reads_context[id(policy_set)] = reads
        request: dict[str, Any] = {
            "principal": {"type": "Agent", "id": principal},
            "action": action_uid,
            "resource": {"type": resource_type, "id": resource_id},
        }
        memo_key = None
        if reads:
            try:
                context_json = _ENCODER(ctx)
            except (TypeError, ValueError) as exc:
                return _error(f"args or context is not JSON Cedar can read: {exc}")
            if '"__' in context_json and any(r in context_json for r in _RESERVED):
                return _error(_RESERVED_DETAIL)
            request["context"] = context_json
        else:
            if not _cedar_can_read(args) or not _cedar_can_read(context):
                # no policy that can apply reads `context`, so Cedar is not asked to build it
                # (~45 µs): check here what building it would have refused, so the answer is
                # the same as if it had been passed
                return _error("args or context holds a value Cedar cannot represent")
            try:
                # only strings, booleans, 64-bit integers, lists and mappings are left
                blob = orjson.dumps(ctx, default=_encode_default)
            except TypeError as exc:  # orjson.JSONEncodeError: a key that is not a string
                return _error(f"args or context is not JSON Cedar can read: {exc}")
            if b'"__' in blob and any(r in blob for r in _RESERVED_BYTES):
                return _error(_RESERVED_DETAIL)
            # nor can the answer depend on it: the same principal, action and resource under
            # the same (immutable) set and entities get the same answer, errors included
            memo_key = (id(policy_set), principal, action, resource_type, resource_id)
            memoised = self._memo.get(memo_key)
            if memoised is not None:
                return memoised
        decision, reasons, errors = _cedar.authorize(policy_set, self._entities, request)
        if errors:
            return self._remember(memo_key, self._evaluation_error(errors))
        # Interpreting (decision, reasons) is pure: memoise it (bounded) off the hot path.
        key = (decision, *reasons)
        result = self._results.get(key)
        if result is None:
            result = self._interpret(decision, reasons)
            if len(self._results) < _RESULT_CACHE_SIZE:
                self._results[key] = result
        return self._remember(memo_key, result)

    def _remember(
        self, key: tuple[int, str, str, str, str] | None, result: PolicyResult
    ) -> PolicyResult:
        """Keep ``result`` under ``key`` (None: the answer may depend on context) in the
        bounded memo; when it is full it starts again empty."""
        if key is not None:
            memo = self._memo
            if len(memo) >= _MEMO_SIZE:
                memo.clear()
            memo[key] = result
        return result

    def _interpret(self, decision: str, reasons: Sequence[str]) -> PolicyResult:
        found = [self._policies.get(r) for r in reasons]
        infos = sorted((p for p in found if p is not None), key=lambda p: p.index)
        if len(infos) != len(found):
            return _error(f"Cedar named unknown policies: {sorted(reasons)}")
        ids = tuple(p.id for p in infos)
        if decision == "Allow":
            if not infos or any(p.effect != "permit" for p in infos):
                return _error(f"Cedar allowed with unexpected reasons: {list(ids)}")
            obligations = tuple(sorted({p.obligation for p in infos if p.obligation}))
            return PolicyResult(
                permitted=True,
                code=None,
                detail=f"permitted by {', '.join(ids)}",
                policies=ids,
                obligations=obligations,
            )
        if decision == "Deny":
            if not infos:
                return PolicyResult(
                    permitted=False,
                    code=ReasonCode.POLICY_NO_PERMIT,
                    detail="no policy permits this request",
                )
            if any(p.effect != "forbid" for p in infos):
                return _error(f"Cedar denied with unexpected reasons: {list(ids)}")
            return PolicyResult(
                permitted=False,
                code=ReasonCode.POLICY_FORBID,
                detail=f"forbidden by {', '.join(ids)}",
                policies=ids,
            )
        return _error(f"Cedar returned {decision} without an error")

    def _evaluation_error(self, errors: list[str]) -> PolicyResult:
        named = {_cedar.erroring_policy(m, self._policies) for m in errors}
        infos = sorted((self._policies[i] for i in named if i is not None), key=lambda p: p.index)
        return _error(
            "policy evaluation error (denied: an erroring policy is never skipped): "
            + "; ".join(sorted(errors)),
            tuple(p.id for p in infos),
        )


def _error(detail: str, policies: tuple[str, ...] = ()) -> PolicyResult:
    return PolicyResult(
        permitted=False, code=ReasonCode.POLICY_ERROR, detail=detail, policies=policies
    )


def load_unsigned(directory: Path) -> PolicyEngine:
    """**Unsigned** engine for a bundle folder: for ``interlock policy test|diff|validate`` and
    tests only. It checks no signature and no version; never enforce with it — the gate loads
    bundles with :func:`interlock.policy.load_bundle`.

    Raises:
        PolicyError: if the folder cannot be read, or its policies, schema or entities do not
            parse or validate.
    """
    return unsigned_engine(read_bundle_files(directory))


def unsigned_engine(files: Mapping[str, bytes]) -> PolicyEngine:
    """**Unsigned** engine from a bundle's files (relative path -> bytes); see
    :func:`load_unsigned`.

    Raises:
        PolicyError: if the policies, schema or entities do not parse or validate.
    """
    return PolicyEngine(_cedar.compile_files(files))
