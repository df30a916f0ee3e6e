"""The ``interlock`` command line: the only place that prints or exits.

Exit codes (DESIGN §9): 0 allow/success, 1 deny or verification failure, 2 usage error.
Every command that prints a result takes ``--json``. Every command calls a function that the
tests also call; nothing here decides anything. One module per command group; the Typer apps
and shared helpers are in :mod:`interlock.cli.common`.
"""

from __future__ import annotations

import sys

from interlock.cli import (
    attest,
    core,
    fleet,
    governance,
    ledger,
    policy,
    serve,
    tokens,
    witness,
)
from interlock.cli.common import EXIT_USAGE, app, err
from interlock.errors import Error

__all__ = ["app", "main"]
_COMMAND_MODULES = (
    attest,
    core,
    fleet,
    governance,
    ledger,
    policy,
    serve,
    tokens,
    witness,
)  # registered on import


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except Error as exc:  # a bug that escaped a command: still a clear message, never a traceback
        err.print(f"[bold red]error:[/] {exc.diagnostics()}")
        sys.exit(EXIT_USAGE)
