"""The one module that imports ``biscuit_auth`` (biscuit-python 0.4, pre-1.0: DESIGN §5).

Everything else in :mod:`interlock.capability` talks to Biscuit through these few functions,
so a binding upgrade touches this file only. Every failure of the binding — its own exception
types, ``ValueError``/``TypeError`` from parameter conversion, or a Rust panic surfacing as
pyo3's ``PanicException`` (a ``BaseException``) — is wrapped in
:class:`~interlock.errors.CapabilityError` here, where it enters Interlock.

    >>> root = load_private_key(bytes(range(32)))
    >>> token = build_token(root, 'principal({p});', {"p": "spiffe://acme.test/a"}, ())
    >>> block_sources(parse_unverified(token))
    ('principal("spiffe://acme.test/a");\\n',)

Messages never include the token or key bytes: only what kind of failure happened.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType

import biscuit_auth as _b

from interlock.errors import CapabilityError

__all__ = [
    "AuthzOutcome",
    "ParsedToken",
    "Term",
    "VerifiedToken",
    "append_block",
    "authorize",
    "block_sources",
    "build_token",
    "has_external_blocks",
    "load_private_key",
    "load_public_key",
    "parse_unverified",
    "parse_verified",
    "revocation_ids",
    "validate_check",
]

#: the Python values Interlock passes as Datalog parameters (``datetime`` for dates)
Term = object

#: the authorizer's run-time budget. Biscuit's default is 1 ms, which a loaded machine can
#: exceed for a legitimate token (a spurious, non-reproducible deny); the fact and iteration
#: limits (1000 / 100, the defaults) still bound what a hostile block can make it compute.
_AUTHORIZER_MAX_TIME = timedelta(milliseconds=5)

#: a token whose signature chain was verified from a root key
VerifiedToken = _b.Biscuit
#: a verified token, or one only decoded (for display and revocation ids)
ParsedToken = _b.Biscuit | _b.UnverifiedBiscuit


class _Wrap:
    """``with _Wrap("what failed"):`` turns a binding failure into :class:`CapabilityError`.

    pyo3 turns a Rust panic into ``pyo3_runtime.PanicException``, a ``BaseException``: a panic
    on a hostile token is a failure to verify it, never a reason to crash the gate. Anything
    else that is not an ``Exception`` (Ctrl-C, interpreter exit) passes through unchanged.
    """

    __slots__ = ("_what",)

    def __init__(self, what: str) -> None:
        self._what = what

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or isinstance(exc, CapabilityError):
            return
        if isinstance(exc, Exception) or type(exc).__name__ == "PanicException":
            raise CapabilityError(self._what, cause=type(exc).__name__) from exc


def load_private_key(raw: bytes) -> _b.PrivateKey:
    """A Biscuit Ed25519 private key from its 32 raw bytes.

    Raises:
        CapabilityError: if ``raw`` is not 32 bytes or not a valid key.
    """
    if not isinstance(raw, bytes | bytearray) or len(raw) != 32:
        raise CapabilityError("a Biscuit root private key is 32 raw Ed25519 bytes")
    with _Wrap("invalid Ed25519 private key"):
        # The stubs' PrivateKey.from_bytes lacks the binding's required algorithm argument;
        # the documented "ed25519-private/<hex>" text form is typed and unambiguous.
        return _b.PrivateKey("ed25519-private/" + bytes(raw).hex())


def load_public_key(raw: bytes) -> _b.PublicKey:
    """A Biscuit Ed25519 public key from its 32 raw bytes.

    Raises:
        CapabilityError: if ``raw`` is not 32 bytes or not a valid key.
    """
    if not isinstance(raw, bytes | bytearray) or len(raw) != 32:
        raise CapabilityError("a Biscuit root public key is 32 raw Ed25519 bytes")
    with _Wrap("invalid Ed25519 public key"):
        return _b.PublicKey("ed25519/" + bytes(raw).hex())


def validate_check(source: str) -> None:
    """Parse one Datalog check (``check if ...``) to be sure it is exactly one valid check.

    Raises:
        CapabilityError: if ``source`` is not a single valid Datalog check.
    """
    with _Wrap("not a valid Datalog check"):
        _b.Check(source)


def build_token(
    root: _b.PrivateKey, source: str, params: Mapping[str, Term], checks: Sequence[str]
) -> str:
    """Build and sign an authority block; return the token as URL-safe base64.

    Raises:
        CapabilityError: if the Datalog or a parameter is invalid.
    """
    with _Wrap("could not build the capability token"):
        builder = _b.BiscuitBuilder(source, dict(params))
        for check in checks:
            builder.add_check(_b.Check(check))
        return builder.build(root).to_base64()


def parse_verified(token: str, root: _b.PublicKey) -> VerifiedToken:
    """Decode ``token`` and verify every block's signature chain from ``root``.

    Raises:
        CapabilityError: if the token does not decode or a signature does not verify.
    """
    with _Wrap("token does not decode or does not verify against the root key"):
        return _b.Biscuit.from_base64(token, root)


def parse_unverified(token: str) -> _b.UnverifiedBiscuit:
    """Decode ``token`` WITHOUT checking any signature (for display and revocation ids).

    Raises:
        CapabilityError: if the token does not decode.
    """
    with _Wrap("token does not decode"):
        return _b.UnverifiedBiscuit.from_base64(token)


def block_sources(token: ParsedToken) -> tuple[str, ...]:
    """The Datalog source of each block, authority first.

    Raises:
        CapabilityError: if the binding fails to print a block.
    """
    with _Wrap("cannot print the token's blocks"):
        return tuple(token.block_source(i) for i in range(token.block_count()))


def revocation_ids(token: ParsedToken) -> tuple[str, ...]:
    """Each block's revocation id (hex), authority first.

    Raises:
        CapabilityError: if the binding fails.
    """
    with _Wrap("cannot read the token's revocation ids"):
        return tuple(str(r) for r in token.revocation_ids)


def has_external_blocks(token: VerifiedToken) -> bool:
    """Whether any block is a third-party block (signed by an external key).

    Raises:
        CapabilityError: if the binding fails.
    """
    with _Wrap("cannot read the token's blocks"):
        return any(token.block_external_key(i) is not None for i in range(token.block_count()))


def append_block(token: VerifiedToken, source: str, params: Mapping[str, Term]) -> str:
    """Append a first-party attenuation block; return the new token as URL-safe base64.

    Raises:
        CapabilityError: if the Datalog or a parameter is invalid.
    """
    with _Wrap("could not append the attenuation block"):
        return token.append(_b.BlockBuilder(source, dict(params))).to_base64()


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthzOutcome:
    """The Biscuit authorizer's answer. ``verdict`` is ``False`` when it denied without
    reaching one (evaluation error, execution limits). ``failed_blocks`` lists the blocks with
    a failing check and ``policy_matched`` says whether an allow policy matched; both only
    shape the operator-facing detail, never the decision."""

    ok: bool
    verdict: bool = True
    policy_matched: bool = False
    failed_blocks: tuple[int, ...] = ()


def authorize(
    token: VerifiedToken,
    source: str,
    params: Mapping[str, Term],
    args: Sequence[tuple[str, Term]],
) -> AuthzOutcome:
    """Run the authorizer (``source``: facts and policies, with ``params``) on ``token``.

    ``args`` become ``arg(key, value)`` facts. A failed check or no matching allow policy is an
    outcome (``ok=False``), not an exception.

    Raises:
        CapabilityError: if the authorizer cannot run (invalid Datalog or parameters, a panic).
    """
    with _Wrap("cannot build the authorizer"):
        builder = _b.AuthorizerBuilder(source, dict(params))
        for key, value in args:
            builder.add_fact(_b.Fact("arg({k}, {v})", {"k": key, "v": value}))
        # limits()/set_limits() exist in the binding but not in its 0.4 stubs
        limits = builder.limits()  # type: ignore[attr-defined]
        limits.max_time = _AUTHORIZER_MAX_TIME
        builder.set_limits(limits)  # type: ignore[attr-defined]
        authorizer = builder.build(token)
    with _Wrap("the authorizer failed"):
        try:
            authorizer.authorize()
        except _b.AuthorizationError as exc:
            return _failure(str(exc))
    return AuthzOutcome(ok=True)


def _failure(message: str) -> AuthzOutcome:
    """Read the structure of an authorization failure: which blocks had a failing check and
    whether an allow policy matched. The message itself quotes the token's Datalog and never
    leaves this function.

    A failure without a verdict (a Datalog evaluation error such as a type error in a check,
    or the execution limits) denies too, but is marked ``verdict=False``: it may not recur, so
    it must not be memoised.

    Never raises.
    """
    if "policy matched" not in message and "no matching policy" not in message:
        return AuthzOutcome(ok=False, verdict=False)
    failed: list[int] = []
    marker = "in block n°"
    start = 0
    while (pos := message.find(marker, start)) >= 0:
        pos += len(marker)
        end = pos
        while end < len(message) and message[end].isdigit():
            end += 1
        if end > pos:
            failed.append(int(message[pos:end]))
        start = end
    return AuthzOutcome(
        ok=False,
        policy_matched="an allow policy matched" in message,
        failed_blocks=tuple(sorted(set(failed))),
    )
