"""The Governance Console in a real Chromium against a real ``interlock serve``.

The home requires a human approval for the lead researcher's non-research tools (policy v2,
uploaded over the admin API while serving, so two versions are on the ledger) and trusts one
approver key, which the browser itself uses to sign an approval. Every action goes through the
page as an operator would: sign in, filter, open a decision, revoke, quarantine, kill switch,
approve, diff, impact.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from interlock.home import Home
from interlock.ledger.proof import parse_proof
from interlock.policy.bundle import load_bundle, sign_bundle
from interlock.trust import keys
from interlock.trust.receipt import decode_receipt
from tests.conftest import RESEARCHER, SUMMARIZER, edit_config
from tests.e2e.console_harness import (
    AUDITOR,
    OPS,
    ConsoleServer,
    issue,
    make_home,
    screenshot,
    sign_in,
    start_server,
    stop_server,
)

TEMP = "spiffe://acme.test/agent/temp"


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleServer]:
    base = tmp_path_factory.mktemp("gov-console")
    home = make_home(base)
    approver = keys.create_key(base / "approver.key")
    edit_config(home, "keys = []", f'keys = ["{keys.public_raw(approver).hex()}"]')
    server = ConsoleServer(
        home,
        "",
        None,  # type: ignore[arg-type]
        issue(home, AUDITOR, "admin:Admin::read"),
        issue(home, OPS, "admin:Admin::*"),
        {p: issue(home, p, "tool.call:Tool::*") for p in (RESEARCHER, SUMMARIZER)},
    )
    server.url, server.proc = start_server(home)
    try:
        for principal, tool in [
            (RESEARCHER, "web_search"),
            (RESEARCHER, "delete_database"),
            (SUMMARIZER, "web_search"),
            (SUMMARIZER, "send_email"),
            (RESEARCHER, "read_file"),
        ]:
            server.decide(principal, tool)
        _upload_policy_v2(server, base)
        assert server.decide(RESEARCHER, "send_email")["reasons"][0]["code"] == "APPROVAL_REQUIRED"
        yield server
    finally:
        stop_server(server.proc)


def _upload_policy_v2(server: ConsoleServer, base: Path) -> None:
    """The lead researcher's any-tool permit now needs a human approval (version 2)."""
    folder = base / "policy-v2"
    shutil.copytree(server.home / "policy", folder)
    pol = folder / "policies.cedar"
    pol.write_text(
        pol.read_text().replace(
            '@id("lead-any-tool")\n', '@id("lead-any-tool")\n@obligation("approval")\n'
        )
    )
    home = Home.load(server.home)
    sign_bundle(folder, home.private_key("policy"), version=2)
    blob = load_bundle(folder, home.trusted_policy_keys()).to_blob()
    r = httpx.put(
        server.url + "/v1/admin/policy",
        content=blob,
        headers={
            "Authorization": f"Bearer {server.admin_token}",
            "Content-Type": "application/json",
        },
        timeout=30,
    )
    assert r.status_code == 200, r.text


def _rows(page: Page) -> list[dict[str, str]]:
    """The table as drawn now (read in one evaluation: the stream may redraw it meanwhile)."""
    cells: list[list[str]] = page.evaluate(
        "[...document.querySelectorAll('#decisions tr')]"
        ".map(tr => [...tr.cells].map(td => td.innerText.trim()))"
    )
    return [
        {"index": c[0], "principal": c[2], "effect": c[5], "code": c[6]}
        for c in cells
        if len(c) == 7
    ]


def _indexed(url: str, index: int, **cookies: str) -> list[dict[str, Any]]:
    """The console's decisions once the index has caught up with ledger ``index``."""
    deadline = time.monotonic() + 10
    while True:
        rows: list[dict[str, Any]] = httpx.get(
            url + "/console/api/decisions", cookies=cookies, timeout=10
        ).json()["decisions"]
        if any(r["index"] >= index for r in rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def _as_admin(page: Page, server: ConsoleServer) -> None:
    sign_in(page, server.url + "/console", server.admin_token)
    expect(page.locator("#decisions tr").first).to_be_visible()


def _confirm(page: Page, reason: str) -> None:
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Reason (recorded on the ledger)").fill(reason)
    dialog.locator("button[value=ok]").click()


# --- the stream and its filters ------------------------------------------------------------------


def test_filtered_stream_shows_new_denials_live_and_not_allows(
    console: ConsoleServer, page: Page
) -> None:
    sign_in(page, console.url + "/console", console.read_token)
    expect(page.locator("#decisions tr").first).to_be_visible()
    page.get_by_label("Effect").select_option("deny")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#decisions tr td:nth-child(6)", has_text="allow")).to_have_count(0)
    assert _rows(page) and {r["effect"] for r in _rows(page)} == {"deny"}
    before = len(_rows(page))
    allowed = console.decide(SUMMARIZER, "summarize")
    denied = console.decide(SUMMARIZER, "delete_database")
    assert allowed["effect"] == "allow" and denied["effect"] == "deny"
    row = page.locator(f'#decisions tr[data-index="{denied["ledger_index"]}"]')
    expect(row).to_be_visible()  # arrived through the event stream, without a reload
    expect(row.locator("td").nth(6)).to_have_text("POLICY_FORBID")
    assert page.locator(f'#decisions tr[data-index="{allowed["ledger_index"]}"]').count() == 0
    assert len(_rows(page)) == before + 1
    # by principal and reason code, from history
    page.get_by_label("Principal").fill(RESEARCHER)
    page.get_by_label("Reason code").fill("POLICY_FORBID")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#decisions tr")).to_have_count(1)
    assert _rows(page)[0]["principal"] == RESEARCHER


def test_paging_reaches_older_decisions(console: ConsoleServer) -> None:
    with httpx.Client(base_url=console.url, timeout=10) as c:
        c.post("/console/api/session", json={"token": console.read_token})
        first = c.get("/console/api/decisions", params={"limit": 2}).json()
        second = c.get(
            "/console/api/decisions", params={"limit": 2, "before": first["next_before"]}
        ).json()
        everything = c.get("/console/api/decisions", params={"limit": 500}).json()
    indexes = [d["index"] for d in first["decisions"] + second["decisions"]]
    assert indexes == [d["index"] for d in everything["decisions"][:4]]
    assert indexes == sorted(indexes, reverse=True)


# --- a decision's detail -------------------------------------------------------------------------


def test_a_decisions_detail_downloads_its_proof_and_receipt(
    console: ConsoleServer, page: Page
) -> None:
    sign_in(page, console.url + "/console", console.read_token)
    first = page.locator("#decisions tr").first
    index = int(first.get_attribute("data-index") or -1)
    first.click()
    detail = page.locator("#detail")
    expect(detail.get_by_role("heading", name=re.compile(f"Decision {index}"))).to_be_visible()
    expect(detail.locator("#capability")).to_contain_text("tool.call:Tool::*")
    expect(detail.locator("#reasons li").first).to_be_visible()
    with page.expect_download() as dl:
        detail.locator("#download-proof").click()
    proof = Path(dl.value.path()).read_text()
    assert parse_proof(proof).index == index
    with page.expect_download() as dl:
        detail.locator("#download-receipt").click()
    receipt = decode_receipt(Path(dl.value.path()).read_text())
    assert receipt["payloadType"]
    # a read-only operator is shown no action
    assert detail.locator("#revoke").count() == 0
    assert page.locator("#kill-switch").count() == 0


# --- actions -------------------------------------------------------------------------------------


def test_revoking_a_capability_turns_the_principals_next_decision_into_a_denial(
    console: ConsoleServer, page: Page
) -> None:
    token = issue(console.home, TEMP, "tool.call:Tool::*")
    console.agent_tokens[TEMP] = token
    first = console.decide(TEMP, "web_search")
    assert first["effect"] == "deny"  # TEMP is in no team: POLICY_NO_PERMIT, but it has a token
    _as_admin(page, console)
    page.get_by_label("Principal").fill(TEMP)
    page.get_by_role("button", name="Apply").click()
    row = page.locator(f'#decisions tr[data-index="{first["ledger_index"]}"]')
    row.click()
    page.locator("#detail #revoke").click()
    _confirm(page, "leaked in a log")
    expect(page.locator("#status")).to_contain_text("capability.revoked")
    nxt = console.decide(TEMP, "web_search")
    new_row = page.locator(f'#decisions tr[data-index="{nxt["ledger_index"]}"]')
    expect(new_row).to_be_visible()
    expect(new_row.locator("td").nth(6)).to_have_text("CAPABILITY_REVOKED")
    tail = httpx.get(f"{console.url}/v1/ledger/entries/{nxt['ledger_index'] - 1}", timeout=10)
    assert tail.json()["record"]["event"] == "capability.revoked"
    assert "via the console" in tail.json()["record"]["reason"]


def test_quarantine_and_release_from_the_principals_view(
    console: ConsoleServer, page: Page
) -> None:
    _as_admin(page, console)
    page.get_by_role("tab", name="Principals").click()
    page.locator(f'#principals tr[data-principal="{SUMMARIZER}"]').click()
    panel = page.locator("#principal-detail")
    expect(panel.locator("#capabilities")).to_contain_text("tool.call:Tool::*")
    panel.locator("#quarantine-principal").click()
    _confirm(page, "investigating")
    expect(panel.get_by_text("quarantined").first).to_be_visible()
    denied = console.decide(SUMMARIZER, "web_search")
    assert denied["reasons"][0]["code"] == "PRINCIPAL_QUARANTINED"
    panel.locator("#release").click()
    _confirm(page, "cleared")
    expect(panel.locator("#quarantine-principal")).to_be_visible()
    assert console.decide(SUMMARIZER, "web_search")["effect"] == "allow"


def test_kill_switch_on_and_off_from_the_console(console: ConsoleServer, page: Page) -> None:
    _as_admin(page, console)
    page.locator("#kill-switch").click()
    _confirm(page, "incident drill")
    expect(page.locator("#overview")).to_contain_text("ON")
    expect(page.locator("#overview")).to_contain_text("fail-closed")
    denied = console.decide(SUMMARIZER, "summarize")
    assert denied["effect"] == "deny" and denied["reasons"][0]["code"] == "POLICY_FORBID"
    page.locator("#kill-switch").click()
    _confirm(page, "drill over")
    expect(page.locator("#overview")).to_contain_text("ready")
    assert console.decide(SUMMARIZER, "summarize")["effect"] == "allow"


def test_actions_need_the_admin_right_csrf_and_same_origin(console: ConsoleServer) -> None:
    body = {"on": True, "reason": "x"}
    size = httpx.get(console.url + "/healthz", timeout=10).json()["ledger_size"]
    with httpx.Client(base_url=console.url, timeout=10) as reader:
        csrf = reader.post("/console/api/session", json={"token": console.read_token}).json()
        r = reader.post(
            "/console/api/actions/kill-switch",
            json=body,
            headers={"X-Interlock-CSRF": csrf["csrf"], "Origin": console.url},
        )
        assert r.status_code == 403  # a read-only credential
    with httpx.Client(base_url=console.url, timeout=10) as admin:
        csrf = admin.post("/console/api/session", json={"token": console.admin_token}).json()
        assert admin.post("/console/api/actions/kill-switch", json=body).status_code == 403
        r = admin.post(
            "/console/api/actions/kill-switch",
            json=body,
            headers={"X-Interlock-CSRF": "wrong", "Origin": console.url},
        )
        assert r.status_code == 403
        r = admin.post(
            "/console/api/actions/kill-switch",
            json=body,
            headers={"X-Interlock-CSRF": csrf["csrf"], "Origin": "https://evil.example"},
        )
        assert r.status_code == 403
    assert (
        httpx.post(console.url + "/console/api/actions/kill-switch", json=body).status_code == 401
    )
    after = httpx.get(console.url + "/healthz", timeout=10).json()["ledger_size"]
    assert after == size  # nothing was recorded
    assert console.decide(SUMMARIZER, "summarize")["effect"] == "allow"


# --- approvals -----------------------------------------------------------------------------------


def test_an_approval_signed_in_the_browser_allows_exactly_that_request(
    console: ConsoleServer, page: Page
) -> None:
    waiting = console.decide(RESEARCHER, "send_email", to="ops@acme.test")
    assert waiting["reasons"][0]["code"] == "APPROVAL_REQUIRED"
    _as_admin(page, console)
    page.get_by_role("tab", name="Approvals").click()
    card = page.locator(f'article.approval[data-index="{waiting["ledger_index"]}"]')
    expect(card).to_contain_text("ops@acme.test")
    page.get_by_label("Approver key (PKCS#8 PEM, Ed25519)").set_input_files(
        str(console.home.parent / "approver.key")
    )
    card.get_by_role("button", name="Approve this exact request").click()
    text = card.locator("textarea.approval-text")
    expect(text).to_be_visible()
    approval = text.input_value().strip()
    request: dict[str, Any] = {
        "principal": RESEARCHER,
        "action": "tool.call",
        "resource": {"type": "Tool", "id": "send_email"},
        "args": {"to": "ops@acme.test"},
        "capability": console.agent_tokens[RESEARCHER],
        "approval": approval,
    }
    ok = httpx.post(console.url + "/v1/decisions", json=request, timeout=30).json()
    assert ok["effect"] == "allow", ok
    request["args"] = {"to": "everyone@acme.test"}  # another action: the approval does not bind
    other = httpx.post(console.url + "/v1/decisions", json=request, timeout=30).json()
    assert other["effect"] == "deny"
    assert other["reasons"][0]["code"] == "APPROVAL_REQUIRED"


def test_an_approval_that_does_not_verify_is_refused(console: ConsoleServer) -> None:
    waiting = console.decide(RESEARCHER, "send_email", to="x@acme.test")
    with httpx.Client(base_url=console.url, timeout=10) as admin:
        csrf = admin.post("/console/api/session", json={"token": console.admin_token}).json()
        r = admin.post(
            f"/console/api/approvals/{waiting['ledger_index']}",
            json={"approval": "e30"},
            headers={"X-Interlock-CSRF": csrf["csrf"], "Origin": console.url},
        )
    assert r.status_code == 422
    assert "does not verify" in r.json()["detail"]


# --- policy --------------------------------------------------------------------------------------


def test_policy_versions_diff_and_the_impact_of_an_edit(console: ConsoleServer, page: Page) -> None:
    sign_in(page, console.url + "/console", console.read_token)
    page.get_by_role("tab", name="Policy").click()
    expect(page.locator("#versions tbody tr")).to_have_count(2)
    page.get_by_role("button", name="Show diff").click()
    expect(page.locator("#diff-out")).to_contain_text('+@obligation("approval")')
    page.get_by_label("File to edit").select_option("policies.cedar")
    editor = page.get_by_label("Policy text")
    editor.fill(
        editor.input_value()
        + '\n@id("no-search")\nforbid (principal, action, resource == Tool::"web_search");\n'
    )
    page.get_by_role("button", name="Evaluate impact").click()
    summary = page.locator("#impact-summary")
    expect(summary).to_contain_text("would change")
    rows = page.locator("#impact-table tbody tr")
    expect(rows.first).to_be_visible()
    texts = rows.all_inner_texts()
    assert texts and all("Tool::web_search" in t and "POLICY_FORBID" in t for t in texts)
    m = re.match(r"(\d+) of (\d+)", summary.inner_text())
    assert m is not None and int(m.group(1)) == len(texts)


def test_impact_refuses_a_candidate_that_does_not_load(console: ConsoleServer) -> None:
    with httpx.Client(base_url=console.url, timeout=10) as c:
        c.post("/console/api/session", json={"token": console.read_token})
        r = c.post("/console/api/policies/impact", json={"files": {"policies.cedar": "permit (;"}})
        assert r.status_code == 422
        assert "does not load" in r.json()["detail"]
        r = c.post("/console/api/policies/impact", json={"files": {"../etc/passwd": "x"}})
        assert r.status_code == 422


# --- public mode, phone width, screenshot --------------------------------------------------------


def test_published_read_only_with_principals_redacted(tmp_path: Path, browser: Browser) -> None:
    home = make_home(tmp_path)
    token = issue(home, RESEARCHER, "tool.call:Tool::*")
    url, proc = start_server(home, "--console-public", "--console-redact", "principal,args")
    try:
        body = {
            "principal": RESEARCHER,
            "action": "tool.call",
            "resource": {"type": "Tool", "id": "web_search"},
            "args": {"secret": "s3cr3t"},
            "capability": token,
        }
        index = httpx.post(url + "/v1/decisions", json=body, timeout=30).json()["ledger_index"]
        rows = _indexed(url, index)
        assert rows and all(re.fullmatch(r"principal:[0-9a-f]{8}", r["principal"]) for r in rows)
        detail = httpx.get(f"{url}/console/api/decisions/{index}", timeout=10).json()
        text = json.dumps(detail)
        assert RESEARCHER not in text and "s3cr3t" not in text and token not in text
        r = httpx.post(url + "/console/api/actions/kill-switch", json={"on": True, "reason": "x"})
        assert r.status_code == 401
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        page.goto(url + "/console")
        expect(page.locator("header.top")).to_contain_text("Public read-only view")
        expect(page.locator("#decisions tr").first).to_contain_text("principal:")
        context.close()
    finally:
        stop_server(proc)


def test_usable_at_phone_width(console: ConsoleServer, browser: Browser) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    sign_in(page, console.url + "/console", console.read_token)
    expect(page.locator("#decisions tr").first).to_be_visible()
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px"
    for name in ("Apply", "Older"):
        expect(page.get_by_role("button", name=name)).to_be_visible()
    page.locator("#decisions tr").first.click()
    expect(page.locator("#detail")).to_be_visible()
    context.close()


def test_keyboard_reaches_a_decision_and_its_detail(console: ConsoleServer, page: Page) -> None:
    sign_in(page, console.url + "/console", console.read_token)
    first = page.locator("#decisions tr").first
    first.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#detail h2")).to_be_visible()
    page.get_by_role("tab", name="Decisions").focus()
    page.keyboard.press("ArrowRight")
    expect(page.get_by_role("tab", name="Principals")).to_have_attribute("aria-selected", "true")


def test_screenshot_of_the_console(console: ConsoleServer, page: Page) -> None:
    _as_admin(page, console)
    page.locator("#decisions tr").nth(1).click()
    expect(page.locator("#detail #download-proof")).to_be_visible()
    screenshot(page, "governance-console")
