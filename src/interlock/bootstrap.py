"""``interlock init``: a new home, with its ledger's first records.

It sits above the gate: the home's files (:func:`interlock.home.create_home`), then the
genesis records — the trust settings, signed with the root key
(:func:`interlock.governance.genesis`) — and a first gate that records the policy load.
"""

from __future__ import annotations

import time
from pathlib import Path

from interlock.engine import GateCore
from interlock.governance import genesis
from interlock.home import Home, create_home

__all__ = ["init_home"]


def init_home(path: Path, *, origin: str | None = None, durability: str = "full") -> Home:
    """Create a new home: four keys, ``interlock.toml``, the default signed policy bundle and a
    ledger that starts with the trust settings and the policy load.

    Raises:
        HomeExists: if ``path`` already holds a home (nothing is overwritten).
        ConfigError: if the directory cannot be created.
    """
    home = create_home(path, origin=origin, durability=durability)
    genesis(home, ns=time.time_ns())  # the trust settings are the ledger's first entries
    GateCore.open(home.path).close()  # records the policy load
    return home
