"""schemathesis against the live server's ``/openapi.json``: whatever it generates — valid and
invalid inputs, boundary values, wrong types, odd media types — no operation answers 5xx.

Two servers, each on its own home: one spoken to anonymously (every operation; admin
operations then answer 401, and no generated call may add a governance record to its ledger),
one with a real admin capability (admin operations only, so generated quarantines,
revocations, kill switches and policy uploads really run — and the anonymous server's
``/readyz`` is never made 503 by a generated kill switch)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from interlock.bootstrap import init_home
from interlock.capability import CapabilityIssuer, Right
from interlock.gate import Gate
from interlock.home import Home
from interlock.server import create_app
from interlock.trust import keys
from tests.conftest import edit_config
from tests.integration.test_server import live_server

# modest on purpose: the whole suite must stay fast on 2 cores; the coverage phase adds its
# boundary and negative cases on top of these
EXAMPLES = 30


def _home(tmp: Path) -> Path:
    home = init_home(tmp / "home", origin="interlock.test/schemathesis").path
    edit_config(home, "deadline_ms = 50", "deadline_ms = 2000")
    return home


# The spec is the app's own (it does not depend on the gate); it is loaded at import because
# schemathesis' lazy fixture loader does not work with this pytest. Every case is sent to a
# real server, whose served /openapi.json is checked to be this very spec.
SPEC = create_app(cast("Gate", None)).openapi()
schema = schemathesis.openapi.from_dict(SPEC)
admin_schema = schema.include(path_regex="^/v1/admin/")

_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


class Governance:
    """The governance records of a ledger, read incrementally — except ``node.attested``, which
    the node writes on its own whenever its measured files change (as when someone edits the
    installed source during the run): no request causes it."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.read = 0
        self.records: list[dict[str, Any]] = []
        self.new()

    def new(self) -> list[dict[str, Any]]:
        """The governance records appended since the last call."""
        size = self.gate.ledger.size()
        found = []
        for _i, _h, data in self.gate.ledger.iter_entries(self.read, size):
            rec = json.loads(data)
            if rec.get("type") == "governance" and rec.get("event") != "node.attested":
                found.append(rec)
        self.read = size
        self.records.extend(found)
        return found


@pytest.fixture(scope="module")
def anonymous(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Governance]]:
    home = _home(tmp_path_factory.mktemp("anonymous"))
    with Gate.open(home) as gate, live_server(gate) as url:
        assert httpx.get(url + "/openapi.json").json() == SPEC
        governance = Governance(gate)
        at_start = list(governance.records)
        # a home's ledger starts with its trust settings and the policy load (and the
        # fixture's own trusted-platform change)
        assert {r["event"] for r in at_start} == {"trust.changed", "policy.loaded"}
        yield url, governance
        governance.new()
        assert governance.records == at_start


@pytest.fixture(scope="module")
def admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    home = _home(tmp_path_factory.mktemp("admin"))
    root = Home.load(home).private_key("biscuit-root")
    token = CapabilityIssuer(keys.private_raw(root)).issue(
        principal="spiffe://acme.test/human/ops",
        rights=[Right.parse("admin:Admin::*")],
        expires_at=datetime.now(UTC) + timedelta(hours=1),
    )
    with Gate.open(home) as gate, live_server(gate) as url:
        yield url, token


@schema.parametrize()
@_SETTINGS
def test_no_operation_answers_5xx(case: Any, anonymous: tuple[str, Governance]) -> None:
    url, governance = anonymous
    case.call_and_validate(base_url=url, checks=[not_a_server_error])
    # without an admin capability nothing changes governance: no record was written
    assert governance.new() == [], case.operation.label


@admin_schema.parametrize()
@_SETTINGS
def test_no_admin_operation_answers_5xx(case: Any, admin: tuple[str, str]) -> None:
    url, token = admin
    case.call_and_validate(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, checks=[not_a_server_error]
    )
