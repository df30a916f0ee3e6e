"""The last test of a full fault run: writes FAULTS.md and faults.json from the rows the fault
tests recorded and fails on any allow, any executed action or fewer than 25 classes.

Runs only when every fault test ran (see conftest.py): ``make faults`` or ``make test``."""

from __future__ import annotations

from tests.faults.harness import ROWS, problems, write_matrix


def test_the_fault_matrix() -> None:
    write_matrix(ROWS)
    found = problems(ROWS)
    assert not found, "the fault matrix shows:\n" + "\n".join(found)
