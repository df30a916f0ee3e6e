"""The fixed Datalog this package writes into tokens and the authorizer, and its read-back.

Shared by issuing and verifying (as sigstore's ``models`` are): neither side imports the other.

An authority block, as :class:`~interlock.capability.issue.CapabilityIssuer` writes it::

    principal("spiffe://acme.test/agent/researcher");
    right("tool.call", "Tool::web_search");
    issued_at(2029-01-01T00:00:00Z);
    check if time($time), $time <= 2030-01-01T00:00:00Z;

An attenuation block, as :func:`~interlock.capability.issue.attenuate` writes it::

    issued_at(2029-05-01T00:00:00Z);
    check if time($time), $time <= 2029-06-01T00:00:00Z;
    check if action("tool.call"), resource("Tool::web_search") or resource_type("File");
    check if parent("0190f1a2-...");

Values always travel as Datalog *parameters*, never spliced into source text. ``issued_at`` is
a fact no rule or policy reads: the verifier reads it back from the printed block, like the
expiry, to refuse tokens from the future (``verify.MAX_CLOCK_SKEW``).

    >>> shape = read_block('check if time($time), $time <= 1970-01-01T00:01:40Z;\\n', index=1)
    >>> shape.expiries, shape.own_forms_only
    ((100,), True)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from interlock.capability._biscuit import Term
from interlock.capability.right import ANY, Right

__all__ = [
    "BlockShape",
    "attenuation_block",
    "authority_block",
    "authorizer_program",
    "epoch_to_datetime",
    "read_authority",
    "read_block",
    "read_parents_display",
]

_EXPIRY = "check if time($time), $time <= {exp};\n"
_ISSUED_AT = "issued_at({iat});\n"
_ALLOW = "allow if action_match($a), resource_match($r), right($a, $r);\n"

# A string literal as Biscuit prints it, restricted to characters that cannot hide Datalog
# structure: Biscuit's printer does not escape strings, so a literal containing a quote could
# make a printed block look like something it is not. Excluding quote, backslash, whitespace,
# parentheses, comma and '$' means every predicate, variable and expression of the real block
# lies outside these literals, where only the fixed text below may appear. A block that does
# not match is still enforced exactly by Biscuit; it is only not memoised (see verify.py).
_S = r'"([^"\\\s(),$]*)"'
_DATE = r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)"
_EXPIRY_RE = re.compile(r"^check if time\(\$time\), \$time <= " + _DATE + r";\Z")
_ISSUED_AT_RE = re.compile(r"^issued_at\(" + _DATE + r"\);\Z")
_PRINCIPAL_RE = re.compile(r"^principal\(" + _S + r"\);\Z")
_RIGHT_RE = re.compile(r"^right\(" + _S + ", " + _S + r"\);\Z")
_PARENT_RE = re.compile(r"^check if parent\(" + _S + r"\);\Z")
_DELEGATE_RE = re.compile(r"^check if principal\(" + _S + r"\);\Z")
_SN = r'"[^"\\\s(),$]*"'  # the same literal, not capturing
_ALT = (
    r"(?:action\(" + _SN + r"\)(?:, (?:resource|resource_type)\(" + _SN + r"\))?"
    r"|(?:resource|resource_type)\(" + _SN + r"\))"
)
_RIGHTS_CHECK_RE = re.compile(r"^check if " + _ALT + r"(?: or " + _ALT + r")*;\Z")

# Literals as this package writes them (no quote, no newline): for the root-signed authority
# block, and for display.
_D = r'"([^"\n]*)"'
_PRINCIPAL_DISPLAY_RE = re.compile(r"^principal\(" + _D + r"\);\Z")
_RIGHT_DISPLAY_RE = re.compile(r"^right\(" + _D + ", " + _D + r"\);\Z")
_PARENT_DISPLAY_RE = re.compile(r"^check if parent\(" + _D + r"\);\Z")


def epoch_to_datetime(epoch: int) -> datetime:
    """Epoch seconds as an aware UTC datetime (the form Biscuit date parameters take).

    Raises:
        OverflowError, ValueError, OSError: if ``epoch`` is outside the platform's range.
    """
    return datetime.fromtimestamp(epoch, UTC)


def _date_param(when: datetime) -> datetime:
    # Biscuit dates are whole seconds in UTC; flooring makes the expiry read back exactly and
    # never later than asked.
    return when.astimezone(UTC).replace(microsecond=0)


def authority_block(
    *, principal: str, rights: Sequence[Right], expires_at: datetime, issued_at: datetime
) -> tuple[str, dict[str, Term]]:
    """The authority block's source and parameters (values already validated).

    Never raises.
    """
    params: dict[str, Term] = {
        "principal": principal,
        "iat": _date_param(issued_at),
        "exp": _date_param(expires_at),
    }
    lines = ["principal({principal});\n"]
    for i, right in enumerate(rights):
        params[f"a{i}"] = right.action
        params[f"r{i}"] = right.resource
        lines.append(f"right({{a{i}}}, {{r{i}}});\n")
    lines += [_ISSUED_AT, _EXPIRY]
    return "".join(lines), params


def attenuation_block(
    *,
    issued_at: datetime,
    rights: Sequence[Right] | None,
    expires_at: datetime | None,
    parent: str | None,
    delegate_to: str | None = None,
) -> tuple[str, dict[str, Term]]:
    """An attenuation block's source and parameters (values already validated).

    ``issued_at`` is the attenuator's time: its clock matters too, since the block's expiry is
    read against it.

    ``delegate_to`` hands the token to a sub-agent principal: the block checks that the
    presenting principal is exactly that one (the verifier accepts it only under the holder's
    own SPIFFE path).

    Rights become one check that the request matches one of them, with the same wildcard
    meaning as the authorizer's allow policy; a ``*:*`` right leaves rights unrestricted.

    Never raises.
    """
    params: dict[str, Term] = {"iat": _date_param(issued_at)}
    lines: list[str] = [_ISSUED_AT]
    if expires_at is not None:
        params["exp"] = _date_param(expires_at)
        lines.append(_EXPIRY)
    if rights is not None:
        alternatives: list[str] = []
        for i, right in enumerate(rights):
            terms: list[str] = []
            if right.action != ANY:
                params[f"a{i}"] = right.action
                terms.append(f"action({{a{i}}})")
            wildcard = right.wildcard_type
            if wildcard is not None:
                params[f"t{i}"] = wildcard
                terms.append(f"resource_type({{t{i}}})")
            elif right.resource != ANY:
                params[f"r{i}"] = right.resource
                terms.append(f"resource({{r{i}}})")
            if not terms:  # *:* — this alternative admits everything
                alternatives = []
                break
            alternatives.append(", ".join(terms))
        if alternatives:
            lines.append("check if " + " or ".join(alternatives) + ";\n")
    if parent is not None:
        params["parent"] = parent
        lines.append("check if parent({parent});\n")
    if delegate_to is not None:
        params["delegate"] = delegate_to
        lines.append("check if principal({delegate});\n")
    return "".join(lines), params


def authorizer_program(
    *,
    principal: str,
    action: str,
    resource: str,
    resource_type: str | None,
    parent: str | None,
    now: int,
    explicit: bool = False,
) -> tuple[str, dict[str, Term]]:
    """The authorizer's facts and its one allow policy for a request.

    ``action_match`` / ``resource_match`` list every right pattern the request matches (the
    exact values, ``Type::*`` and ``*``), so one policy implements the wildcards of
    :meth:`Right.covers`. The policy trusts only the authority block (Biscuit's default scope
    for authorizer rules), so ``right`` facts added by attenuation blocks never count.

    With ``explicit`` the ``*`` patterns are left out, so the one ``right`` fact the policy
    matches must itself name the action and the resource or its ``Type::*`` (as
    :meth:`Right.covers` with ``explicit=True``).

    Raises:
        OverflowError, ValueError, OSError: if ``now`` is outside the platform's date range.
    """
    params: dict[str, Term] = {
        "principal": principal,
        "action": action,
        "resource": resource,
        "time": epoch_to_datetime(now),
        "any": ANY,
    }
    lines = [
        "principal({principal});\n",
        "action({action});\n",
        "resource({resource});\n",
        "time({time});\n",
        "action_match({action});\n",
        "resource_match({resource});\n",
    ]
    if not explicit:
        lines += ["action_match({any});\n", "resource_match({any});\n"]
    if resource_type is not None:
        params["rtype"] = resource_type
        params["rtype_any"] = f"{resource_type}::{ANY}"
        lines += ["resource_type({rtype});\n", "resource_match({rtype_any});\n"]
    if parent is not None:
        params["parent"] = parent
        lines.append("parent({parent});\n")
    lines.append(_ALLOW)
    return "".join(lines), params


@dataclass(frozen=True, slots=True, kw_only=True)
class BlockShape:
    """What a block's printed source says, as far as this package's own forms go.

    ``expiries``: epoch seconds of each expiry check in the fixed form. ``issued_at``: epoch
    seconds of each ``issued_at`` fact in the fixed form (this package writes one per block).
    ``own_forms_only``: every line is one of the forms this package writes (authority:
    principal, right, issued-at, expiry; attenuation: issued-at, expiry, rights check, parent
    check, delegation), so the block's outcome depends on time only through ``expiries``.
    """

    expiries: tuple[int, ...]
    own_forms_only: bool
    delegates: tuple[str, ...] = ()
    issued_at: tuple[int, ...] = ()


def read_block(source: str, *, index: int) -> BlockShape:
    """Read a block's printed source (``index`` 0 is the authority block).

    Never raises.
    """
    expiries: list[int] = []
    issued: list[int] = []
    delegates: list[str] = []
    own = True
    for line in source.splitlines():
        if not line:
            continue
        m = _EXPIRY_RE.match(line) or _ISSUED_AT_RE.match(line)
        if m is not None:
            epoch = _parse_date(m.group(1))
            if epoch is None:
                own = False
            else:
                (expiries if m.re is _EXPIRY_RE else issued).append(epoch)
            continue
        if index == 0:
            own = own and bool(_PRINCIPAL_RE.match(line) or _RIGHT_RE.match(line))
        elif (d := _DELEGATE_RE.match(line)) is not None:
            delegates.append(d.group(1))
        else:
            own = own and bool(_PARENT_RE.match(line) or _RIGHTS_CHECK_RE.match(line))
    return BlockShape(
        expiries=tuple(expiries),
        own_forms_only=own,
        delegates=tuple(delegates),
        issued_at=tuple(issued),
    )


def read_authority(source: str) -> tuple[list[str | None], list[tuple[str, str]]]:
    """Principals and rights as printed in an authority block; a ``principal`` line that
    cannot be read exactly counts as ``None`` (so it still counts).

    Exact for authority blocks whose values contain no quote or newline, which the issuer
    refuses to write; the authority block is signed by the root key, so its text is the
    issuer's. (Attenuation blocks are the holder's text: never read them with this.)

    Never raises.
    """
    principals: list[str | None] = []
    rights: list[tuple[str, str]] = []
    for line in source.splitlines():
        if (m := _PRINCIPAL_DISPLAY_RE.match(line)) is not None:
            principals.append(m.group(1))
        elif line.startswith("principal("):
            principals.append(None)
        elif (m := _RIGHT_DISPLAY_RE.match(line)) is not None:
            rights.append((m.group(1), m.group(2)))
    return principals, rights


def read_parents_display(source: str) -> list[str]:
    """Parent ids bound by ``check if parent(...)`` lines of a block (display only).

    Never raises.
    """
    return [m.group(1) for line in source.splitlines() if (m := _PARENT_DISPLAY_RE.match(line))]


def _parse_date(text: str) -> int | None:
    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return None
