"""What the browser-tool tests share: a real home with a populated ledger, a real
``interlock serve`` on it, credentials, Debian's Chromium through Playwright, and sign-in.

    def test_x(console_server, browser):
        page = new_page(browser)
        sign_in(page, console_server.url + "/console", console_server.read_token)

Screenshots: with ``INTERLOCK_SCREENSHOTS=1``, :func:`screenshot` writes ``docs/img/<name>.png``.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import RESEARCHER, SUMMARIZER, edit_config
from tests.e2e.test_exec import EXE, _env, cli
from tests.e2e.test_serve_cli import _free_port, _wait_ready

CHROMIUM = os.environ.get("INTERLOCK_CHROMIUM", "/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
OPS = "spiffe://acme.test/human/ops"
AUDITOR = "spiffe://acme.test/human/auditor"


def _ok(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0, r.stderr
    return r.stdout


def issue(home: Path, principal: str, *rights: str, ttl: str = "1h") -> str:
    """A capability for ``principal`` with ``rights``, issued by the real CLI."""
    args = ["token", "issue", "--principal", principal, "--ttl", ttl]
    for right in rights:
        args += ["--right", right]
    return _ok(cli(home, *args)).strip()


@dataclass
class ConsoleServer:
    """A running ``interlock serve`` on a home of its own."""

    home: Path
    url: str
    proc: subprocess.Popen[str]
    read_token: str
    admin_token: str
    agent_tokens: dict[str, str] = field(default_factory=dict)

    def decide(self, principal: str, tool: str, **args: Any) -> dict[str, Any]:
        """One decision over the HTTP API (``tool.call`` on ``Tool::<tool>``)."""
        body = {
            "principal": principal,
            "action": "tool.call",
            "resource": {"type": "Tool", "id": tool},
            "args": args or {"q": "x"},
            "capability": self.agent_tokens[principal],
        }
        r = httpx.post(self.url + "/v1/decisions", json=body, timeout=30)
        assert r.status_code in (200, 403), r.text
        out: dict[str, Any] = r.json()
        return out


def start_server(home: Path, *extra: str) -> tuple[str, subprocess.Popen[str]]:
    port = _free_port()
    proc = subprocess.Popen(
        [*EXE, "serve", "--port", str(port), "--log-level", "warning", *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(home),
    )
    url = f"http://127.0.0.1:{port}"
    _wait_ready(proc, url)
    return url, proc


def stop_server(proc: subprocess.Popen[str]) -> None:
    """Stop a server (again, harmlessly, if it was stopped already)."""
    if proc.returncode is None:
        proc.terminate()
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def make_home(base: Path, origin: str = "interlock.test/console") -> Path:
    from interlock.bootstrap import init_home

    home = init_home(base / "home", origin=origin).path
    edit_config(home, "deadline_ms = 50", "deadline_ms = 2000")
    return home


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleServer]:
    """A served home with a few allows and denials by two agents already on the ledger."""
    home = make_home(tmp_path_factory.mktemp("console"))
    read_token = issue(home, AUDITOR, "admin:Admin::read")
    admin_token = issue(home, OPS, "admin:Admin::*")
    agents = {
        RESEARCHER: issue(home, RESEARCHER, "tool.call:Tool::*"),
        SUMMARIZER: issue(home, SUMMARIZER, "tool.call:Tool::*"),
    }
    url, proc = start_server(home)
    server = ConsoleServer(home, url, proc, read_token, admin_token, agents)
    try:
        for principal, tool in [
            (RESEARCHER, "web_search"),
            (RESEARCHER, "delete_database"),
            (SUMMARIZER, "web_search"),
            (RESEARCHER, "send_email"),
            (SUMMARIZER, "delete_database"),
        ]:
            server.decide(principal, tool)
        yield server
    finally:
        stop_server(proc)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(
            f"no Chromium at {CHROMIUM}: scripts/ensure-chromium.sh installs Debian's `chromium`"
            " (as root, with apt); Playwright's own browser download cannot work here"
        )
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A 1280x800 page that fails the test on any uncaught script error or CSP violation."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on(
        "console",
        lambda m: (
            errors.append(m.text)
            if m.type == "error" and "Content Security Policy" in m.text
            else None
        ),
    )
    yield pg
    context.close()
    assert not errors, errors


def sign_in(page: Page, url: str, token: str) -> None:
    """Open ``url`` and sign in through the page's own form."""
    page.goto(url)
    page.get_by_label("Capability token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#sign-out")).to_be_visible()


def screenshot(page: Page, name: str) -> None:
    """Write docs/img/<name>.png when INTERLOCK_SCREENSHOTS=1 (docs are regenerated on
    purpose, not by every test run)."""
    if os.environ.get("INTERLOCK_SCREENSHOTS") == "1":
        page.screenshot(path=str(ROOT / "docs" / "img" / f"{name}.png"), full_page=False)


def ledger_tail(home: Path, n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = json.loads(_ok(cli(home, "ledger", "tail", "-n", str(n), "--json")))
    return out
