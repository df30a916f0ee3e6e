"""Trust boundaries (issue 3 §3): which principals may run which actions on which resources, in
which runtime states, and what happens on a violation. Pure: no I/O, no clock.

    >>> (b,) = parse_boundaries([{
    ...     "name": "research", "principals": ["spiffe://acme.test/agent/researcher"],
    ...     "actions": ["tool.call"], "resources": ["Tool::*"], "attested": True,
    ...     "on_violation": "restrict", "restricted_actions": ["tool.call"]}])
    >>> b.violation("tool.call", "Tool", "web_search", attested=True) is None
    True
    >>> b.violation("shell.exec", "Host", "localhost", attested=True)
    "action 'shell.exec' is outside the boundary's actions"

In ``interlock.toml``::

    [[boundaries]]
    name = "research"                                   # named in denials and records
    principals = ["spiffe://acme.test/agent/researcher"] # each covers itself and sub-agents
    actions = ["tool.call", "shell.exec"]               # action names, or "*"
    resources = ["Tool::*", "Host::localhost"]          # TYPE::ID, TYPE::*, or "*"
    attested = true                                     # only on an attested node
    on_violation = "restrict"                           # restrict | isolate | terminate
    restricted_actions = ["tool.call"]                  # restrict: what it may still do

A request by a covered principal that falls outside the boundary is denied
``BOUNDARY_VIOLATION``. Then, by ``on_violation``: **restrict** limits the principal, from then
on, to ``restricted_actions`` (still within the boundary's resources); **isolate** quarantines it
(``PRINCIPAL_QUARANTINED``, its running executions are terminated); **terminate** kills the
offending executions only (a new request is simply refused). Each enforcement is a
node-signed governance record on the ledger.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from interlock.core.model import is_under
from interlock.errors import ConfigError

__all__ = ["ON_VIOLATION", "Boundary", "parse_boundaries"]

ON_VIOLATION = ("restrict", "isolate", "terminate")
_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}\Z")
_ACTION_RE = re.compile(r"^(\*|[A-Za-z0-9._/-]{1,128})\Z")
_RESOURCE_RE = re.compile(r"^(\*|[A-Z][A-Za-z0-9_]{0,63}::.{1,256})\Z")
_KEYS = frozenset(
    {"name", "principals", "actions", "resources", "attested", "on_violation", "restricted_actions"}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Boundary:
    name: str
    principals: tuple[str, ...]
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    attested: bool = False
    on_violation: str = "terminate"
    restricted_actions: tuple[str, ...] = ()

    def covers(self, principal: str) -> bool:
        """Whether ``principal`` is one this boundary governs (itself or a sub-agent)."""
        return any(is_under(principal, p) for p in self.principals)

    def _resource_ok(self, rtype: str, rid: str) -> bool:
        for pattern in self.resources:
            if pattern == "*":
                return True
            ptype, pid = pattern.split("::", 1)
            if ptype == rtype and pid in ("*", rid):
                return True
        return False

    def violation(
        self, action: str, rtype: str, rid: str, *, attested: bool, restricted: bool = False
    ) -> str | None:
        """Why this request is outside the boundary, or None. ``restricted``: the principal was
        restricted after an earlier violation, so only ``restricted_actions`` remain."""
        if self.attested and not attested:
            return "the boundary requires an attested node and this node is not attested"
        allowed = self.restricted_actions if restricted else self.actions
        if "*" not in allowed and action not in allowed:
            if restricted:
                return (
                    f"action {action!r} is outside the restricted set the principal was limited"
                    " to after an earlier violation"
                )
            return f"action {action!r} is outside the boundary's actions"
        if not self._resource_ok(rtype, rid):
            return f"resource {rtype}::{rid} is outside the boundary's resources"
        return None

    def to_json(self) -> dict[str, Any]:
        """The ``[[boundaries]]`` table (:func:`parse_boundaries` reads it back)."""
        out: dict[str, Any] = {
            "name": self.name,
            "principals": list(self.principals),
            "actions": list(self.actions),
            "resources": list(self.resources),
            "attested": self.attested,
            "on_violation": self.on_violation,
        }
        if self.on_violation == "restrict":
            out["restricted_actions"] = list(self.restricted_actions)
        return out


def _strings(
    body: Mapping[str, Any], key: str, where: str, pattern: re.Pattern[str]
) -> tuple[str, ...]:
    value = body.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: {key} must be a non-empty list of strings")
    for v in value:
        if not pattern.match(v):
            raise ConfigError(f"{where}: {key} entry {v!r} is not valid")
    return tuple(value)


def parse_boundaries(raw: Any, *, source: str = "interlock.toml") -> tuple[Boundary, ...]:
    """Validate ``[[boundaries]]`` tables.

    Raises:
        ConfigError: naming the boundary and the field that is wrong.
    """
    from interlock.core.model import is_spiffe_id

    if not isinstance(raw, Sequence) or isinstance(raw, str):
        raise ConfigError(f"{source}: boundaries must be [[boundaries]] tables")
    out: list[Boundary] = []
    names: set[str] = set()
    for i, body in enumerate(raw):
        where = f"{source}: [[boundaries]] #{i + 1}"
        if not isinstance(body, Mapping):
            raise ConfigError(f"{where} is not a table")
        extra = set(body) - _KEYS
        if extra:
            raise ConfigError(f"{where}: unknown key(s) {sorted(extra)}")
        name = body.get("name")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ConfigError(f"{where}: name must be 1-64 letters, digits, . _ -")
        if name in names:
            raise ConfigError(f"{where}: the name {name!r} is used twice")
        names.add(name)
        where = f"{source}: boundary {name!r}"
        principals = body.get("principals")
        if (
            not isinstance(principals, list)
            or not principals
            or not all(isinstance(p, str) and is_spiffe_id(p) for p in principals)
        ):
            raise ConfigError(f"{where}: principals must be a non-empty list of SPIFFE IDs")
        on_violation = body.get("on_violation", "terminate")
        if on_violation not in ON_VIOLATION:
            raise ConfigError(f"{where}: on_violation must be one of {', '.join(ON_VIOLATION)}")
        attested = body.get("attested", False)
        if not isinstance(attested, bool):
            raise ConfigError(f"{where}: attested must be true or false")
        restricted: tuple[str, ...] = ()
        if on_violation == "restrict":
            restricted = _strings(body, "restricted_actions", where, _ACTION_RE)
        elif "restricted_actions" in body:
            raise ConfigError(
                f"{where}: restricted_actions only applies to on_violation = restrict"
            )
        out.append(
            Boundary(
                name=name,
                principals=tuple(principals),
                actions=_strings(body, "actions", where, _ACTION_RE),
                resources=_strings(body, "resources", where, _RESOURCE_RE),
                attested=attested,
                on_violation=on_violation,
                restricted_actions=restricted,
            )
        )
    return tuple(out)
