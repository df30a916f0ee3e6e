"""The Infrastructure Health Dashboard (``/console/health``) as a test drives it."""

from __future__ import annotations

import re

from playwright.sync_api import Locator, Page, expect

from tests.e2e.console_harness import sign_in


class HealthPage:
    """Sign in, read the node cards, the charts and the table of latest numbers."""

    def __init__(self, page: Page) -> None:
        self.page = page

    def open(self, url: str, token: str) -> HealthPage:
        sign_in(self.page, url + "/console/health", token)
        expect(
            self.page.get_by_role("heading", name="Infrastructure Health Dashboard")
        ).to_be_visible()
        return self

    @property
    def cards(self) -> Locator:
        return self.page.locator("article.node")

    @property
    def this_node(self) -> Locator:
        return self.page.locator("article.node.this")

    def state_of(self, card: Locator) -> Locator:
        return card.locator(".badge.state")

    def figure(self, card: Locator, label: str) -> Locator:
        """The value of the figure labelled ``label`` on ``card``."""
        return card.locator(".figure", has=self.page.locator("dt", has_text=label)).locator("dd")

    @property
    def summary(self) -> Locator:
        return self.page.get_by_role("status")

    def chart(self, chart_id: str) -> Locator:
        return self.page.locator(f"#{chart_id}")

    def latest(self, measure: str) -> Locator:
        """The table's values (this bucket so far, the previous bucket) for the row whose
        heading starts with ``measure``."""
        row = self.page.locator("#latest tr", has=self.page.locator("th", has_text=measure))
        return row.locator("td")

    def expect_a_number(self, measure: str) -> None:
        """Wait until the current or the previous bucket has a number for ``measure``."""
        cells = self.latest(measure).filter(has_text=re.compile(r"^\d"))
        expect(cells).not_to_have_count(0)

    def expect_line(self, chart_id: str, rgb: tuple[int, int, int], rows: int) -> None:
        """Wait until the chart's canvas holds the colour ``rgb`` (a series' line or points) on
        at least ``rows`` pixel rows: a line flat at zero covers two or three; one that rises
        to a value covers many. Playwright's auto-wait: the charts repaint every 2 s."""
        self.page.wait_for_function(
            """([id, [r, g, b], want]) => {
                const canvas = document.querySelector(`#${id} canvas`);
                if (!canvas) return false;
                const { width, height } = canvas;
                const data = canvas.getContext("2d").getImageData(0, 0, width, height).data;
                let rows = 0;
                for (let y = 0; y < height; y++) {
                    for (let x = 0; x < width; x++) {
                        const i = (y * width + x) * 4;
                        if (data[i + 3] > 200 && Math.abs(data[i] - r) < 16
                            && Math.abs(data[i + 1] - g) < 16 && Math.abs(data[i + 2] - b) < 16) {
                            rows++;
                            break;
                        }
                    }
                }
                return rows >= want;
            }""",
            arg=[chart_id, list(rgb), rows],
            timeout=20_000,
        )
