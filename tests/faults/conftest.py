"""The fault campaign's fixtures, and the hook that makes the matrix check run last — and only
when every fault test was selected (a partial run must not rewrite FAULTS.md)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RESEARCHER, tool_request

HERE = Path(__file__).resolve().parent
CHECK = "test_matrix.py::test_the_fault_matrix"
_deselected: list[Any] = []


def pytest_deselected(items: list[pytest.Item]) -> None:
    _deselected.extend(i for i in items if Path(str(i.path)).parent == HERE)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    check = [i for i in items if i.nodeid.endswith(CHECK)]
    if not check:
        return
    modules = {Path(str(i.path)).name for i in items if Path(str(i.path)).parent == HERE}
    complete = not _deselected and modules >= {p.name for p in HERE.glob("test_*.py")}
    for item in check:
        items.remove(item)
    if complete:
        items.append(check[0])  # after every row and trial, whatever came after in the session
    else:
        config.hook.pytest_deselected(items=check)


@pytest.fixture
def token(issue: Callable[..., str]) -> str:
    """A capability for the lead researcher: any tool, and commands on the local host."""
    return issue(RESEARCHER, "tool.call:Tool::*", "shell.exec:Host::*")


@pytest.fixture
def request_of(token: str) -> dict[str, object]:
    """A request the default policy allows (web_search by the lead researcher)."""
    return tool_request(token)
