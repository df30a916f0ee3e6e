"""Fixtures of the browser-tool tests (:mod:`tests.e2e.console_harness`)."""

from tests.e2e.console_harness import browser, console_server, page

__all__ = ["browser", "console_server", "page"]
