"""PostgreSQL itself stopped under a three-node fleet, and started again: a cluster of the
test's own (initdb on a free port; the machine's shared server is never touched), stopped with
``pg_ctl stop -m immediate`` — what a crash or a power cut leaves — while three node processes
decide. Every node denies within lease + margin, allows nothing while it is down, and allows
again by itself once it is back; the log verifies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import edit_config, tool_request
from tests.integration.test_fleet import _nodes, _outage, _verify
from tests.pg_private import Cluster, cluster_fixture  # noqa: F401 - the fixture


@pytest.fixture
def fleet(tmp_path: Path, cluster: Cluster) -> list[Path]:
    from interlock.bootstrap import init_home
    from interlock.home import Home, join_home

    first = init_home(tmp_path / "node1", origin="interlock.test/stopped", store=cluster.url).path
    edit_config(first, "deadline_ms = 50", "deadline_ms = 5000")
    edit_config(first, "ledger_timeout_ms = 2000", "ledger_timeout_ms = 1000")
    return [first] + [join_home(tmp_path / f"node{n}", Home.load(first)).path for n in (2, 3)]


@pytest.fixture
def home(fleet: list[Path]) -> Path:
    """The ``issue`` fixture's home: node 1's (every node holds its keys)."""
    return fleet[0]


def test_postgresql_stopped_and_started_again(
    fleet: list[Path], cluster: Cluster, issue: Any
) -> None:
    request = tool_request(issue())
    with _nodes(fleet) as nodes:
        _outage(nodes, request, cluster.stop, cluster.start)
    _verify(fleet[0])
