"""Reading a token for people: ``interlock token inspect`` and ``interlock token revoke``.

    info = inspect(token, root_public_raw)
    info.principal, info.issued_at, info.expires_at, info.verified
    # ('spiffe://acme.test/agent/researcher', datetime.datetime(2029, 1, 1, 0, 0, tzinfo=...),
    #  datetime.datetime(2030, 1, 1, 0, 0, tzinfo=...), True)
    revocation_ids(token)
    # ('c29aa5f7...',)

Without a root key nothing is verified and :attr:`TokenInfo.verified` is ``False``: the contents
are then only what the token claims.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from interlock.capability import _biscuit
from interlock.capability._forms import (
    epoch_to_datetime,
    read_authority,
    read_block,
    read_parents_display,
)
from interlock.capability.right import Right
from interlock.core.model import MAX_TOKEN_BYTES, format_time
from interlock.errors import CapabilityError

__all__ = ["TokenInfo", "inspect", "revocation_ids"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenInfo:
    """What a token says. ``verified`` is ``True`` only if its signatures were verified from a
    root key; otherwise every other field is an unverified claim.

    ``rights`` are the authority block's (attenuation may narrow them further: see ``blocks``).
    ``issued_at`` is the authority block's issued-at (``None`` if it states none, or more than
    one: the verifier refuses such a token); ``attenuated_at`` each attenuation block's, in
    order, where it states one. ``expires_at`` is the earliest expiry over all blocks.
    ``blocks`` is each block's Datalog, authority first; ``parents`` the parent execution ids
    blocks bind to; ``revocation_ids`` each block's revocation id (hex), authority first.
    """

    principal: str | None
    rights: tuple[Right, ...]
    expires_at: datetime | None
    blocks: tuple[str, ...]
    parents: tuple[str, ...]
    revocation_ids: tuple[str, ...]
    verified: bool
    delegates: tuple[str, ...] = ()
    issued_at: datetime | None = None
    attenuated_at: tuple[datetime, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (for ``--json``).

        Never raises.
        """
        return {
            "principal": self.principal,
            "rights": [str(r) for r in self.rights],
            "issued_at": None if self.issued_at is None else format_time(self.issued_at),
            "expires_at": None if self.expires_at is None else format_time(self.expires_at),
            "blocks": list(self.blocks),
            "parents": list(self.parents),
            "delegated_to": list(self.delegates),
            "attenuated_at": [format_time(t) for t in self.attenuated_at],
            "revocation_ids": list(self.revocation_ids),
            "verified": self.verified,
        }


def _check_token(token: str) -> str:
    if not isinstance(token, str) or not token:
        raise CapabilityError("no capability token given")
    if len(token) > MAX_TOKEN_BYTES or not token.isascii():
        raise CapabilityError(f"not ASCII base64 of at most {MAX_TOKEN_BYTES} bytes")
    return token


def _rights(pairs: list[tuple[str, str]]) -> tuple[Right, ...]:
    out: list[Right] = []
    for action, resource in pairs:
        try:
            out.append(Right(action=action, resource=resource))
        except CapabilityError:
            continue  # not a right this package could have written; still shown in blocks
    return tuple(out)


def inspect(token: str, root_public_raw: bytes | None = None) -> TokenInfo:
    """Describe ``token``; verify its signatures first when ``root_public_raw`` is given.

    Principal and rights are read from the authority block's Datalog (exact for tokens
    :class:`CapabilityIssuer` wrote); without a root key they are unverified claims and
    ``verified`` is ``False``.

    Raises:
        CapabilityError: if the token is empty, larger than 64 KiB or does not decode, or if a
            root key is given and the signatures do not verify against it.
    """
    _check_token(token)
    parsed: _biscuit.ParsedToken = (
        _biscuit.parse_unverified(token)
        if root_public_raw is None
        else _biscuit.parse_verified(token, _biscuit.load_public_key(root_public_raw))
    )
    sources = _biscuit.block_sources(parsed)
    claimed, pairs = read_authority(sources[0]) if sources else ([], [])
    principal = claimed[0] if len(claimed) == 1 else None
    rights = _rights(pairs)
    shapes = [read_block(src, index=i) for i, src in enumerate(sources)]
    expiries = [e for shape in shapes for e in shape.expiries]
    issued = shapes[0].issued_at if shapes else ()
    return TokenInfo(
        principal=principal,
        rights=rights,
        expires_at=epoch_to_datetime(min(expiries)) if expiries else None,
        blocks=sources,
        parents=tuple(p for src in sources for p in read_parents_display(src)),
        revocation_ids=_biscuit.revocation_ids(parsed),
        verified=root_public_raw is not None,
        delegates=tuple(d for shape in shapes[1:] for d in shape.delegates),
        issued_at=epoch_to_datetime(issued[0]) if len(issued) == 1 else None,
        attenuated_at=tuple(epoch_to_datetime(t) for shape in shapes[1:] for t in shape.issued_at),
    )


def revocation_ids(token: str) -> tuple[str, ...]:
    """Each block's revocation id (hex), authority first, for ``interlock token revoke``.

    Revoking any of them revokes the token and every token attenuated from it; revoking the id
    of an attenuation block revokes only tokens that contain that block. No key is needed: the
    ids are not verified here (the verifier checks them against the verified token).

    Raises:
        CapabilityError: if the token is empty, larger than 64 KiB or does not decode.
    """
    return _biscuit.revocation_ids(_biscuit.parse_unverified(_check_token(token)))
