"""Admin authorization for the HTTP API: a Biscuit capability with an explicit ``admin`` right.

    >>> # interlock token issue --principal spiffe://acme.test/human/ops \\
    >>> #     --right 'admin:Admin::*' --ttl 1h
    >>> # curl -H "Authorization: Bearer $ADMIN" -X POST .../v1/admin/kill-switch ...

Every admin endpoint names an *operation* (``quarantine``, ``revocation``, ``kill-switch``,
``approval``, ``policy``) and requires ``Authorization: Bearer <token>`` where the token

* verifies against the home's capability root key (the same verifier the gate uses: signature,
  holder, expiry and revocation all apply; the time is the server's clock);
* has, in its root-signed authority block, a right whose action is literally ``admin`` — a
  ``*:*`` agent token is *not* an admin token;
* covers action ``admin`` on resource ``Admin::<operation>`` (so ``admin:Admin::*`` allows every
  operation, ``admin:Admin::kill-switch`` only that one; attenuation can narrow further);
* is held by a principal that is not quarantined.

No header (or not a Bearer one) is 401 with ``WWW-Authenticate: Bearer``; anything else that
fails is 403. The precise cause goes to the response ``detail`` only as the reason *code*
(as for agents, STYLE "Fernet"): the operator learns the rest from the server log.

Admin access is decided by the capability alone, not by Cedar policy: an operator must be able
to upload a fixed policy bundle while the loaded one is broken.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from fastapi import HTTPException

from interlock.capability import inspect
from interlock.errors import CapabilityError

if TYPE_CHECKING:
    from interlock.gate import Gate

__all__ = ["ADMIN_ACTION", "ADMIN_TYPE", "OPERATIONS", "verify_admin"]

ADMIN_ACTION = "admin"
ADMIN_TYPE = "Admin"
OPERATIONS = frozenset({"quarantine", "revocation", "kill-switch", "approval", "policy"})

_log = logging.getLogger("interlock.server")
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="interlock-admin"'}


def _forbidden(code: str, why: str) -> HTTPException:
    _log.warning("admin request refused: %s: %s", code, why)
    return HTTPException(status_code=403, detail=f"admin capability refused: {code}")


def verify_admin(gate: Gate, authorization: str | None, operation: str) -> str:
    """Check the ``Authorization`` header for ``operation``; return the admin principal.

    Raises:
        HTTPException: 401 without a Bearer credential; 403 if the token does not verify,
            has expired or been revoked, holds no ``admin`` right covering
            ``Admin::<operation>``, or its holder is quarantined.
        ValueError: ``operation`` is not one of :data:`OPERATIONS` (a programming error).
    """
    if operation not in OPERATIONS:
        raise ValueError(f"unknown admin operation {operation!r}")
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(
            status_code=401,
            detail="admin endpoints need 'Authorization: Bearer <capability>' with an admin right",
            headers=_CHALLENGE,
        )
    try:
        # unverified read, only to learn who claims to hold it and which rights the authority
        # block names; check() below verifies the very same bytes against the root key
        info = inspect(token)
    except CapabilityError as exc:
        raise _forbidden("CAPABILITY_INVALID", exc.message) from None
    holder = info.delegates[-1] if info.delegates else info.principal
    if holder is None:
        raise _forbidden("CAPABILITY_INVALID", "token names no single principal")
    if not any(r.action == ADMIN_ACTION for r in info.rights):
        raise _forbidden("CAPABILITY_INSUFFICIENT", "no right with action 'admin'")
    snapshot = gate.snapshot
    result = snapshot.capabilities.check(
        token=token,
        principal=holder,
        action=ADMIN_ACTION,
        resource=f"{ADMIN_TYPE}::{operation}",
        resource_type=ADMIN_TYPE,
        parent=None,
        now=int(time.time()),
        revoked=snapshot.revoked,
    )
    if not result.ok:
        code = result.code.value if result.code is not None else "CAPABILITY_INVALID"
        raise _forbidden(code, result.detail)
    if holder in snapshot.quarantined:
        raise _forbidden("PRINCIPAL_QUARANTINED", holder)
    return holder
