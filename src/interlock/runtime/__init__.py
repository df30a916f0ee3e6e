"""Governed execution: run an allowed action under watch, stop it when its authorization stops
holding (DESIGN I1, I5, I6).

    >>> from interlock.runtime import run_command
    >>> outcome = run_command(gate, request, ["make", "test"])      # doctest: +SKIP
    >>> outcome.status, outcome.exit_code                           # doctest: +SKIP
    ('ended', 0)

* :mod:`interlock.runtime.supervisor` — :class:`Watch` (continuous verification, shared by both
  forms) and :func:`run_command`, the supervisor behind ``interlock exec``: a separate process,
  the hard boundary.
* :mod:`interlock.runtime.execution` — :class:`Execution`, behind ``gate.execution(request)``:
  in-process code, stopped cooperatively (``run.check()``) or by task cancellation.
"""

from __future__ import annotations

from interlock.runtime.execution import Execution
from interlock.runtime.supervisor import (
    DEFAULT_GRACE_S,
    DEFAULT_INTERVAL_S,
    EXECUTION_ENV,
    Outcome,
    Watch,
    environment_digest,
    run_command,
)

__all__ = [
    "DEFAULT_GRACE_S",
    "DEFAULT_INTERVAL_S",
    "EXECUTION_ENV",
    "Execution",
    "Outcome",
    "Watch",
    "environment_digest",
    "run_command",
]
