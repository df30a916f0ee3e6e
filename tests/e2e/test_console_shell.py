"""The console's shared shell in a real Chromium: pages, CSP, sign-in, sessions, CSRF."""

from __future__ import annotations

import json

import httpx
from playwright.sync_api import Page, expect

from tests.e2e.console_harness import ConsoleServer, issue, sign_in


def test_pages_are_served_with_a_self_only_csp_and_no_third_party_origin(
    console_server: ConsoleServer,
) -> None:
    for path in ("/console", "/console/health", "/console/lineage", "/console/demo"):
        r = httpx.get(console_server.url + path, timeout=10)
        assert r.status_code == 200, path
        csp = dict(d.strip().split(" ", 1) for d in r.headers["content-security-policy"].split(";"))
        assert csp["default-src"] == "'none'"
        assert csp["script-src"] == "'self'"
        assert csp["connect-src"] == "'self'"
        assert csp["frame-ancestors"] == "'none'"
        assert "http://" not in r.text and "https://" not in r.text
    for name in ("console.js", "console.css", "health.js", "lineage.js", "demo.js"):
        r = httpx.get(f"{console_server.url}/console/static/{name}", timeout=10)
        assert r.status_code == 200, name
    for bad in ("../app.py", "console.html.js", "x.js", "console.map", "%2e%2e%2fapp.py"):
        r = httpx.get(f"{console_server.url}/console/static/{bad}", timeout=10)
        assert r.status_code == 404, bad


def test_data_needs_a_read_credential(console_server: ConsoleServer) -> None:
    r = httpx.get(console_server.url + "/console/api/decisions", timeout=10)
    assert r.status_code == 401
    agent = next(iter(console_server.agent_tokens.values()))
    r = httpx.post(console_server.url + "/console/api/session", json={"token": agent}, timeout=10)
    assert r.status_code == 403  # an agent's tool.call token is no read credential
    with httpx.Client(base_url=console_server.url, timeout=10) as c:
        r = c.post("/console/api/session", json={"token": console_server.read_token})
        assert r.status_code == 200
        assert r.json()["rights"] == ["read"]
        assert "httponly" in r.headers["set-cookie"].lower()
        assert "samesite=strict" in r.headers["set-cookie"].lower()
        assert c.get("/console/api/decisions").status_code == 200


def test_revoking_the_read_credential_ends_its_session_at_once(
    console_server: ConsoleServer,
) -> None:
    token = issue(console_server.home, "spiffe://acme.test/human/temp", "admin:Admin::read")
    with httpx.Client(base_url=console_server.url, timeout=10) as c:
        assert c.post("/console/api/session", json={"token": token}).status_code == 200
        assert c.get("/console/api/decisions").status_code == 200
        r = httpx.post(
            console_server.url + "/v1/admin/revocations",
            json={"token": token, "reason": "test"},
            headers={"Authorization": f"Bearer {console_server.admin_token}"},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        assert c.get("/console/api/decisions").status_code in (401, 403)


def test_sign_in_through_the_page(console_server: ConsoleServer, page: Page) -> None:
    sign_in(page, console_server.url + "/console", console_server.read_token)
    expect(page.locator("header.top")).to_contain_text("spiffe://acme.test/human/auditor")
    page.locator("#sign-out").click()
    expect(page.get_by_label("Capability token")).to_be_visible()


def test_a_wrong_token_is_refused_in_the_page(console_server: ConsoleServer, page: Page) -> None:
    page.goto(console_server.url + "/console")
    page.get_by_label("Capability token").fill("not-a-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("CAPABILITY_INVALID")


def test_a_decisions_detail_has_its_proof_receipt_and_chain_but_never_the_token(
    console_server: ConsoleServer,
) -> None:
    from interlock.ledger.proof import parse_proof

    with httpx.Client(base_url=console_server.url, timeout=10) as c:
        assert c.post("/console/api/session", json={"token": console_server.read_token}).is_success
        rows = c.get("/console/api/decisions", params={"effect": "allow"}).json()["decisions"]
        assert rows and all(r["effect"] == "allow" for r in rows)
        detail = c.get(f"/console/api/decisions/{rows[0]['index']}").json()
    assert detail["record"]["id"] == rows[0]["id"]
    assert parse_proof(detail["proof"]).index == rows[0]["index"]
    assert detail["receipt"] and detail["vkey"]
    assert detail["capability"]["rights"] == ["tool.call:Tool::*"]
    assert detail["request"]["args"] == {"q": "x"}
    text = json.dumps(detail)
    for token in console_server.agent_tokens.values():
        assert token not in text
