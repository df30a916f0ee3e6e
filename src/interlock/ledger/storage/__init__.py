"""Storage drivers, reached through :mod:`interlock.ledger.protocols` only.

    >>> from interlock.ledger.storage import open_store
    >>> open_store  # doctest: +ELLIPSIS
    <function open_store at ...>

:func:`open_store` is the one place that names a driver: everything else holds a
:class:`~interlock.ledger.protocols.Store`. SQLite is the embedded default; the distributed
mode adds PostgreSQL here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from interlock.ledger.note import NoteSigner
    from interlock.ledger.protocols import Store

__all__ = ["open_store"]


def open_store(
    path: Path,
    *,
    signer: NoteSigner | None,
    durability: str,
    busy_timeout_ms: int = 5000,
    create: bool = False,
    upgrade: bool = False,
) -> Store:
    """Open the ledger and governance state at ``path`` (``create``: ``interlock init`` only).

    Raises:
        LedgerCorrupt: missing (without ``create``) or not a ledger.
        LedgerUnavailable: it cannot be opened or read, or needs ``ledger rebuild-state``.
    """
    from interlock.ledger.storage.sqlite import SqliteLedger

    return SqliteLedger(
        path,
        signer=signer,
        durability=durability,
        busy_timeout_ms=busy_timeout_ms,
        create=create,
        upgrade=upgrade,
    )
