"""The Governance Proof Viewer (``/console/proof``) as a test drives it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from playwright.sync_api import Page, expect


@dataclass(frozen=True, slots=True)
class Step:
    id: str
    status: str
    text: str


class ProofViewerPage:
    """Fill the evidence and keys, press Verify, read the verdict and the steps."""

    def __init__(self, page: Page) -> None:
        self.page = page

    def open(self, url: str) -> ProofViewerPage:
        self.page.goto(url)
        expect(self.page.locator("html")).to_have_attribute("data-ready", "true")
        return self

    def drop_files(self, *files: Path) -> None:
        self.page.set_input_files("#files", [str(f) for f in files])
        expect(self.page.locator("#files-status")).not_to_be_empty()

    def fill(
        self,
        *,
        proof: str | None = None,
        receipt: str | None = None,
        vkey: str | None = None,
        node_key: str | None = None,
        later: str | None = None,
        consistency: str | None = None,
    ) -> None:
        if later is not None or consistency is not None:
            details = self.page.locator("details")
            if details.get_attribute("open") is None:
                self.page.locator("summary").click()
        for selector, value in (
            ("#proof", proof),
            ("#receipt", receipt),
            ("#vkey", vkey),
            ("#node-key", node_key),
            ("#later", later),
            ("#consistency", consistency),
        ):
            if value is not None:
                self.page.fill(selector, value)

    def verify(self) -> str:
        """Press Verify (by keyboard: focus the button and press Enter); the verdict."""
        self.page.locator("#verify").focus()
        self.page.keyboard.press("Enter")
        verdict = self.page.locator("#verdict")
        expect(verdict).to_have_attribute("data-verdict", re.compile("^(verified|failed)$"))
        return verdict.get_attribute("data-verdict") or ""

    @property
    def verdict_text(self) -> str:
        return self.page.inner_text("#verdict")

    def steps(self) -> list[Step]:
        return [
            Step(
                li.get_attribute("data-step") or "",
                li.get_attribute("data-status") or "",
                li.inner_text(),
            )
            for li in self.page.locator("#steps li").all()
        ]

    def failed_step(self) -> Step | None:
        failed = [s for s in self.steps() if s.status == "fail"]
        return failed[0] if failed else None
