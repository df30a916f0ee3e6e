"""The Runtime Governance Demo in a real Chromium against a real ``interlock serve``: no
sign-in, a scenario allowed stage by stage, then switches flipped — a revoked capability
denied at the capability stage, a locked ledger denied LEDGER_UNAVAILABLE — and the served
node's own home and ledger untouched."""

from __future__ import annotations

import hashlib
from pathlib import Path

from playwright.sync_api import Browser, Locator, Page, expect

from tests.e2e.console_harness import ConsoleServer, ledger_tail, screenshot

STAGES = ("intake", "capability", "environment", "lineage", "policy", "cedar", "record")


class DemoPage:
    """The demo page as a user sees it: the scenario, the switches, Run, the result."""

    def __init__(self, page: Page, url: str) -> None:
        self.page = page
        page.goto(url + "/console/demo")
        expect(page.get_by_role("heading", name="Runtime Governance Demo")).to_be_visible()

    def run(self, scenario: str, *switches: str) -> None:
        self.page.get_by_label("Scenario").select_option(label=scenario)
        for box in self.page.locator(".switches input[type=checkbox]").all():
            box.set_checked(False)
        for label in switches:
            self.page.get_by_label(label).check()
        self.page.get_by_role("button", name="Run").click()
        expect(self.page.locator("#result")).to_be_visible()

    def stage(self, name: str) -> Locator:
        return self.page.locator(f'#pipeline [data-stage="{name}"]')


def _node_state(server: ConsoleServer) -> tuple[int, dict[str, str]]:
    """The served node's last ledger entry (read by the real CLI) and its home's files
    (digests, but the ledger files by name: the node's own checks may rewrite their pages)."""
    (last,) = ledger_tail(server.home, 1)
    size = int(last["index"]) + 1
    files = {}
    for path in sorted(Path(server.home).rglob("*")):
        if path.is_file():
            rel = path.relative_to(server.home).as_posix()
            files[rel] = (
                "" if rel.startswith("ledger.db") else hashlib.sha256(path.read_bytes()).hexdigest()
            )
    return size, files


def test_a_scenario_runs_then_switches_break_it_fail_closed(
    console_server: ConsoleServer, page: Page
) -> None:
    before = _node_state(console_server)
    demo = DemoPage(page, console_server.url)
    expect(page.get_by_label("Capability token")).to_have_count(0)  # no sign-in

    demo.run("An allowed tool call")
    expect(page.locator("#verdict")).to_have_text("✓ ALLOW")
    for name in STAGES:
        expect(demo.stage(name)).to_have_attribute("data-status", "passed")
        expect(demo.stage(name)).to_contain_text("passed")
    expect(page.locator("#executed")).to_contain_text("yes")
    expect(page.locator("#ledger-index")).to_contain_text("recorded at index")

    demo.run("An allowed tool call", "Revoke the capability")
    expect(page.locator("#verdict")).to_have_text("✗ DENY")
    expect(demo.stage("capability")).to_have_attribute("data-status", "denied")
    expect(demo.stage("capability")).to_contain_text("CAPABILITY_REVOKED")
    expect(demo.stage("intake")).to_have_attribute("data-status", "passed")
    for name in ("environment", "lineage", "policy", "cedar"):
        expect(demo.stage(name)).to_contain_text("not reached")
    expect(page.locator("#verdict-reason")).to_contain_text("CAPABILITY_REVOKED")
    expect(page.locator("#executed")).to_contain_text("no")
    expect(page.locator("#ledger-index")).to_contain_text("recorded at index")
    expect(page.get_by_role("status")).to_contain_text("Denied CAPABILITY_REVOKED at Capability")
    # the reveal has settled (evaluate, not wait_for_function: that one needs eval, which
    # the page's CSP refuses)
    page.evaluate("Promise.all(document.getAnimations().map((a) => a.finished)).then(() => 1)")
    screenshot(page, "governance-demo")

    demo.run("An allowed tool call", "Locked ledger")
    expect(page.locator("#verdict")).to_have_text("✗ DENY")
    expect(demo.stage("record")).to_have_attribute("data-status", "denied")
    expect(demo.stage("record")).to_contain_text("LEDGER_UNAVAILABLE")
    expect(page.locator("#verdict-reason")).to_contain_text("LEDGER_UNAVAILABLE")
    expect(page.locator("#ledger-index")).to_contain_text("not recorded")
    expect(page.locator("#executed")).to_contain_text("no")

    # unbroken again: the demo home was only broken for that run
    demo.run("An allowed tool call")
    expect(page.locator("#verdict")).to_have_text("✓ ALLOW")

    assert _node_state(console_server) == before


def test_the_demo_works_at_phone_width(console_server: ConsoleServer, browser: Browser) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        demo = DemoPage(page, console_server.url)
        for control in (page.get_by_label("Scenario"), page.get_by_role("button", name="Run")):
            expect(control).to_be_visible()
        demo.run("Forbidden by policy", "Changed config")
        expect(demo.stage("environment")).to_contain_text("ENVIRONMENT_UNTRUSTED")
        expect(page.locator("#executed")).to_contain_text("no")
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0
        # the stages stack into a column
        first = demo.stage("intake").bounding_box()
        second = demo.stage("capability").bounding_box()
        assert first is not None and second is not None
        assert second["y"] > first["y"] + first["height"] - 1
        assert not errors, errors
    finally:
        context.close()


def test_the_page_is_keyboard_operable(console_server: ConsoleServer, page: Page) -> None:
    DemoPage(page, console_server.url)
    page.get_by_label("Scenario").focus()
    page.keyboard.press("Tab")  # the first switch
    page.keyboard.press("Space")
    expect(page.get_by_label("Revoke the capability")).to_be_checked()
    page.get_by_role("button", name="Run").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#verdict")).to_have_text("✗ DENY")
    expect(page.locator("#verdict-reason")).to_contain_text("CAPABILITY_REVOKED")
