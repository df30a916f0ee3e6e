"""Witnesses (issue 12): a witness keeps the checkpoints it cosigned per log, checks each new
one extends the last by a consistency proof, and cosigns (c2sp.org/tlog-witness,
c2sp.org/tlog-cosignature); a node trusts a new tree head only with a quorum of cosignatures.

    >>> from interlock.witness import confirm_head, require_quorum
    >>> callable(confirm_head) and callable(require_quorum)
    True

- :mod:`~interlock.witness.core`: the witness (:class:`Witness`, :func:`init_witness`);
- :mod:`~interlock.witness.state`: its SQLite state and the evidence of refusals;
- :mod:`~interlock.witness.server`: the ``add-checkpoint`` HTTP endpoint;
- :mod:`~interlock.witness.client`: the node's side, :func:`confirm_head` and
  :func:`require_quorum`.

The pure cosignature format is :mod:`interlock.ledger.cosign`, beside the signed notes.
"""

from __future__ import annotations

from interlock.ledger.cosign import CosignedCheckpoint, QuorumNotMet
from interlock.witness.client import WitnessEndpoint, WitnessFailed, confirm_head, require_quorum
from interlock.witness.core import Witness, WitnessConfig, WitnessRefused, init_witness

__all__ = [
    "CosignedCheckpoint",
    "QuorumNotMet",
    "Witness",
    "WitnessConfig",
    "WitnessEndpoint",
    "WitnessFailed",
    "WitnessRefused",
    "confirm_head",
    "init_witness",
    "require_quorum",
]
