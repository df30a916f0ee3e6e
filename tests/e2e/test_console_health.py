"""The Infrastructure Health Dashboard in a real Chromium against a real ``interlock serve``:
the node ready with its figures, the charts drawn from the ledger's decisions and the node's
latency, the node turning fail-closed (kill switch, through the admin API) and back without a
reload, phone width; and a fleet of two served nodes on one PostgreSQL log, both listed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import RESEARCHER, edit_config
from tests.e2e.console_harness import (
    AUDITOR,
    OPS,
    ConsoleServer,
    issue,
    screenshot,
    start_server,
    stop_server,
)
from tests.e2e.pages.health import HealthPage

DENY_RED = (0xB3, 0x26, 0x1E)
P50_BLUE = (0x0B, 0x57, 0xD0)


def _kill_switch(url: str, admin_token: str, on: bool) -> None:
    """Turn the kill switch on or off through the admin API (``POST /v1/admin/kill-switch``)."""
    r = httpx.post(
        url + "/v1/admin/kill-switch",
        json={"on": on, "reason": "health dashboard test"},
        headers={"Authorization": f"Bearer {admin_token}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text


def test_the_node_is_ready_and_the_charts_are_drawn_with_data(
    console_server: ConsoleServer, page: Page
) -> None:
    health = HealthPage(page).open(console_server.url, console_server.read_token)
    me = health.this_node
    expect(health.state_of(me)).to_have_text("ready")
    expect(health.summary).to_contain_text("This node is ready")
    expect(health.figure(me, "Policy version")).to_contain_text("v1")
    expect(health.figure(me, "Lease age")).to_contain_text("embedded")
    expect(health.figure(me, "Log size")).to_contain_text("entries")
    expect(health.figure(me, "Checkpoint age")).to_contain_text("ago")
    expect(health.figure(me, "Attestation")).to_contain_text("trusted")
    expect(health.figure(me, "Log growth")).to_contain_text("entries/s")

    # the fixture's denials (delete_database: POLICY_FORBID) are on the ledger: the rates
    # chart's red line rises above zero, and the code has its own series
    expect(health.chart("chart-codes").locator(".u-legend")).to_contain_text("POLICY_FORBID")
    expect(health.chart("chart-rates").locator(".u-legend")).to_contain_text("denied/s")
    health.expect_line("chart-rates", DENY_RED, rows=10)
    expect(health.latest("Denied POLICY_FORBID per second")).to_have_count(2)

    # latency: decisions timed by this node after the page opened show in the current bucket
    for tool in ("web_search", "delete_database", "web_search"):
        console_server.decide(RESEARCHER, tool)
    health.expect_a_number("Latency p50")
    health.expect_a_number("Latency p99")
    health.expect_line("chart-latency", P50_BLUE, rows=3)
    screenshot(page, "health-dashboard")


def test_watch_the_node_turn_fail_closed_and_back_without_a_reload(
    console_server: ConsoleServer, page: Page
) -> None:
    health = HealthPage(page).open(console_server.url, console_server.read_token)
    me = health.this_node
    expect(health.state_of(me)).to_have_text("ready")
    page.evaluate("() => { window.__notReloaded = true; }")
    try:
        _kill_switch(console_server.url, console_server.admin_token, True)
        expect(health.state_of(me)).to_have_text("fail-closed")
        expect(me).to_have_attribute("data-state", "fail-closed")
        expect(me.locator(".reasons .code")).to_have_text(["POLICY_FORBID"])
        expect(me.locator(".reasons")).to_contain_text("the kill switch is on")
        expect(health.summary).to_contain_text("fail-closed")
        expect(health.summary).to_contain_text("POLICY_FORBID")
        # what the card says is what the load balancer sees
        ready = httpx.get(console_server.url + "/readyz", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["reasons"][0].startswith("POLICY_FORBID: ")
        # and it is true: an action now is denied with that code
        denied = console_server.decide(RESEARCHER, "web_search")
        assert denied["effect"] == "deny"
        assert denied["reasons"][0]["code"] == "POLICY_FORBID"
    finally:
        _kill_switch(console_server.url, console_server.admin_token, False)
    expect(health.state_of(me)).to_have_text("ready")
    expect(me.locator(".reasons")).to_have_count(0)
    expect(health.summary).to_contain_text("This node is ready")
    assert page.evaluate("() => window.__notReloaded === true")


def test_phone_width(console_server: ConsoleServer, browser: Browser) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844})
    try:
        page = context.new_page()
        health = HealthPage(page).open(console_server.url, console_server.read_token)
        expect(health.state_of(health.this_node)).to_have_text("ready")
        expect(health.chart("chart-rates").locator("canvas")).to_have_count(1)
        overflow = page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{overflow}px of horizontal overflow at phone width"
        for locator in (
            health.this_node,
            page.get_by_label("Time range"),
            health.chart("chart-latency"),
            page.locator("#latest"),
        ):
            locator.scroll_into_view_if_needed()
            expect(locator).to_be_in_viewport()
        # the time range is operable by keyboard
        page.get_by_label("Time range").focus()
        page.keyboard.press("ArrowDown")
        expect(page.get_by_label("Time range")).to_have_value("3600")
    finally:
        context.close()


# -- a fleet: two served nodes on one PostgreSQL log ---------------------------------------------


@pytest.fixture
def fleet(tmp_path: Path, pg_url: str) -> Iterator[tuple[list[str], str, str]]:
    """Two ``interlock serve`` nodes on one shared log: their URLs, a read and an admin token."""
    from interlock.bootstrap import init_home
    from interlock.home import Home, join_home

    first = init_home(tmp_path / "node1", origin="interlock.test/fleet", store=pg_url).path
    edit_config(first, "deadline_ms = 50", "deadline_ms = 5000")
    second = join_home(tmp_path / "node2", Home.load(first)).path
    read, admin = issue(first, AUDITOR, "admin:Admin::read"), issue(first, OPS, "admin:Admin::*")
    procs = []
    try:
        urls = []
        for home in (first, second):
            url, proc = start_server(home)
            urls.append(url)
            procs.append(proc)
        yield urls, read, admin
    finally:
        for proc in procs:
            stop_server(proc)


def _nodes(client: httpx.Client, want: int) -> list[dict[str, object]]:
    """The dashboard's nodes once ``want`` are listed (heartbeats come every lease/3)."""
    deadline = time.monotonic() + 30
    while True:
        got: list[dict[str, object]] = client.get("/console/api/health/nodes").json()["nodes"]
        if len(got) >= want or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def test_two_fleet_nodes_on_one_postgresql_log_are_both_listed_with_their_heartbeats(
    fleet: tuple[list[str], str, str], page: Page
) -> None:
    (url1, url2), read, admin = fleet
    ids = [httpx.get(u + "/healthz", timeout=10).json()["lease"]["node_id"] for u in (url1, url2)]
    with httpx.Client(base_url=url1, timeout=30) as c:
        assert c.post("/console/api/session", json={"token": read}).status_code == 200
        nodes = _nodes(c, 2)
        assert [n["node_id"] for n in nodes] == ids  # this node first, then the other
        me, other = nodes
        assert (me["this"], me["role"], me["state"]) == (True, "fleet", "ready")
        assert isinstance(me["lease"], dict) and me["lease"]["age_s"] is not None
        assert (other["this"], other["role"], other["state"]) == (False, "fleet", "ready")
        assert isinstance(other["heartbeat_age_s"], float)
        assert other["heartbeat_age_s"] < 10 and other["silent"] is False
        assert other["policy_version"] == me["policy_version"] == 1
        assert isinstance(other["log_size"], int) and other["log_size"] > 0

        # the kill switch set through node 2 is on the shared log: node 1 folds it and fails
        # closed, and shows node 2 fail-closed for it too; both come back when it is off
        other_card = f'article.node[data-node-id="{ids[1]}"]'
        health = HealthPage(page).open(url1, read)
        expect(health.cards).to_have_count(2)
        expect(health.state_of(page.locator(other_card))).to_have_text("ready")
        expect(health.figure(page.locator(other_card), "Last heartbeat")).to_contain_text("ago")
        try:
            _kill_switch(url2, admin, True)
            expect(health.this_node.locator(".reasons .code")).to_have_text(["POLICY_FORBID"])
            expect(health.state_of(page.locator(other_card))).to_have_text("fail-closed")
            expect(page.locator(other_card).locator(".reasons .code")).to_have_text(
                ["POLICY_FORBID"]
            )
            # and it is: node 2 itself answers not ready, with that code
            ready2 = httpx.get(url2 + "/readyz", timeout=10)
            assert ready2.status_code == 503
            assert any(r.startswith("POLICY_FORBID: ") for r in ready2.json()["reasons"])
        finally:
            _kill_switch(url2, admin, False)
        expect(health.state_of(health.this_node)).to_have_text("ready")
        expect(health.state_of(page.locator(other_card))).to_have_text("ready")
