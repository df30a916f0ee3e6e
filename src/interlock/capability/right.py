"""Rights: what a capability allows, in the CLI form ``ACTION:TYPE::ID``.

    >>> r = Right.parse("tool.call:Tool::*")
    >>> r.action, r.resource
    ('tool.call', 'Tool::*')
    >>> r.covers("tool.call", "Tool::web_search"), r.covers("shell.exec", "Tool::web_search")
    (True, False)
    >>> Right.parse("*:*").covers("http.request", "Http::https://api.acme.test/v1")
    True

Wildcards: action ``*`` is any action; resource ``Type::*`` is any id of that type; resource
``*`` is anything. A ``*`` anywhere else is refused, so a right never looks like a glob it is not.

A resource uid is ``Type::id`` (``core.model.Resource.uid``). Cedar types may be namespaced
(``Acme::Tool``) and ids are free text, so the type of a bare uid is ambiguous; it is read as
the longest run of identifier segments before the last one (:func:`resource_type_of`). Callers
that know the type (the gate does: ``request.resource.type``) pass it explicitly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from interlock.core.model import Resource
from interlock.errors import CapabilityError

__all__ = ["ANY", "Right", "check_text", "effective_resource_type", "resource_type_of"]

#: the wildcard: any action, or any resource (``*``) / any id of a type (``Type::*``)
ANY = "*"

_ACTION_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-/]*\Z")
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
# Values written into tokens: no quote, backslash or control character. Biscuit's block printer
# does not escape strings, so these would make a printed block ambiguous to read back.
_UNSAFE_TEXT_RE = re.compile(r'["\\\x00-\x1f\x7f]')
_MAX_TEXT = 1024


def check_text(what: str, value: object) -> str:
    """Return ``value`` if it is a non-empty string safe to write into a token.

    Raises:
        CapabilityError: if ``value`` is not a string, is empty or longer than 1024 characters,
            or contains a quote, a backslash or a control character.
    """
    if not isinstance(value, str) or not value:
        raise CapabilityError(f"{what} must be a non-empty string")
    if len(value) > _MAX_TEXT:
        raise CapabilityError(f"{what} is longer than {_MAX_TEXT} characters")
    if _UNSAFE_TEXT_RE.search(value):
        raise CapabilityError(f"{what} contains a quote, backslash or control character")
    return value


def resource_type_of(uid: str) -> str | None:
    """The entity type of a resource uid ``Type::id``, or ``None`` if it has none.

    The type is the longest run of identifier segments before the last ``::`` segment:

        >>> resource_type_of("Tool::web_search"), resource_type_of("Acme::Tool::web_search")
        ('Tool', 'Acme::Tool')
        >>> resource_type_of("Http::https://x.test/a"), resource_type_of("*")
        ('Http', None)

    Never raises.
    """
    parts = uid.split("::")
    k = 0
    while k < len(parts) - 1 and _IDENT_RE.match(parts[k]):
        k += 1
    return "::".join(parts[:k]) if k else None


@dataclass(frozen=True, slots=True, kw_only=True)
class Right:
    """One right: ``action`` (or ``*``) on ``resource`` (``Type::id``, ``Type::*`` or ``*``).

    Raises:
        CapabilityError: (on construction) if ``action`` or ``resource`` is malformed.
    """

    action: str
    resource: str

    def __post_init__(self) -> None:
        action, resource = self.action, self.resource
        if not isinstance(action, str) or not (action == ANY or _ACTION_RE.match(action)):
            raise CapabilityError(
                "a right's action is '*' or letters, digits and '_.-/' (e.g. tool.call)"
            )
        check_text("a right's resource", resource)
        if resource == ANY:
            return
        rtype = resource_type_of(resource)
        rid = resource[len(rtype) + 2 :] if rtype is not None else ""
        if rtype is None or not rid or not Resource.is_valid_type(rtype):
            raise CapabilityError(
                "a right's resource is '*', 'Type::*' or 'Type::id' (e.g. Tool::web_search)"
            )
        if rid != ANY and ANY in rid:
            raise CapabilityError(
                "'*' in a resource id is only a wildcard on its own ('Type::*'); globs are "
                "not supported"
            )

    @classmethod
    def parse(cls, text: str) -> Right:
        """Parse ``ACTION:TYPE::ID`` (split on the first ``:``; actions contain none).

            >>> Right.parse("mcp.tools/call:McpTool::fs.read")
            Right(action='mcp.tools/call', resource='McpTool::fs.read')

        Raises:
            CapabilityError: if ``text`` is not ``ACTION:RESOURCE`` with a valid action and
                resource.
        """
        if not isinstance(text, str) or ":" not in text:
            raise CapabilityError(
                f"a right is ACTION:TYPE::ID (e.g. tool.call:Tool::web_search), got {text!r}"
            )
        action, _, resource = text.partition(":")
        try:
            return cls(action=action, resource=resource)
        except CapabilityError as exc:
            raise CapabilityError(f"{exc.message}; got {text!r}") from exc

    @property
    def wildcard_type(self) -> str | None:
        """The type of a ``Type::*`` right, else ``None``.

        Never raises.
        """
        if self.resource != ANY and self.resource.endswith("::*"):
            return self.resource[:-3]
        return None

    def covers(
        self,
        action: str,
        resource_uid: str,
        *,
        resource_type: str | None = None,
        explicit: bool = False,
    ) -> bool:
        """Whether this right allows ``action`` on ``resource_uid``.

        ``resource_type`` is the uid's entity type when the caller knows it (otherwise it is
        derived with :func:`resource_type_of`); a type that is not a prefix of the uid matches
        no ``Type::*`` right. With ``explicit``, the ``*`` action and the ``*`` resource cover
        nothing: the right must name ``action`` itself, on ``resource_uid`` or its ``Type::*``
        (admin rights: a ``*:*`` agent right never grants one). This is the oracle the Biscuit
        authorizer policies implement.

            >>> Right.parse("*:*").covers("admin", "Admin::policy", explicit=True)
            False
            >>> Right.parse("admin:Admin::*").covers("admin", "Admin::policy", explicit=True)
            True

        Never raises.
        """
        if self.action != action and (explicit or self.action != ANY):
            return False
        if self.resource == resource_uid or (self.resource == ANY and not explicit):
            return True
        wildcard = self.wildcard_type
        if wildcard is None:
            return False
        rtype = effective_resource_type(resource_uid, resource_type)
        return rtype is not None and rtype == wildcard

    def __str__(self) -> str:
        return f"{self.action}:{self.resource}"


def effective_resource_type(resource_uid: str, resource_type: str | None) -> str | None:
    """The type a request's resource is matched as: ``resource_type`` if given and a prefix
    of the uid (else ``None``: no type wildcard matches), otherwise derived from the uid.

    Never raises.
    """
    if resource_type is None:
        return resource_type_of(resource_uid)
    if resource_type and resource_uid.startswith(resource_type + "::"):
        return resource_type
    return None
