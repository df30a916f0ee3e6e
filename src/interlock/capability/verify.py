"""Verifying capability tokens for a request (DESIGN §2: identity & signature → temporal
validity → revocation → coverage). Never imports the issuing side.

    verifier = CapabilityVerifier(root_public_raw)
    result = verifier.check(token=token, principal="spiffe://acme.test/agent/a",
        action="tool.call", resource="Tool::web_search", parent=None,
        now=request.epoch, revoked=frozenset())
    result.ok, result.code
    # (False, <ReasonCode.CAPABILITY_EXPIRED: 'CAPABILITY_EXPIRED'>)

``check`` is pure given its inputs: ``now`` comes from the request, never from a clock. It
returns a :class:`CapabilityResult`; it never raises.

Issued-at. Every block this package writes states when it was written (``issued_at``). A
token whose authority block states none (or more than one) is ``CAPABILITY_INVALID``: it
predates issued-at, or was not written by this package, and must be re-issued. A token with any
block issued later than ``now + MAX_CLOCK_SKEW`` is ``CAPABILITY_INVALID`` ("issued in the
future"): a signer whose clock runs ahead would otherwise mint a token valid for longer than it
asked. A token valid at ``now`` must also expire after every block's issued-at. Attenuation
blocks without an issued-at are accepted: their holder writes them and could write any date.
These checks read the printed blocks in Python, like the expiry, and run on every call.

Memoisation (DESIGN §10 P1: signature verification and Datalog cost ~100 µs; the pipeline's
budget is 25 µs). Both caches are bounded LRUs of pure functions, so results do not depend on
what is cached:

- parsed and verified tokens of at most 8 KiB, by token string (signature chain, principal,
  expiries, revocation ids) — the root key is fixed per verifier;
- the coverage result, by (token, principal, action, resource, resource type, parent,
  explicit), only for tokens whose every block consists of the forms this package writes.
  Their only time-dependence is the expiry checks, whose earliest date is checked in Python
  first (the issued-at facts are read by no Datalog, and are checked in Python before the
  cache is consulted), so for every ``now`` that reaches the authorizer the outcome is the
  same; it is computed once with ``time`` at that earliest expiry. Tokens with custom checks
  or third-party blocks are authorized on every call, with the request's ``now`` and ``args``.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

from interlock.capability import _biscuit
from interlock.capability._forms import authorizer_program, read_authority, read_block
from interlock.capability.right import effective_resource_type
from interlock.core.model import MAX_TOKEN_BYTES, ReasonCode, is_spiffe_id, is_under
from interlock.errors import CapabilityError

__all__ = [
    "MAX_CACHED_TOKEN_BYTES",
    "MAX_CLOCK_SKEW",
    "RESULT_CACHE_SIZE",
    "TOKEN_CACHE_SIZE",
    "CapabilityResult",
    "CapabilityVerifier",
]

#: parsed, verified tokens kept per verifier
TOKEN_CACHE_SIZE = 4096
#: memoised coverage results kept per verifier
RESULT_CACHE_SIZE = 16384
#: larger tokens are verified on every call: bounds the caches' memory (legitimate tokens are
#: a few hundred bytes per block) against a holder who appends blocks to mint many big tokens
MAX_CACHED_TOKEN_BYTES = 8 * 1024
#: seconds a block's issued-at may lie after the request time (the signer's clock may run a
#: little ahead of the gate's); a token issued later than that is CAPABILITY_INVALID until the
#: request time catches up
MAX_CLOCK_SKEW = 60

_I64 = (-(2**63), 2**63 - 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class CapabilityResult:
    """The capability validators' answer. ``code`` is ``None`` exactly when ``ok``.

    ``detail`` is for operators and the ledger: it says why, and never contains the token.
    ``principal``, ``expires_at`` (epoch seconds, earliest over all blocks) and
    ``revocation_ids`` describe the token when it could be verified, else are empty.
    """

    ok: bool
    code: ReasonCode | None
    detail: str
    revocation_ids: tuple[str, ...] = ()
    principal: str | None = None
    expires_at: int | None = None
    #: False when the authorizer stopped without a verdict (execution limits, evaluation
    #: error): the deny depends on the machine's load, so replay cannot reproduce it
    reproducible: bool = True


class _NoVerdict(Exception):
    """Carries a deny that must not be memoised."""

    def __init__(self, result: CapabilityResult) -> None:
        super().__init__()
        self.result = result


_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


class _LRU(Generic[_K, _V]):
    """A bounded, thread-safe least-recently-used map (writes locked, reads lock-free)."""

    __slots__ = ("_data", "_lock", "_maxsize")

    def __init__(self, maxsize: int) -> None:
        self._data: OrderedDict[_K, _V] = OrderedDict()
        self._lock = threading.Lock()
        self._maxsize = maxsize

    def get(self, key: _K) -> _V | None:
        # Lock-free: each OrderedDict call is one atomic C call under CPython's GIL (keys are
        # str/int/None tuples, whose hash and eq never release it). A concurrent eviction
        # between the two calls only makes the move a no-op.
        value = self._data.get(key)
        if value is not None:
            try:  # noqa: SIM105 - contextlib.suppress costs a context manager on the hot path
                self._data.move_to_end(key)
            except KeyError:
                pass
        return value

    def put(self, key: _K, value: _V) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            if len(self._data) > self._maxsize:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


_serials = itertools.count()


@dataclass(frozen=True, slots=True)
class _Token:
    #: distinguishes this load in result-cache keys, which so hold no token bytes or object
    serial: int
    biscuit: _biscuit.VerifiedToken
    principal: str | None  # None: the authority block does not name exactly one
    #: the principal the token may be presented by after its delegations, or None when a
    #: delegation leaves the holder's own SPIFFE path (such a token identifies no one)
    holder: str | None
    expires_at: int | None
    #: the authority block's issued-at, or None if it does not state exactly one
    issued_at: int | None
    #: (epoch, block index) of the latest issued-at over all blocks, or None if none states one
    latest_issue: tuple[int, int] | None
    revocation_ids: tuple[str, ...]
    memoisable: bool


def _deny(code: ReasonCode, detail: str, token: _Token | None = None) -> CapabilityResult:
    if token is None:
        return CapabilityResult(ok=False, code=code, detail=detail)
    return CapabilityResult(
        ok=False,
        code=code,
        detail=detail,
        revocation_ids=token.revocation_ids,
        principal=token.principal,
        expires_at=token.expires_at,
    )


def _iso(epoch: int) -> str:
    try:
        return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError, OSError):
        return str(epoch)


def _arg_facts(args: Mapping[str, object] | None) -> tuple[tuple[str, object], ...]:
    if not args:
        return ()
    facts: list[tuple[str, object]] = []
    for key, value in args.items():
        # bool before int: bool is an int subclass, and Datalog has both
        if isinstance(value, bool | str) or (
            isinstance(value, int) and _I64[0] <= value <= _I64[1]
        ):
            facts.append((key, value))
    return tuple(facts)


def _holder(principal: str | None, delegates: list[str]) -> str | None:
    """Follow delegations: each must stay under the previous holder's SPIFFE path, so a token
    can be handed down to sub-agents but never sideways to an unrelated principal."""
    holder = principal
    for d in delegates:
        if holder is None or not is_spiffe_id(d) or not is_under(d, holder):
            return None
        holder = d
    return holder


class CapabilityVerifier:
    """Verifies tokens against one Biscuit root public key (32 raw Ed25519 bytes).

    Thread-safe (on CPython with the GIL, which Interlock targets): see ``_LRU``.

    Raises:
        CapabilityError: (on construction) if ``root_public_raw`` is not a 32-byte key.
    """

    def __init__(self, root_public_raw: bytes) -> None:
        self._root = _biscuit.load_public_key(root_public_raw)
        self._tokens: _LRU[str, _Token] = _LRU(TOKEN_CACHE_SIZE)
        self._results: _LRU[
            tuple[int, str, str, str, str | None, str | None, bool], CapabilityResult
        ]
        self._results = _LRU(RESULT_CACHE_SIZE)

    def __repr__(self) -> str:
        return "CapabilityVerifier(<root public key>)"

    def cache_clear(self) -> None:
        """Empty both caches (results never depend on them; this only frees memory).

        Never raises.
        """
        self._tokens.clear()
        self._results.clear()

    def check(
        self,
        *,
        token: str | None,
        principal: str,
        action: str,
        resource: str,
        parent: str | None,
        now: int,
        revoked: frozenset[str],
        args: Mapping[str, object] | None = None,
        resource_type: str | None = None,
        explicit: bool = False,
    ) -> CapabilityResult:
        """Decide whether ``token`` lets ``principal`` do ``action`` on ``resource`` now.

        ``resource`` is the uid ``Type::id``; ``resource_type`` is its type when known (else
        derived from the uid, see :func:`~interlock.capability.right.resource_type_of`).
        ``parent`` is the request's parent execution id, ``now`` the request's time in epoch
        seconds, ``revoked`` the revoked revocation ids (hex) of the pinned trust state,
        ``args`` the request's args (top-level str/int/bool values become ``arg`` facts).
        With ``explicit``, only an authority right that itself names ``action``, on
        ``resource`` or its ``Type::*``, grants the request: the ``*`` action and the ``*``
        resource grant nothing (:meth:`~interlock.capability.right.Right.covers`). The HTTP
        API's admin operations use it, so that a ``*:*`` right beside an admin right for
        another operation does not add up to this one. Attenuation blocks still only narrow.

        Returns, first failure winning (DESIGN §2):
        ``CAPABILITY_INVALID`` (missing, oversized, undecodable, bad signature, wrong root key,
        no single principal, no single issued-at in the authority block, or any failure of the
        Biscuit library), ``IDENTITY_UNVERIFIED`` (issued to another principal),
        ``CAPABILITY_INVALID`` (a block issued after ``now`` + :data:`MAX_CLOCK_SKEW`: "issued
        in the future"), ``CAPABILITY_EXPIRED`` (``now`` after the earliest expiry of any
        block), ``CAPABILITY_INVALID`` (the earliest expiry is not after the latest issued-at),
        ``CAPABILITY_REVOKED`` (a block's revocation id is in ``revoked``),
        ``CAPABILITY_INSUFFICIENT`` (the Biscuit authorizer denies), else ok.

        Never raises.
        """
        if not isinstance(token, str) or not token:
            return _deny(ReasonCode.CAPABILITY_INVALID, "no capability token presented")
        # before any parsing: bound the work an oversized or non-base64 input can cause
        if len(token) > MAX_TOKEN_BYTES or not token.isascii():
            return _deny(
                ReasonCode.CAPABILITY_INVALID,
                f"capability token is not ASCII base64 of at most {MAX_TOKEN_BYTES} bytes",
            )
        try:
            tok = self._tokens.get(token)
            if tok is None:
                tok = self._load(token)
                if len(token) <= MAX_CACHED_TOKEN_BYTES:
                    self._tokens.put(token, tok)
        except CapabilityError as exc:
            # every failure of the Biscuit binding arrives here wrapped (see _biscuit.py)
            return _deny(ReasonCode.CAPABILITY_INVALID, f"capability token invalid: {exc.message}")
        if tok.principal is None:
            return _deny(
                ReasonCode.CAPABILITY_INVALID,
                "capability token's authority block does not name exactly one principal",
                tok,
            )
        if tok.issued_at is None:
            # fail closed: a token without issued-at could come from a clock arbitrarily ahead
            return _deny(
                ReasonCode.CAPABILITY_INVALID,
                "capability token has no issued-at in its authority block (or more than one):"
                " re-issue the token",
                tok,
            )
        if tok.holder != principal:
            return _deny(
                ReasonCode.IDENTITY_UNVERIFIED,
                f"capability token is held by a different principal than {principal}"
                if tok.holder is not None
                else "capability token delegates outside its holder's SPIFFE path",
                tok,
            )
        latest = tok.latest_issue
        if latest is not None and latest[0] > now + MAX_CLOCK_SKEW:
            return _deny(
                ReasonCode.CAPABILITY_INVALID,
                f"capability token issued in the future: block {latest[1]} at {_iso(latest[0])}"
                f" (request time {_iso(now)}, allowed clock skew {MAX_CLOCK_SKEW} s)",
                tok,
            )
        if tok.expires_at is not None and now > tok.expires_at:
            return _deny(
                ReasonCode.CAPABILITY_EXPIRED,
                f"capability token expired at {_iso(tok.expires_at)} (request time {_iso(now)})",
                tok,
            )
        if latest is not None and tok.expires_at is not None and tok.expires_at <= latest[0]:
            # reached only within the skew before an issued-at: such a token was never valid
            return _deny(
                ReasonCode.CAPABILITY_INVALID,
                f"capability token expires at {_iso(tok.expires_at)}, not after block"
                f" {latest[1]} was issued at {_iso(latest[0])}",
                tok,
            )
        if not revoked.isdisjoint(tok.revocation_ids):
            index = next(i for i, r in enumerate(tok.revocation_ids) if r in revoked)
            return _deny(
                ReasonCode.CAPABILITY_REVOKED,
                f"capability token is revoked (revocation id of block {index})",
                tok,
            )
        try:
            if not tok.memoisable:
                return self._cover(
                    tok, principal, action, resource, resource_type, parent, now, args, explicit
                )
            key = (tok.serial, principal, action, resource, resource_type, parent, explicit)
            result = self._results.get(key)
            if result is None:
                # Pure in its key: run at the token's earliest expiry, where every expiry check
                # holds, as it does for every `now` that passed the expiry check above.
                when = tok.expires_at if tok.expires_at is not None else 0
                result = self._cover(
                    tok, principal, action, resource, resource_type, parent, when, None, explicit
                )
                self._results.put(key, result)  # not reached by a deny without a verdict
            return result
        except _NoVerdict as exc:
            return exc.result
        except CapabilityError as exc:
            return _deny(
                ReasonCode.CAPABILITY_INVALID, f"capability check failed: {exc.message}", tok
            )

    def _load(self, token: str) -> _Token:
        """Parse, verify and read a token.

        Raises:
            CapabilityError: if the token does not decode or verify.
        """
        biscuit = _biscuit.parse_verified(token, self._root)
        sources = _biscuit.block_sources(biscuit)
        # The authority block is signed by the root key, so its printed source is the issuer's
        # own text; reading it (rather than querying the authorizer's world) costs no Datalog
        # evaluation, which a hostile attenuation block could otherwise make fail.
        principals = read_authority(sources[0])[0] if sources else []
        principal = principals[0] if len(principals) == 1 else None
        shapes = [read_block(src, index=i) for i, src in enumerate(sources)]
        expiries = [e for shape in shapes for e in shape.expiries]
        issued = [(e, i) for i, shape in enumerate(shapes) for e in shape.issued_at]
        memoisable = all(s.own_forms_only for s in shapes) and not _biscuit.has_external_blocks(
            biscuit
        )
        authority_issued = shapes[0].issued_at if shapes else ()
        return _Token(
            serial=next(_serials),
            biscuit=biscuit,
            principal=principal,
            holder=_holder(principal, [d for s in shapes[1:] for d in s.delegates]),
            expires_at=min(expiries) if expiries else None,
            issued_at=authority_issued[0] if len(authority_issued) == 1 else None,
            # the latest date, and of equal dates the first block: a pure function of the token
            latest_issue=max(issued, key=lambda p: (p[0], -p[1])) if issued else None,
            revocation_ids=_biscuit.revocation_ids(biscuit),
            memoisable=memoisable,
        )

    @staticmethod
    def _cover(
        tok: _Token,
        principal: str,
        action: str,
        resource: str,
        resource_type: str | None,
        parent: str | None,
        now: int,
        args: Mapping[str, object] | None,
        explicit: bool,
    ) -> CapabilityResult:
        """Whether the token's rights and every block's checks cover the request at ``now``
        (with ``explicit``, only a right naming the action and the resource or its type counts).

        Raises:
            CapabilityError: if the authorizer cannot run.
            _NoVerdict: carrying the deny, if the authorizer denied without a verdict.
        """
        rtype = effective_resource_type(resource, resource_type)
        if resource_type is not None and rtype is None:
            return _deny(
                ReasonCode.CAPABILITY_INSUFFICIENT,
                f"resource {resource} is not of type {resource_type}",
                tok,
            )
        try:
            source, params = authorizer_program(
                principal=principal,
                action=action,
                resource=resource,
                resource_type=rtype,
                parent=parent,
                now=now,
                explicit=explicit,
            )
        except (OverflowError, ValueError, OSError) as exc:
            raise CapabilityError("request time is out of range") from exc
        outcome = _biscuit.authorize(tok.biscuit, source, params, _arg_facts(args))
        if not outcome.ok:
            denied = _deny(
                ReasonCode.CAPABILITY_INSUFFICIENT,
                _insufficient_detail(outcome, action, resource, parent),
                tok,
            )
            if not outcome.verdict:
                raise _NoVerdict(dataclasses.replace(denied, reproducible=False))
            return denied
        return CapabilityResult(
            ok=True,
            code=None,
            detail=f"capability allows {action} on {resource}",
            revocation_ids=tok.revocation_ids,
            principal=tok.principal,
            expires_at=tok.expires_at,
        )


_NO_VERDICT = "the authorizer reached no verdict (Datalog evaluation error or execution limits)"


def _insufficient_detail(
    outcome: _biscuit.AuthzOutcome, action: str, resource: str, parent: str | None
) -> str:
    what = f"capability does not allow {action} on {resource}"
    if parent is not None:
        what += f" with parent {parent}"
    if not outcome.verdict:
        return f"{what}: {_NO_VERDICT}"
    reasons: list[str] = []
    if not outcome.policy_matched:
        reasons.append("no right of the token covers it")
    if outcome.failed_blocks:
        blocks = ", ".join(str(b) for b in outcome.failed_blocks)
        reasons.append(f"a check failed in block {blocks}")
    return f"{what}: {'; '.join(reasons)}" if reasons else what
