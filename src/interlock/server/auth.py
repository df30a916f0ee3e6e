"""Admin authorization for the HTTP API: a Biscuit capability with an explicit ``admin`` right.

    >>> # interlock token issue --principal spiffe://acme.test/human/ops \\
    >>> #     --right 'admin:Admin::*' --ttl 1h
    >>> # curl -H "Authorization: Bearer $ADMIN" -X POST .../v1/admin/kill-switch ...

Every admin endpoint names an *operation* (``quarantine``, ``revocation``, ``kill-switch``,
``approval``, ``policy``; the console's read views ``read``) and requires
``Authorization: Bearer <token>`` where the token

* verifies against the home's capability root key (the same verifier the gate uses: signature,
  holder, issued-at, expiry and revocation all apply; the time is the server's clock);
* is granted action ``admin`` on resource ``Admin::<operation>`` by one right of its root-signed
  authority block that is itself an admin right on that operation: ``admin:Admin::<operation>``
  or ``admin:Admin::*``. The ``*`` action and the ``*`` resource grant no admin operation
  (``CapabilityVerifier.check(..., explicit=True)``), so neither a ``*:*`` agent token nor one
  holding ``*:*`` beside ``admin:Admin::approval`` may flip the kill switch;
* passes every check of its attenuation blocks for that request (attenuation only narrows:
  ``admin:Admin::*`` attenuated to ``admin:Admin::approval`` allows only approvals);
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
#: ``read`` is the console's read-only credential (:mod:`interlock.server.console.session`)
OPERATIONS = frozenset({"read", "quarantine", "revocation", "kill-switch", "approval", "policy"})

_log = logging.getLogger("interlock.server")
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="interlock-admin"'}


def _forbidden(code: str, why: str) -> HTTPException:
    _log.warning("admin request refused: %s: %s", code, why)
    return HTTPException(status_code=403, detail=f"admin capability refused: {code}")


def verify_admin(gate: Gate, authorization: str | None, operation: str) -> str:
    """Check the ``Authorization`` header for ``operation``; return the admin principal.

    Raises:
        HTTPException: 401 without a Bearer credential; 403 if the token does not verify
            (CAPABILITY_INVALID, also for a token issued in the future or without issued-at),
            has expired (CAPABILITY_EXPIRED) or been revoked (CAPABILITY_REVOKED), holds no
            right ``admin:Admin::<operation>`` or ``admin:Admin::*`` that grants the operation
            (CAPABILITY_INSUFFICIENT), or its holder is quarantined (PRINCIPAL_QUARANTINED).
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
        # unverified read, only to learn who claims to hold it; check() below verifies the very
        # same bytes against the root key, and that this claimed holder is the token's holder
        info = inspect(token)
    except CapabilityError as exc:
        raise _forbidden("CAPABILITY_INVALID", exc.message) from None
    holder = info.delegates[-1] if info.delegates else info.principal
    if holder is None:
        raise _forbidden("CAPABILITY_INVALID", "token names no single principal")
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
        # the one right that grants it must be an admin right on this operation (or on all):
        # a `*:*` right beside `admin:Admin::approval` must not add up to the kill switch
        explicit=True,
    )
    if not result.ok:
        code = result.code.value if result.code is not None else "CAPABILITY_INVALID"
        raise _forbidden(code, result.detail)
    if holder in snapshot.quarantined:
        raise _forbidden("PRINCIPAL_QUARANTINED", holder)
    return holder
