"""A running writer whose ledger files are unlinked or replaced denies at once, instead of
committing into a file no one will read again (found by the fault matrix, issue 16)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from interlock.gate import Gate
from tests.conftest import tool_request


@pytest.mark.parametrize("victim", ["ledger.db", "ledger.db-wal"])
def test_an_unlinked_ledger_file_denies_the_next_decision(
    home: Path, issue: Any, victim: str
) -> None:
    token = issue()
    with Gate.open(home) as gate:
        assert gate.decide(tool_request(token)).allowed
        os.unlink(home / victim)
        d = gate.decide(tool_request(token))
        assert not d.allowed
        assert d.codes[-1] in ("LEDGER_CORRUPT", "LEDGER_UNAVAILABLE")
        assert d.ledger_index is None
        again = gate.decide(tool_request(token))  # and every decision after it
        assert not again.allowed


def test_a_replaced_ledger_denies_the_next_decision(home: Path, issue: Any, tmp_path: Path) -> None:
    token = issue()
    with Gate.open(home) as gate:
        assert gate.decide(tool_request(token)).allowed
        copy = tmp_path / "copy.db"
        shutil.copy(home / "ledger.db", copy)
        os.replace(copy, home / "ledger.db")
        d = gate.decide(tool_request(token))
        assert not d.allowed and d.ledger_index is None
