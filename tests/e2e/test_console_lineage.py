"""The Execution Lineage Explorer in a real Chromium against a real ``interlock serve``: a
real chain of executions (started, ended, denied, terminated by a revocation), searched by
principal and trace id, a node's decision, receipt and proof, and a chain proven hop by hop
in the browser — and a tampered proof or a substituted hop failing at the right hop and step.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route, expect

from tests.conftest import RESEARCHER, SUMMARIZER
from tests.e2e.console_harness import (
    AUDITOR,
    OPS,
    _ok,
    issue,
    make_home,
    screenshot,
    sign_in,
    start_server,
    stop_server,
)
from tests.e2e.test_exec import cli

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
LONE_TRACE = "0af7651916cd43dd8448eb211c80319c"


def _tp(trace: str) -> str:
    return f"00-{trace}-00f067aa0ba902b7-01"


@dataclass
class Chain:
    """root ─┬─ child ─┬─ grandchild (ended)      root, child: running
             │         └─ decided (allowed)
             ├─ denied (POLICY_FORBID)
             └─ killed (terminated: its capability was revoked)
    lone: a decision without parent, on another trace."""

    url: str
    home: Path
    read_token: str
    ids: dict[str, str]
    index: dict[str, int]

    def name_of(self, exec_id: str) -> str:
        return next(k for k, v in self.ids.items() if v == exec_id)


STATES = {
    "root": "running",
    "child": "running",
    "grandchild": "ended",
    "decided": "allowed",
    "denied": "denied",
    "killed": "terminated",
}


def _request(token: str, principal: str, tool: str = "web_search", **extra: Any) -> dict[str, Any]:
    return {
        "principal": principal,
        "action": "tool.call",
        "resource": {"type": "Tool", "id": tool},
        "args": {"q": "lineage"},
        "capability": token,
        "traceparent": _tp(TRACE),
        **extra,
    }


def _start(http: httpx.Client, body: dict[str, Any]) -> str:
    r = http.post("/v1/executions", json=body)
    assert r.status_code == 201, r.text
    out: str = r.json()["execution_id"]
    return out


def _attenuate(home: Path, token: str, parent: str, to: str) -> str:
    return _ok(
        cli(home, "token", "attenuate", token, "--parent", parent, "--delegate-to", to)
    ).strip()


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    home = make_home(tmp_path_factory.mktemp("lineage"))
    read_token = issue(home, AUDITOR, "admin:Admin::read")
    admin_token = issue(home, OPS, "admin:Admin::revocation")
    lead = issue(home, RESEARCHER, "tool.call:Tool::*")
    own = issue(home, SUMMARIZER, "tool.call:Tool::*")
    url, proc = start_server(home)
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            ids: dict[str, str] = {}
            ids["root"] = _start(http, _request(lead, RESEARCHER))
            # the sub-agent's capabilities are the lead's, narrowed to one parent execution
            to_root = _attenuate(home, lead, ids["root"], SUMMARIZER)
            ids["child"] = _start(http, _request(to_root, SUMMARIZER, parent=ids["root"]))
            to_child = _attenuate(home, lead, ids["child"], SUMMARIZER)
            ids["grandchild"] = _start(http, _request(to_child, SUMMARIZER, parent=ids["child"]))
            r = http.patch(
                f"/v1/executions/{ids['grandchild']}",
                json={"exit_status": 0},
                headers={"Authorization": f"Bearer {to_child}"},
            )
            assert r.status_code == 200, r.text
            d = http.post(
                "/v1/decisions", json=_request(to_child, SUMMARIZER, parent=ids["child"])
            ).json()
            assert d["effect"] == "allow", d
            ids["decided"] = d["request_id"]
            d = http.post(
                "/v1/decisions",
                json=_request(to_root, SUMMARIZER, "delete_database", parent=ids["root"]),
            ).json()
            assert d["effect"] == "deny" and d["reasons"][0]["code"] == "POLICY_FORBID", d
            ids["denied"] = d["request_id"]
            ids["killed"] = _start(http, _request(own, SUMMARIZER, parent=ids["root"]))
            r = http.post(
                "/v1/admin/revocations",
                json={"token": own, "reason": "lineage test"},
                headers={"Authorization": f"Bearer {admin_token}"},
            )
            assert r.status_code == 200, r.text
            _wait_terminated(http, ids["killed"])
            lone = _request(lead, RESEARCHER, "read_file", traceparent=_tp(LONE_TRACE))
            ids["lone"] = http.post("/v1/decisions", json=lone).json()["request_id"]
            index = {
                k: http.get(f"/v1/executions/{v}").json()["decision_index"] for k, v in ids.items()
            }
            for name, state in STATES.items():
                assert http.get(f"/v1/executions/{ids[name]}").json()["status"] == state, name
        yield Chain(url=url, home=home, read_token=read_token, ids=ids, index=index)
    finally:
        stop_server(proc)


def _wait_terminated(http: httpx.Client, exec_id: str) -> None:
    """The verifier terminates within its interval; a fixture, not an assertion on time."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = http.get(f"/v1/executions/{exec_id}").json()
        if got["status"] == "terminated" and "terminated_index" in got:
            return
        time.sleep(0.05)
    raise AssertionError(f"{exec_id} was not terminated: {got}")


# -- a page object -------------------------------------------------------------------------------


class Explorer:
    def __init__(self, page: Page, chain: Chain) -> None:
        self.page = page
        self.chain = chain

    def open(self) -> Explorer:
        sign_in(self.page, self.chain.url + "/console/lineage", self.chain.read_token)
        expect(self.page.locator("html")).to_have_attribute("data-ready", "true")
        return self

    def search(self, principal: str = "", trace: str = "", linked: bool = True) -> None:
        self.page.get_by_label("Principal").fill(principal)
        self.page.get_by_label("Trace id").fill(trace)
        self.page.get_by_label("Only executions in a chain").set_checked(linked)
        before = int(self.page.locator("html").get_attribute("data-searched") or 0)
        self.page.get_by_role("button", name="Search", exact=True).click()
        # this search's answer is drawn: the rows and graph are not an earlier search's
        self.page.wait_for_function(
            "n => Number(document.documentElement.dataset.searched || 0) > n", arg=before
        )
        expect(self.page.locator("#lineage-status")).not_to_have_attribute("aria-busy", "true")

    def graph_states(self) -> dict[str, str]:
        nodes = self.page.evaluate("() => globalThis.interlockLineage.graphNodes()")
        out = {}
        for n in nodes:
            (state,) = [c.removeprefix("state-") for c in n["classes"] if c.startswith("state-")]
            out[self.chain.name_of(n["id"])] = state
        return out

    def expect_nodes(self, count: int) -> None:
        expect(self.page.locator("#node-list tbody tr")).to_have_count(count)

    def row(self, name: str) -> Any:
        return self.page.locator(f'#node-list tr[data-id="{self.chain.ids[name]}"]')

    def select_in_list(self, name: str) -> None:
        self.row(name).get_by_role("button").click()
        expect(self.page.locator("#detail-id")).to_have_text(self.chain.ids[name])

    def click_in_graph(self, name: str) -> None:
        nodes = self.page.evaluate("() => globalThis.interlockLineage.graphNodes()")
        (node,) = [n for n in nodes if n["id"] == self.chain.ids[name]]
        box = self.page.locator("#graph").bounding_box()
        assert box is not None
        self.page.mouse.click(box["x"] + node["position"]["x"], box["y"] + node["position"]["y"])

    def prove(self) -> Any:
        self.page.get_by_role("button", name="Prove chain").click()
        verdict = self.page.locator("#chain-verdict")
        expect(verdict).not_to_have_attribute("data-verdict", "running")
        return verdict


# -- the tests ----------------------------------------------------------------------------------


def test_search_by_principal_and_by_trace_id(chain: Chain, page: Page) -> None:
    ui = Explorer(page, chain).open()
    ui.search(principal=SUMMARIZER)
    # every summarizer execution, hanging from the researcher's root
    ui.expect_nodes(6)
    expect(page.locator("#lineage-status")).to_contain_text("6 executions, 5 links")
    assert ui.graph_states() == STATES
    edges = page.evaluate("() => globalThis.interlockLineage.graphEdges()")
    assert {(chain.name_of(e["source"]), chain.name_of(e["target"])) for e in edges} == {
        ("root", "child"),
        ("child", "grandchild"),
        ("child", "decided"),
        ("root", "denied"),
        ("root", "killed"),
    }
    # the list says the state in words, not in colour alone
    for name, state in STATES.items():
        expect(ui.row(name)).to_have_class(f"state-{state}")
        expect(ui.row(name).locator(".badge")).to_contain_text(state)
    expect(ui.row("denied")).to_contain_text("POLICY_FORBID")

    ui.search(trace=TRACE)
    ui.expect_nodes(6)
    assert ui.graph_states() == STATES
    ui.search(trace=LONE_TRACE)
    expect(page.locator("#lineage-status")).to_have_text("No executions match.")
    ui.search(trace=LONE_TRACE, linked=False)  # the lone decision is in no chain
    ui.expect_nodes(1)
    assert ui.graph_states() == {"lone": "allowed"}
    assert "?trace=" in page.url


def test_selecting_a_node_shows_its_decision_receipt_and_proof(chain: Chain, page: Page) -> None:
    ui = Explorer(page, chain).open()
    ui.search(trace=TRACE)
    ui.expect_nodes(6)
    ui.click_in_graph("grandchild")  # in the graph: selected in the list too
    expect(ui.row("grandchild")).to_have_attribute("aria-current", "true")
    expect(page.locator("#detail-id")).to_have_text(chain.ids["grandchild"])
    selected = [n for n in ui.page.evaluate("() => globalThis.interlockLineage.graphNodes()")]
    assert [chain.name_of(n["id"]) for n in selected if n["selected"]] == ["grandchild"]
    detail = page.locator("#detail")
    expect(detail).to_contain_text(SUMMARIZER)
    expect(detail).to_contain_text(str(chain.index["grandchild"]))
    expect(page.locator("#detail-decision")).to_contain_text("allow")
    with page.expect_download() as info:
        page.get_by_role("button", name="Download proof").click()
    proof = Path(info.value.path()).read_text()
    assert proof.startswith("c2sp.org/tlog-proof@v1\n")
    assert f"\nindex {chain.index['grandchild']}\n" in proof
    with page.expect_download() as info:
        page.get_by_role("button", name="Download receipt").click()
    receipt = json.loads(Path(info.value.path()).read_text())
    assert receipt["payloadType"] == "application/vnd.in-toto+json" and receipt["signatures"]

    # and in the list: selected in the graph too; the denied child shows its reason
    ui.select_in_list("denied")
    expect(ui.row("denied")).to_have_attribute("aria-current", "true")
    expect(ui.row("grandchild")).not_to_have_attribute("aria-current", "true")
    expect(page.locator("#detail-reasons")).to_contain_text("POLICY_FORBID")
    states = page.evaluate("() => globalThis.interlockLineage.graphNodes()")
    assert [chain.name_of(n["id"]) for n in states if n["selected"]] == ["denied"]
    # keyboard: the parent link moves the selection
    page.locator("#select-parent").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#detail-id")).to_have_text(chain.ids["root"])


def test_a_chain_is_proven_hop_by_hop_in_the_browser(chain: Chain, page: Page) -> None:
    ui = Explorer(page, chain).open()
    ui.search(trace=TRACE)
    ui.select_in_list("grandchild")
    verdict = ui.prove()
    expect(verdict).to_have_attribute("data-verdict", "pass")
    expect(verdict).to_contain_text("Chain proven: 3 hops")
    hops = page.locator("#chain-hops > li")
    expect(hops).to_have_count(3)
    for i, name in enumerate(["root", "child", "grandchild"]):
        hop = hops.nth(i)
        expect(hop).to_have_class("hop pass")
        expect(hop).to_have_attribute("data-id", chain.ids[name])
        expect(hop.locator("li.step.pass")).to_have_count(5)
    expect(hops.nth(0).locator('[data-step="link"]')).to_contain_text("pass")
    expect(hops.nth(2).locator('[data-step="link"]')).to_contain_text("parent_leaf = ")
    marked = page.evaluate("() => globalThis.interlockLineage.graphNodes()")
    assert {chain.name_of(n["id"]) for n in marked if "hop-pass" in n["classes"]} == {
        "root",
        "child",
        "grandchild",
    }
    # the page at its top, the verdict at the top of the detail panel
    page.evaluate(
        """() => {
            window.scrollTo(0, 0);
            const panel = document.getElementById("detail");
            const verdict = document.getElementById("chain-verdict");
            panel.scrollTop += verdict.getBoundingClientRect().top
                - panel.getBoundingClientRect().top - 12;
        }"""
    )
    screenshot(page, "lineage-explorer")

    # a denied child's chain is provable too: its deny is on the log, linked to its parent
    ui.select_in_list("denied")
    expect(ui.prove()).to_have_attribute("data-verdict", "pass")
    expect(page.locator("#chain-hops > li.hop.pass")).to_have_count(2)


def _flip_path_hash(proof: str) -> str:
    """Change one byte of the first inclusion-path hash (still canonical base64)."""
    lines = proof.split("\n")
    at = next(i for i, line in enumerate(lines) if line.startswith("index ")) + 1
    raw = bytearray(base64.b64decode(lines[at]))
    raw[5] ^= 0x01
    lines[at] = base64.b64encode(bytes(raw)).decode()
    return "\n".join(lines)


def test_a_tampered_proof_fails_at_its_hop_and_step(chain: Chain, page: Page) -> None:
    ui = Explorer(page, chain).open()
    ui.search(trace=TRACE)
    ui.select_in_list("grandchild")

    def tamper(route: Route) -> None:
        response = route.fetch()
        body = response.json()
        body["proof"] = _flip_path_hash(body["proof"])
        route.fulfill(response=response, json=body)

    page.route(f"**/console/api/decisions/{chain.index['child']}", tamper)
    verdict = ui.prove()
    expect(verdict).to_have_attribute("data-verdict", "fail")
    expect(verdict).to_have_attribute("data-failed-hop", "2")
    expect(verdict).to_have_attribute("data-failed-step", "inclusion")
    expect(verdict).to_have_attribute("role", "alert")
    expect(verdict).to_contain_text("hop 2 of 3")
    expect(verdict).to_contain_text("is not the signed root")
    hops = page.locator("#chain-hops > li")
    expect(hops.nth(0)).to_have_class("hop pass")
    expect(hops.nth(1)).to_have_class("hop fail")
    expect(hops.nth(1).locator('[data-step="inclusion"]')).to_contain_text("FAIL")
    expect(hops.nth(1).locator('[data-step="signature"]')).to_contain_text("pass")
    expect(hops.nth(2)).to_have_class("hop skip")
    expect(hops.nth(2)).to_contain_text("not checked")


def test_a_substituted_hop_fails_at_the_link(chain: Chain, page: Page) -> None:
    """The server claims the grandchild descends from the killed sibling: each entry is
    genuine and on the log, but the grandchild's parent_leaf names another parent."""
    ui = Explorer(page, chain).open()
    ui.search(trace=TRACE)
    ui.select_in_list("grandchild")
    with httpx.Client(base_url=chain.url, timeout=10) as http:
        assert http.post("/console/api/session", json={"token": chain.read_token}).is_success
        killed = http.get(f"/console/api/lineage/chain/{chain.ids['killed']}").json()["hops"][1]

    def substitute(route: Route) -> None:
        response = route.fetch()
        body = response.json()
        body["hops"][1] = killed
        route.fulfill(response=response, json=body)

    page.route(f"**/console/api/lineage/chain/{chain.ids['grandchild']}", substitute)
    verdict = ui.prove()
    expect(verdict).to_have_attribute("data-failed-hop", "3")
    expect(verdict).to_have_attribute("data-failed-step", "link")
    hops = page.locator("#chain-hops > li")
    expect(hops.nth(1)).to_have_class("hop pass")  # the killed child is a real child of root
    expect(hops.nth(2).locator('[data-step="link"]')).to_contain_text(chain.ids["child"])


def test_a_wrong_verifier_key_proves_nothing(chain: Chain, page: Page) -> None:
    ui = Explorer(page, chain).open()
    ui.search(trace=TRACE)
    ui.select_in_list("child")
    other = _ok(
        cli(make_home(chain.home.parent / "other", origin="other.test/log"), "ledger", "vkey")
    )
    page.get_by_label("Log verifier key").fill(other.strip())
    verdict = ui.prove()
    expect(verdict).to_have_attribute("data-failed-hop", "1")
    expect(verdict).to_have_attribute("data-failed-step", "signature")


def test_phone_width(chain: Chain, browser: Browser) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        ui = Explorer(page, chain).open()
        ui.search(principal=SUMMARIZER)
        ui.expect_nodes(6)
        for control in ("Principal", "Trace id", "Since", "Until"):
            expect(page.get_by_label(control)).to_be_visible()
        expect(page.get_by_role("button", name="Search", exact=True)).to_be_visible()
        expect(page.locator("#graph canvas").first).to_be_visible()
        ui.select_in_list("grandchild")
        page.get_by_role("button", name="Prove chain").scroll_into_view_if_needed()
        expect(ui.prove()).to_have_attribute("data-verdict", "pass")
        overflow = page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0
    finally:
        context.close()
    assert not errors, errors
