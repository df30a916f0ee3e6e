"""Issuing and attenuating capability tokens (the writing side; verification never imports it).

    >>> from datetime import UTC, datetime
    >>> from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    >>> from interlock.trust.keys import private_raw, public_raw
    >>> root = Ed25519PrivateKey.generate()
    >>> issuer = CapabilityIssuer(private_raw(root))
    >>> token = issuer.issue(
    ...     principal="spiffe://acme.test/agent/researcher",
    ...     rights=[Right.parse("tool.call:Tool::*")],
    ...     expires_at=datetime(2030, 1, 1, tzinfo=UTC),
    ...     now=datetime(2029, 1, 1, tzinfo=UTC),
    ... )
    >>> child = attenuate(
    ...     token,
    ...     root_public_raw=public_raw(root),
    ...     rights=[Right.parse("tool.call:Tool::web_search")],
    ...     expires_at=datetime(2029, 6, 1, tzinfo=UTC),
    ...     parent="0190f1a2-0000-7000-8000-000000000000",
    ...     now=datetime(2029, 5, 1, tzinfo=UTC),
    ... )

Attenuation can only narrow. Each block a holder appends may add checks, and Biscuit requires
every check of every block to pass; facts a block adds are visible to that block alone, never to
the authority block or to the authorizer's allow policy (Biscuit's default scopes). So an
appended block can restrict what the token allows, and nothing it contains can widen it.

Every block states when it was written (``issued_at``, from the ``now`` the caller passes): the
verifier refuses a token issued or attenuated later than its request time plus
:data:`~interlock.capability.verify.MAX_CLOCK_SKEW`, so a signer whose clock runs ahead cannot
mint a token that lives longer than it asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from interlock.capability import _biscuit
from interlock.capability._forms import attenuation_block, authority_block
from interlock.capability.right import Right, check_text
from interlock.core.model import MAX_TOKEN_BYTES, is_spiffe_id
from interlock.errors import CapabilityError

__all__ = ["CapabilityIssuer", "attenuate"]


def _check_rights(rights: Sequence[Right]) -> tuple[Right, ...]:
    if isinstance(rights, str | Right):
        raise CapabilityError("rights must be a sequence of Right")
    out = tuple(rights)
    if not out:
        # An empty list would give a token that allows nothing: almost always a mistake.
        raise CapabilityError("rights must not be empty")
    if not all(isinstance(r, Right) for r in out):
        raise CapabilityError("rights must be Right values (see Right.parse)")
    return out


def _check_expiry(expires_at: datetime) -> datetime:
    if not isinstance(expires_at, datetime) or expires_at.tzinfo is None:
        raise CapabilityError("expires_at must be a timezone-aware datetime")
    return expires_at


def _issued_at(now: datetime | None) -> datetime:
    if now is None:
        # the issuer's own clock: the issued-at a token carries is its issuer's claim, checked
        # by every verifier against its own time (MAX_CLOCK_SKEW)
        return datetime.now(UTC)
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise CapabilityError("now must be a timezone-aware datetime")
    return now


def _check_size(token: str) -> str:
    if len(token) > MAX_TOKEN_BYTES:
        raise CapabilityError(f"the token would exceed {MAX_TOKEN_BYTES} bytes")
    return token


class CapabilityIssuer:
    """Issues tokens signed by the Biscuit root key (32 raw Ed25519 bytes, as
    :func:`interlock.trust.keys.private_raw` returns).

    Raises:
        CapabilityError: (on construction) if ``root_private_raw`` is not a 32-byte key.
    """

    __slots__ = ("_root",)

    def __init__(self, root_private_raw: bytes) -> None:
        self._root = _biscuit.load_private_key(root_private_raw)

    def __repr__(self) -> str:
        return "CapabilityIssuer(<root key>)"

    def issue(
        self,
        *,
        principal: str,
        rights: Sequence[Right],
        expires_at: datetime,
        checks: Sequence[str] = (),
        now: datetime | None = None,
    ) -> str:
        """Issue a token for ``principal`` holding ``rights`` until ``expires_at``.

        ``now`` is the time of issue, written into the authority block as its ``issued_at``
        (the verifier refuses a token issued after its request time plus
        :data:`~interlock.capability.verify.MAX_CLOCK_SKEW`, and one without it). Pass it;
        ``None`` reads the system clock, a transitional default for callers that do not yet.
        A token expiring at or before ``now`` is issued (tests mint expired tokens) and is
        refused by the verifier. ``expires_at`` and ``now`` are floored to the second (Biscuit
        dates are whole seconds). ``checks`` are
        extra Datalog checks (``check if ...``) in the authority block, for argument constraints
        such as ``check if arg("path", $p), $p.starts_with("/tmp/")``; the verifier supplies
        ``arg(key, value)`` facts for a request's top-level string, integer and boolean args.
        A token with such checks is authorized on every call (never memoised).

        Returns the token as URL-safe base64.

        Raises:
            CapabilityError: if ``principal`` is empty or contains a quote, backslash or
                control character; ``rights`` is empty; ``expires_at`` or ``now`` is naive; a
                check is not a single valid Datalog check; or the token would exceed 64 KiB.
        """
        check_text("principal", principal)
        if not is_spiffe_id(principal):
            raise CapabilityError(
                f"principal {principal!r} is not a SPIFFE ID like spiffe://example.org/agent/a"
                " (segments of A-Z a-z 0-9 . _ -, no '.' or '..'): the gate would refuse it"
            )
        rights = _check_rights(rights)
        expires_at = _check_expiry(expires_at)
        issued_at = _issued_at(now)
        if isinstance(checks, str):
            raise CapabilityError("checks must be a sequence of Datalog checks")
        sources: list[str] = []
        for check in checks:
            if not isinstance(check, str):
                raise CapabilityError("a check must be a string")
            source = check.strip().removesuffix(";").strip()
            _biscuit.validate_check(source)
            sources.append(source)
        source, params = authority_block(
            principal=principal, rights=rights, expires_at=expires_at, issued_at=issued_at
        )
        return _check_size(_biscuit.build_token(self._root, source, params, sources))


def attenuate(
    token: str,
    *,
    root_public_raw: bytes,
    rights: Sequence[Right] | None = None,
    expires_at: datetime | None = None,
    parent: str | None = None,
    delegate_to: str | None = None,
    now: datetime | None = None,
) -> str:
    """Append a block that narrows ``token``; no private key is needed.

    - ``rights``: the request must match one of them (same wildcards as :meth:`Right.covers`),
      *and* still one of the authority's rights: a right the token lacks stays denied.
    - ``expires_at``: a further expiry; the token expires at the earliest of all its blocks, so
      a later one changes nothing.
    - ``parent``: the request must name this parent execution id.
    - ``delegate_to``: the token may then be presented only by this sub-agent principal, a
      SPIFFE ID under the holder's own path (``spiffe://d/agent/a`` → ``spiffe://d/agent/a/sub``).
    - ``now``: the attenuator's time, written into the block as its ``issued_at`` (the verifier
      refuses a token with any block issued after the request time plus the allowed skew).
      Pass it; ``None`` reads the system clock, a transitional default for callers that do
      not yet. It narrows nothing on its own: one of the four above is still required.

    ``root_public_raw`` is the root public key: biscuit-python 0.4 can append to a token only
    after verifying it (it cannot serialize an unverified one), which also means a forged token
    is refused here rather than passed on.

    Returns the new token as URL-safe base64.

    Raises:
        CapabilityError: if the token does not parse or verify, nothing to add was given,
            ``rights`` is empty, ``expires_at`` or ``now`` is naive, ``parent`` is not safe
            text, or the token would exceed 64 KiB.
    """
    if rights is None and expires_at is None and parent is None and delegate_to is None:
        raise CapabilityError(
            "nothing to attenuate: give rights, expires_at, parent or delegate_to"
        )
    narrowed = _check_rights(rights) if rights is not None else None
    expiry = _check_expiry(expires_at) if expires_at is not None else None
    issued_at = _issued_at(now)
    if parent is not None:
        check_text("parent", parent)
    if delegate_to is not None:
        check_text("delegate_to", delegate_to)
        if not is_spiffe_id(delegate_to):
            raise CapabilityError(
                "delegate_to must be a SPIFFE ID (segments of A-Z a-z 0-9 . _ -, no '.' or '..')"
            )
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_BYTES:
        raise CapabilityError("not a capability token (empty, or larger than 64 KiB)")
    parsed = _biscuit.parse_verified(token, _biscuit.load_public_key(root_public_raw))
    source, params = attenuation_block(
        issued_at=issued_at,
        rights=narrowed,
        expires_at=expiry,
        parent=parent,
        delegate_to=delegate_to,
    )
    return _check_size(_biscuit.append_block(parsed, source, params))
