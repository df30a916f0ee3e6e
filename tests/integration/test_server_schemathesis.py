"""schemathesis against the live server's ``/openapi.json``: whatever it generates — valid and
invalid inputs, boundary values, wrong types, odd media types — no operation answers 5xx.

Two servers, each on its own home: one spoken to anonymously (every operation; admin
operations then answer 401), one with a real admin capability (admin operations only, so
generated quarantines, revocations, kill switches and policy uploads really run — and the
anonymous server's ``/readyz`` is never made 503 by a generated kill switch)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from interlock.capability import CapabilityIssuer, Right
from interlock.gate import Gate
from interlock.home import Home, init_home
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


@pytest.fixture(scope="module")
def anonymous(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = _home(tmp_path_factory.mktemp("anonymous"))
    with Gate.open(home) as gate, live_server(gate) as url:
        assert httpx.get(url + "/openapi.json").json() == SPEC
        yield url


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
def test_no_operation_answers_5xx(case: Any, anonymous: str) -> None:
    case.call_and_validate(base_url=anonymous, checks=[not_a_server_error])


@admin_schema.parametrize()
@_SETTINGS
def test_no_admin_operation_answers_5xx(case: Any, admin: tuple[str, str]) -> None:
    url, token = admin
    case.call_and_validate(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, checks=[not_a_server_error]
    )
