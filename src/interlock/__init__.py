"""Interlock: fail-closed execution governance for AI agents.

    >>> import interlock
    >>> gate = interlock.open(".interlock")                        # doctest: +SKIP
    >>> decision = gate.decide({...})                               # doctest: +SKIP
    >>> decision.effect, decision.codes, decision.ledger_index      # doctest: +SKIP

Every action passes :meth:`Gate.decide` before it runs; the answer is allow only when a valid,
signed capability covers it, the signed policy permits it, its lineage is intact and the allow
is durably on the ledger. Everything else is a deny with a reason code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from interlock._version import __version__ as __version__
from interlock.core.model import ActionRequest, Decision, Effect, Reason, ReasonCode, Resource
from interlock.errors import Denied, Error, Revoked

__all__ = [
    "ActionRequest",
    "Decision",
    "Denied",
    "Effect",
    "Error",
    "Gate",
    "Reason",
    "ReasonCode",
    "Resource",
    "Revoked",
    "open",
]

if TYPE_CHECKING:
    from pathlib import Path

    from interlock.gate import Gate


def open(home: str | Path | None = None) -> Gate:
    """Open a governance home (``--home``/``INTERLOCK_HOME``/``./.interlock``).

    Raises:
        ConfigError: if there is no home there; run ``interlock init``.
    """
    from interlock.gate import Gate

    return Gate.open(home)


def __getattr__(name: str) -> Any:
    if name == "Gate":
        from interlock.gate import Gate

        return Gate
    raise AttributeError(name)
