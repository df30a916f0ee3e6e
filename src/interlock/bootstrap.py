"""``interlock init``: a new home, with its ledger's first records.

It sits above the gate: the home's files (:func:`interlock.home.create_home`), then the
genesis records — the trust settings, signed with the root key
(:func:`interlock.governance.genesis`) — and a first gate that records the policy load.
"""

from __future__ import annotations

import time
from pathlib import Path

from interlock.engine import GateCore
from interlock.errors import ConfigError, LedgerCorrupt
from interlock.governance import genesis
from interlock.home import Home, create_home, join_home
from interlock.ledger.storage import open_store

__all__ = ["init_home"]


def init_home(
    path: Path,
    *,
    origin: str | None = None,
    durability: str = "full",
    store: str | None = None,
    join: Path | None = None,
) -> Home:
    """Create a new home: four keys, ``interlock.toml``, the default signed policy bundle and a
    ledger that starts with the trust settings and the policy load.

    ``store``: the log is the shared PostgreSQL log at that URL, which must be new (its schema
    is created here). ``join``: a home for another node of that home's shared log (its keys,
    configuration and policy; see :func:`interlock.home.join_home`).

    Raises:
        HomeExists: if ``path`` already holds a home (nothing is overwritten).
        ConfigError: if the directory cannot be created, ``store`` already holds a log (join
            it instead), or ``join`` names a home without a shared log or another store.
        LedgerUnavailable: the PostgreSQL server cannot be reached.
    """
    if join is not None:
        fleet = Home.load(join)
        if store is not None and store != fleet.config.store:
            raise ConfigError(f"--store differs from the [log] store of {join}")
        home = join_home(path, fleet)
        GateCore.open(home.path).close()  # the log must be there and check out
        return home
    if store is not None:
        _refuse_a_used_log(store)
    home = create_home(path, origin=origin, durability=durability, store=store)
    genesis(home, ns=time.time_ns())  # the trust settings are the ledger's first entries
    GateCore.open(home.path).close()  # records the policy load
    return home


def _refuse_a_used_log(store: str) -> None:
    """A new home must not start a second history on a log that has one: the log's keys are
    another home's (``--join`` that home instead).

    Raises:
        ConfigError: the log has entries. LedgerUnavailable: the server cannot be reached.
    """
    try:
        led = open_store(store, signer=None, durability="full")
    except LedgerCorrupt:
        return  # no schema yet: a new log
    try:
        size = led.size()
    finally:
        led.close()
    if size:
        raise ConfigError(
            f"the log at --store already has {size} entries: make this node with"
            " --join HOME (a home of that log) instead"
        )
