"""The Governance Proof Viewer in a real Chromium (Debian's package, driven by Playwright).

Evidence comes from a real home: requests decided with the CLI, a proof exported with
``interlock ledger proof``, a later checkpoint and a consistency proof from the CLI. The page is
loaded from a real ``interlock serve`` at ``/console/proof`` and, offline, from the shipped file
itself. Every verdict is computed in the browser: the page's CSP forbids it any request.

Screenshots: ``INTERLOCK_SCREENSHOTS=1`` writes docs/img/proof-viewer.png (1280 x 800).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import RESEARCHER, edit_config
from tests.e2e.pages.proof_viewer import ProofViewerPage
from tests.e2e.test_exec import EXE, _env, cli
from tests.e2e.test_serve_cli import _free_port, _wait_ready

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "src" / "interlock" / "console" / "static" / "proof-viewer.html"
SHOT = ROOT / "docs" / "img" / "proof-viewer.png"


@dataclass(frozen=True, slots=True)
class Evidence:
    proof: Path
    receipt: Path
    vkey: str
    node_key: str
    later: str
    consistency: str
    home: Path


def _ok(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def evidence(tmp_path_factory: pytest.TempPathFactory) -> Evidence:
    from interlock.bootstrap import init_home

    base = tmp_path_factory.mktemp("proof-viewer")
    home = init_home(base / "home", origin="interlock.test/viewer").path
    edit_config(home, "deadline_ms = 50", "deadline_ms = 2000")
    token = _ok(
        cli(
            home,
            "token",
            "issue",
            "--principal",
            RESEARCHER,
            "--ttl",
            "10m",
            "--right",
            "tool.call:Tool::*",
        )
    ).strip()

    def decide(tool: str) -> None:
        req = {
            "principal": RESEARCHER,
            "action": "tool.call",
            "resource": {"type": "Tool", "id": tool},
            "args": {"q": "x"},
            "capability": token,
        }
        subprocess.run(
            [*EXE, "decide", "-"],
            input=json.dumps(req),
            capture_output=True,
            text=True,
            env=_env(home),
            timeout=60,
            check=False,
        )

    for tool in ("web_search", "delete_database", "web_search"):
        decide(tool)
    tail = json.loads(_ok(cli(home, "ledger", "tail", "-n", "3", "--json")))
    index = next(r["index"] for r in tail if r["record"]["type"] == "decision")
    proof = base / "decision.tlog-proof"
    info = json.loads(_ok(cli(home, "ledger", "proof", str(index), "--out", str(proof), "--json")))
    assert info["receipt"], "a decision's proof comes with its receipt"
    old = int(proof.read_text().split("\n\n", 1)[1].split("\n")[1])
    for tool in ("web_search", "send_email"):
        decide(tool)
    later = _ok(cli(home, "ledger", "checkpoint"))
    new = int(later.split("\n")[1])
    assert new > old
    consistency = _ok(cli(home, "ledger", "consistency", str(old), str(new), "--json"))
    return Evidence(
        proof=proof,
        receipt=Path(info["receipt"]),
        vkey=info["vkey"],
        node_key=info["node_key"],
        later=later,
        consistency=consistency,
        home=home,
    )


@pytest.fixture(scope="module")
def served(evidence: Evidence) -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [*EXE, "serve", "--port", str(port), "--log-level", "warning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(evidence.home),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, url)
        yield url
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert not errors, errors


def _requests(page: Page) -> list[str]:
    seen: list[str] = []
    page.on("request", lambda r: seen.append(r.url))
    return seen


# --- the served page ---------------------------------------------------------------------------


def test_served_page_has_a_strict_csp_and_needs_no_credential(served: str) -> None:
    r = httpx.get(served + "/console/proof", timeout=10)  # no Authorization header
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'"
    assert re.fullmatch(r"'sha256-[A-Za-z0-9+/]{43}='", directives["script-src"])
    assert re.fullmatch(r"'sha256-[A-Za-z0-9+/]{43}='", directives["style-src"])
    assert directives["frame-ancestors"] == "'none'"
    assert "connect-src" not in directives  # falls back to default-src 'none'
    assert "unsafe" not in csp
    # the page's own <meta> policy (for the offline file) is the same, less frame-ancestors
    meta = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', r.text)
    assert meta is not None
    assert csp == meta.group(1) + "; frame-ancestors 'none'"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.text == STATIC.read_text(encoding="utf-8")
    assert "http://" not in r.text and "https://" not in r.text.replace(
        "https://in-toto.io/Statement/v1", ""
    ).replace("https://interlock.dev/decision-receipt/v1", "")


def test_served_page_verifies_a_proof_its_receipt_and_a_later_checkpoint(
    served: str, evidence: Evidence, page: Page
) -> None:
    seen = _requests(page)
    viewer = ProofViewerPage(page).open(served + "/console/proof")
    viewer.drop_files(evidence.proof, evidence.receipt)
    viewer.fill(
        vkey=evidence.vkey,
        node_key=evidence.node_key,
        later=evidence.later,
        consistency=evidence.consistency,
    )
    assert viewer.verify() == "verified", viewer.verdict_text
    steps = viewer.steps()
    assert [s.status for s in steps] == ["pass"] * len(steps)
    ids = [s.id for s in steps]
    for needed in (
        "parse",
        "vkey",
        "signature",
        "checkpoint",
        "leaf",
        "path-0",
        "root",
        "receipt-signature",
        "receipt-statement",
        "receipt-entry",
        "later-signature",
        "consistency",
    ):
        assert needed in ids
    assert ids.index("signature") < ids.index("leaf") < ids.index("path-0") < ids.index("root")
    expect(page.locator("#entry")).to_contain_text('"type": "decision"')
    # the only request the page ever made is for itself: no verdict was asked of the server
    assert seen == [served + "/console/proof"]
    if os.environ.get("INTERLOCK_SCREENSHOTS") == "1":
        SHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOT))


def _edit_entry(text: str) -> str:
    head, rest = text.split("\n", 1)
    extra_line, rest = rest.split("\n", 1)
    entry = bytearray(base64.b64decode(extra_line.removeprefix("extra ")))
    entry[entry.index(b'"effect"') + 10] ^= 0x20  # "allow" -> "Allow" / "deny" -> "Deny"
    return f"{head}\nextra {base64.b64encode(bytes(entry)).decode()}\n{rest}"


def _edit_path_hash(text: str) -> str:
    lines = text.split("\n")
    i = next(n for n, line in enumerate(lines) if line.startswith("index ")) + 1
    h = bytearray(base64.b64decode(lines[i]))
    h[5] ^= 0x01
    lines[i] = base64.b64encode(bytes(h)).decode()
    return "\n".join(lines)


def _edit_signature(text: str) -> str:
    lines = text.rstrip("\n").split("\n")
    prefix, b64 = lines[-1].rsplit(" ", 1)
    sig = bytearray(base64.b64decode(b64))
    sig[20] ^= 0x01  # inside the Ed25519 signature (after the 4-byte key ID)
    lines[-1] = f"{prefix} {base64.b64encode(bytes(sig)).decode()}"
    return "\n".join(lines) + "\n"


def _edit_index(text: str) -> str:
    return re.sub(r"^index (\d+)$", lambda m: f"index {int(m.group(1)) + 1}", text, flags=re.M)


@pytest.mark.parametrize(
    ("edit", "step", "message"),
    [
        (_edit_entry, "root", "is not the signed root"),
        (_edit_path_hash, "root", "is not the signed root"),
        (_edit_signature, "signature", "does not verify"),
        (_edit_index, "root", "is not the signed root"),
        (
            lambda t: t.replace("c2sp.org/tlog-proof@v1", "c2sp.org/tlog-proof@v2"),
            "parse",
            "first line",
        ),
    ],
    ids=["entry", "path-hash", "signature", "index", "header"],
)
def test_a_tampered_proof_fails_at_the_step_that_names_the_change(
    served: str, evidence: Evidence, page: Page, edit: Any, step: str, message: str
) -> None:
    seen = _requests(page)
    viewer = ProofViewerPage(page).open(served + "/console/proof")
    tampered = edit(evidence.proof.read_text(encoding="utf-8"))
    viewer.fill(proof=tampered, vkey=evidence.vkey)
    assert viewer.verify() == "failed"
    failed = viewer.failed_step()
    assert failed is not None
    assert failed.id == step, viewer.steps()
    assert message in failed.text
    assert "NOT verified" in viewer.verdict_text
    # every step before the failure passed; nothing after it ran
    statuses = [s.status for s in viewer.steps()]
    assert statuses == ["pass"] * (len(statuses) - 1) + ["fail"]
    assert seen == [served + "/console/proof"]


def test_a_wrong_key_fails_the_signature_step(served: str, evidence: Evidence, page: Page) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from interlock.ledger.note import NoteSigner

    origin = evidence.vkey.split("+", 1)[0]
    other = NoteSigner(origin, Ed25519PrivateKey.generate()).vkey  # same log name, other key
    viewer = ProofViewerPage(page).open(served + "/console/proof")
    viewer.fill(proof=evidence.proof.read_text(encoding="utf-8"), vkey=other)
    assert viewer.verify() == "failed"
    failed = viewer.failed_step()
    assert failed is not None and failed.id == "signature"
    assert "no signature by" in failed.text


def test_a_tampered_receipt_or_consistency_proof_fails_its_step(
    served: str, evidence: Evidence, page: Page
) -> None:
    viewer = ProofViewerPage(page).open(served + "/console/proof")
    envelope = json.loads(evidence.receipt.read_text(encoding="utf-8"))
    payload = bytearray(base64.b64decode(envelope["payload"]))
    payload[payload.index(b'"effect":"') + 10] ^= 0x20
    envelope["payload"] = base64.b64encode(bytes(payload)).decode()
    viewer.fill(
        proof=evidence.proof.read_text(encoding="utf-8"),
        vkey=evidence.vkey,
        receipt=json.dumps(envelope),
        node_key=evidence.node_key,
    )
    assert viewer.verify() == "failed"
    failed = viewer.failed_step()
    assert failed is not None and failed.id == "receipt-signature"

    cons = json.loads(evidence.consistency)
    cons["proof"][0] = ("0" if cons["proof"][0][0] != "0" else "1") + cons["proof"][0][1:]
    viewer.fill(receipt="", later=evidence.later, consistency=json.dumps(cons))
    assert viewer.verify() == "failed"
    failed = viewer.failed_step()
    assert failed is not None and failed.id == "consistency"
    assert "leads to" in failed.text


def test_a_receipt_alone_is_checked_and_says_inclusion_is_not_shown(
    served: str, evidence: Evidence, page: Page
) -> None:
    viewer = ProofViewerPage(page).open(served + "/console/proof")
    viewer.fill(receipt=evidence.receipt.read_text(encoding="utf-8"), node_key=evidence.node_key)
    assert viewer.verify() == "verified", viewer.verdict_text
    by_id = {s.id: s for s in viewer.steps()}
    assert by_id["receipt-signature"].status == "pass"
    assert by_id["receipt-entry"].status == "skip"
    assert "inclusion not shown" in by_id["receipt-entry"].text
    assert "1 skipped" in viewer.verdict_text
    # without the node key the receipt is not checked, and the page says so
    viewer.fill(
        proof=evidence.proof.read_text(encoding="utf-8").rstrip("\n"),
        node_key="",
        vkey=evidence.vkey,
    )
    assert viewer.verify() == "verified", viewer.verdict_text
    by_id = {s.id: s for s in viewer.steps()}
    assert by_id["root"].status == "pass"
    assert by_id["receipt-signature"].status == "skip"
    assert "give the node key" in by_id["receipt-signature"].text


# --- the single file, offline --------------------------------------------------------------------


def test_the_static_file_verifies_offline(browser: Browser, evidence: Evidence) -> None:
    context = browser.new_context(offline=True)
    try:
        page = context.new_page()
        seen = _requests(page)
        viewer = ProofViewerPage(page).open(STATIC.as_uri())
        viewer.drop_files(evidence.proof, evidence.receipt)
        viewer.fill(vkey=evidence.vkey, node_key=evidence.node_key)
        assert viewer.verify() == "verified", viewer.verdict_text
        assert all(s.status == "pass" for s in viewer.steps())
        viewer.fill(proof=_edit_path_hash(evidence.proof.read_text(encoding="utf-8")))
        assert viewer.verify() == "failed"
        failed = viewer.failed_step()
        assert failed is not None and failed.id == "root"
        assert seen == [STATIC.as_uri()]
    finally:
        context.close()


def test_the_pinned_key_is_remembered(served: str, evidence: Evidence, page: Page) -> None:
    viewer = ProofViewerPage(page).open(served + "/console/proof")
    viewer.fill(vkey=evidence.vkey)
    page.check("#pin")
    viewer.open(served + "/console/proof")
    expect(page.locator("#vkey")).to_have_value(evidence.vkey)
    expect(page.locator("#pin")).to_be_checked()


# --- vectors from other implementations ----------------------------------------------------------


def test_rfc6962_reference_vectors_in_the_browser(browser: Browser) -> None:
    """transparency-dev/merkle's inclusion and consistency vectors, and its corruption probes,
    through the page's own JavaScript."""
    from tests.vectors import test_rfc6962 as v

    page = browser.new_page()
    try:
        ProofViewerPage(page).open(STATIC.as_uri())
        check_inclusion = """async ([i, n, leaf, proof, root]) => {
            const V = window.interlockProofViewer;
            try {
              const r = await V.inclusionSteps(BigInt(i), BigInt(n), V.fromHex(leaf),
                                               proof.map(V.fromHex));
              return r.root !== null && V.hex(r.root) === root;
            } catch { return false; }
        }"""
        check_consistency = """async ([m, n, r1, r2, proof]) => {
            const V = window.interlockProofViewer;
            try {
              await V.verifyConsistency(BigInt(m), BigInt(n), V.fromHex(r1), V.fromHex(r2),
                                        proof.map(V.fromHex));
              return true;
            } catch { return false; }
        }"""
        for index, size, proof in v.INCLUSION:
            good = [
                index,
                size,
                v.LEAF_HASHES[index].hex(),
                [p.hex() for p in proof],
                v.ROOTS[size].hex(),
            ]
            assert page.evaluate(check_inclusion, good)
            for probe in v._corrupt_inclusion(index, size, proof):
                i, n, leaf, path, root = probe
                args = [i, n, leaf.hex(), [p.hex() for p in path], root.hex()]
                assert not page.evaluate(check_inclusion, args), args
        for old, new, proof in v.CONSISTENCY:
            good = [old, new, v.ROOTS[old].hex(), v.ROOTS[new].hex(), [p.hex() for p in proof]]
            assert page.evaluate(check_consistency, good)
            if proof:
                for probe in v._corrupt_consistency(old, new, proof):
                    m, n, r1, r2, path = probe
                    args = [m, n, r1.hex(), r2.hex(), [p.hex() for p in path]]
                    assert not page.evaluate(check_consistency, args), args
    finally:
        page.close()


def test_c2sp_and_go_reference_signed_notes_in_the_browser(browser: Browser) -> None:
    from tests.vectors import test_c2sp as c

    page = browser.new_page()
    try:
        ProofViewerPage(page).open(STATIC.as_uri())
        verify_note = """async ([vkey, note]) => {
            const V = window.interlockProofViewer;
            try { return (await V.verifyNote(note, await V.parseVkey(vkey))).text; }
            catch (e) { return "FAIL: " + e.message; }
        }"""
        assert page.evaluate(verify_note, [c.SPEC_VKEY, c.SPEC_NOTE]) == (
            "This is an example message.\n"
        )
        tampered = c.SPEC_NOTE.replace("example message", "exemple message")
        assert page.evaluate(verify_note, [c.SPEC_VKEY, tampered]).startswith("FAIL")
        both = c.GO_TEXT + "\n" + c.GO_SIG + c.GO_ENOCH_SIG
        assert page.evaluate(verify_note, [c.GO_VKEY, both]) == c.GO_TEXT
        assert page.evaluate(verify_note, [c.GO_ENOCH_VKEY, both]) == c.GO_TEXT
        only_enoch = c.GO_TEXT + "\n" + c.GO_ENOCH_SIG
        assert "no signature" in page.evaluate(verify_note, [c.GO_VKEY, only_enoch])
    finally:
        page.close()


def test_a_proof_built_by_tlog_scales_verifies_in_the_viewer(browser: Browser) -> None:
    """A bundle whose checkpoint and inclusion proof come from tlog_scales (an independent
    implementation of C2SP tlog-tiles and signed notes), not from Interlock."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from tlog_scales import signing
    from tlog_scales import tlog as ts

    from interlock.ledger.merkle import inclusion_proof, leaf_hash, list_reader, root_of

    origin = "third-party.example/log"
    signer = signing.PlainEd25519Signer(origin, Ed25519PrivateKey.generate())
    entries = [f"entry {i}".encode() for i in range(13)]
    leaves = [leaf_hash(e) for e in entries]
    note = ts.Checkpoint.make_signed(origin, 13, root_of(leaves), [signer]).serialize()
    path = inclusion_proof(9, 13, list_reader(leaves))
    ts.InclusionProof(9, 13, path).check(leaves[9], root_of(leaves))  # theirs accepts it too
    bundle = (
        "c2sp.org/tlog-proof@v1\n"
        f"extra {base64.b64encode(entries[9]).decode()}\nindex 9\n"
        + "".join(base64.b64encode(p).decode() + "\n" for p in path)
        + "\n"
        + note
    )
    page = browser.new_page()
    try:
        viewer = ProofViewerPage(page).open(STATIC.as_uri())
        viewer.fill(proof=bundle, vkey=signer.vkey.serialize())
        assert viewer.verify() == "verified", viewer.verdict_text
    finally:
        page.close()


# --- accessibility and layout ---------------------------------------------------------------------


def test_every_control_is_labelled_and_the_page_fits_a_phone(browser: Browser) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        page = context.new_page()
        ProofViewerPage(page).open(STATIC.as_uri())
        unlabelled = page.evaluate(
            """() => [...document.querySelectorAll('input, textarea, button')]
                 .filter((e) => e.tagName === 'BUTTON' ? !e.textContent.trim()
                                                        : e.labels.length === 0)
                 .map((e) => e.id)"""
        )
        assert unlabelled == []
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
        # the controls are reached by Tab in reading order, the Verify button among them
        order = []
        for _ in range(12):
            page.keyboard.press("Tab")
            order.append(page.evaluate("() => document.activeElement.id"))
        assert order.index("proof") < order.index("vkey") < order.index("verify")
    finally:
        context.close()
