"""Storage drivers, reached through :mod:`interlock.ledger.protocols` only.

    >>> from interlock.ledger.storage import open_store
    >>> open_store  # doctest: +ELLIPSIS
    <function open_store at ...>

:func:`open_store` is the one place that names a driver: everything else holds a
:class:`~interlock.ledger.protocols.Store`. The location chooses it: a ``postgresql://`` (or
``postgres://``) URL opens the shared PostgreSQL log of a fleet
(:mod:`~interlock.ledger.storage.postgres`); a path opens the embedded SQLite default.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from interlock.ledger.note import NoteSigner
    from interlock.ledger.protocols import Store

__all__ = ["describe", "is_url", "open_store"]


def is_url(location: str | Path) -> bool:
    """Whether ``location`` is a PostgreSQL URL rather than a SQLite path."""
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


def describe(location: str | Path) -> str:
    """``location`` for messages and logs: a URL without its password."""
    if isinstance(location, str) and is_url(location):
        from interlock.ledger.storage.postgres import redact

        return redact(location)
    return str(location)


def open_store(
    path: Path | str,
    *,
    signer: NoteSigner | None,
    durability: str,
    busy_timeout_ms: int = 5000,
    create: bool = False,
    upgrade: bool = False,
    lazy: bool = False,
) -> Store:
    """Open the ledger and governance state at ``path`` — a SQLite file, or a PostgreSQL
    URL (``create``: ``interlock init`` only; ``lazy``: a PostgreSQL store opens even while
    the server cannot be reached, and raises ``LedgerUnavailable`` from every call until it
    can — a node that starts and denies; a SQLite file is always opened at once).

    Raises:
        LedgerCorrupt: missing (without ``create``) or not a ledger.
        LedgerUnavailable: it cannot be opened or read (for PostgreSQL: the server cannot be
            reached), or needs ``ledger rebuild-state``.
    """
    if isinstance(path, str) and is_url(path):
        from interlock.ledger.storage.postgres import PostgresLedger

        return PostgresLedger(
            path,
            signer=signer,
            durability=durability,
            busy_timeout_ms=busy_timeout_ms,
            create=create,
            upgrade=upgrade,
            lazy=lazy,
        )
    from interlock.ledger.storage.sqlite import SqliteLedger

    return SqliteLedger(
        Path(path),
        signer=signer,
        durability=durability,
        busy_timeout_ms=busy_timeout_ms,
        create=create,
        upgrade=upgrade,
    )
