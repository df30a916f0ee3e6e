"""schemathesis against the live server's ``/openapi.json``: whatever it generates — valid and
invalid inputs, boundary values, wrong types, odd media types — no operation answers 5xx, and
every answer has a status code, a media type and (where the document describes one) a body
that the document declares for it (see CONFORMANCE for what is not checked, and why).

Three servers, each on its own home: one spoken to anonymously (every operation of the
document — decisions, executions, lineage, ledger, tiles, admin, health, metrics, the console
pages and the console API; admin and console operations then answer 401, and no generated call
may add a governance record to its ledger), one with a real admin capability (the ``/v1/admin``
operations, so generated quarantines, revocations, kill switches and policy uploads really
run — and the anonymous server's ``/readyz`` is never made 503 by a generated kill switch), and
one signed in to the console with that capability (every ``/console/api`` operation with the
session cookie, its CSRF token and a same-origin ``Origin``, so reads, actions, policy impact
and demo runs really run; only the endless event stream is left out)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

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
SPEC = create_app(cast("Gate", SimpleNamespace(ledger=None))).openapi()
schema = schemathesis.openapi.from_dict(SPEC)
admin_schema = schema.include(path_regex="^/v1/admin/")
# the event stream never ends (a keep-alive every 15 s): it has its own tests
# (tests/e2e/test_console_*.py); signing out would end the session the other cases use
console_schema = (
    schema.include(path_regex="^/console/api/")
    .exclude(path="/console/api/stream")
    .exclude(path="/console/api/session", method="DELETE")
)
#: what every answer must meet besides "not 5xx": a media type the document declares, and a
#: body that meets the declared schema. Not checked: that the status code is declared — the
#: guards (limits.py, guards.py) answer 400, 404, 413 and 415 before any route runs, and the
#: document does not list those on each operation
CONFORMANCE = [not_a_server_error, content_type_conformance, response_schema_conformance]
#: the console API answers its own 422s as {"detail": "<text>"}, where the document declares
#: FastAPI's validation-error list: its bodies are checked only for their media type
CONSOLE_CHECKS = [not_a_server_error, content_type_conformance]

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


def _admin_token(home: Path) -> str:
    root = Home.load(home).private_key("biscuit-root")
    return CapabilityIssuer(keys.private_raw(root)).issue(
        principal="spiffe://acme.test/human/ops",
        rights=[Right.parse("admin:Admin::*")],
        expires_at=datetime.now(UTC) + timedelta(hours=1),
    )


@pytest.fixture(scope="module")
def admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    home = _home(tmp_path_factory.mktemp("admin"))
    token = _admin_token(home)
    with Gate.open(home) as gate, live_server(gate) as url:
        yield url, token


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """A server with a few decisions on its ledger, and the headers of a signed-in console
    session (cookie, CSRF token, same-origin ``Origin``)."""
    from tests.conftest import RESEARCHER

    home = _home(tmp_path_factory.mktemp("console"))
    token = _admin_token(home)
    root = Home.load(home).private_key("biscuit-root")
    agent = CapabilityIssuer(keys.private_raw(root)).issue(
        principal=RESEARCHER,
        rights=[Right.parse("tool.call:Tool::*")],
        expires_at=datetime.now(UTC) + timedelta(hours=1),
    )
    with Gate.open(home) as gate, live_server(gate) as url:
        for tool in ("web_search", "delete_database", "send_email"):
            gate.decide(
                {
                    "principal": RESEARCHER,
                    "action": "tool.call",
                    "resource": {"type": "Tool", "id": tool},
                    "capability": agent,
                }
            )
        signed_in = httpx.post(url + "/console/api/session", json={"token": token})
        assert signed_in.status_code == 200, signed_in.text
        cookie = "; ".join(f"{k}={v}" for k, v in signed_in.cookies.items())
        headers = {
            "Cookie": cookie,
            "X-Interlock-CSRF": signed_in.json()["csrf"],
            "Origin": url,
        }
        yield url, headers


@schema.parametrize()
@_SETTINGS
def test_no_operation_answers_5xx(case: Any, anonymous: tuple[str, Governance]) -> None:
    url, governance = anonymous
    case.call_and_validate(base_url=url, checks=CONFORMANCE)
    # without an admin capability nothing changes governance: no record was written
    assert governance.new() == [], case.operation.label


@admin_schema.parametrize()
@_SETTINGS
def test_no_admin_operation_answers_5xx(case: Any, admin: tuple[str, str]) -> None:
    url, token = admin
    case.call_and_validate(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, checks=CONFORMANCE
    )


@console_schema.parametrize()
@_SETTINGS
def test_no_console_operation_answers_5xx(case: Any, console: tuple[str, dict[str, str]]) -> None:
    url, headers = console
    case.call_and_validate(base_url=url, headers=headers, checks=CONSOLE_CHECKS)
