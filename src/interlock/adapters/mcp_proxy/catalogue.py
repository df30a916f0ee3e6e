"""The tools the upstream listed: what a ``tools/call`` may name, and each tool's compiled
``inputSchema`` check.

    >>> catalogue = ToolCatalogue()
    >>> catalogue.lookup("echo")       # before any listing: nothing may be called
    "no tool named 'echo' in the upstream's tools/list (not listed yet)"

What "listed" means (one rule, wherever the call comes from):

* A name is callable when it is *exactly* (code point for code point) the name of one tool in
  the proxy's most recent **complete** listing of the upstream — every page, following
  ``nextCursor`` (at most :data:`MAX_TOOL_PAGES` pages and :data:`MAX_TOOLS` tools). Names
  that differ by case, whitespace, zero-width or full-width characters are other names.
* The proxy lists by itself when the session starts (so a client that calls before it lists is
  judged against that listing), again whenever the client sends ``tools/list``, and again
  before the next call after the upstream sends ``notifications/tools/list_changed``
  (a call is never judged against a listing the upstream has said is out of date).
* A listing that fails, or goes over the bounds, leaves *nothing* callable until a listing
  succeeds (fail closed; the next call or ``tools/list`` tries again).
* A name the upstream lists twice, and a tool whose ``inputSchema`` the proxy refuses
  (:class:`~interlock.adapters.mcp_proxy.schema.UnsafeSchema`), cannot be called and is not
  shown to the client (a warning names it on the proxy's log).
* Each tool's schema is compiled once per listing, in a worker thread; a call only runs the
  compiled check.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import anyio.to_thread
import mcp.types as types

from interlock.adapters.mcp_proxy.schema import Check, UnsafeSchema, compile_input_schema

#: the most ``tools/list`` pages one listing follows
MAX_TOOL_PAGES = 100

#: the most tools one listing may hold
MAX_TOOLS = 2_000

_log = logging.getLogger("interlock.mcp_proxy")

Fetch = Callable[[str | None], Awaitable[types.ListToolsResult]]


class ListingFailed(Exception):
    """A listing could not be completed (the text says why)."""


@dataclass(frozen=True, slots=True)
class ListedTool:
    """One listed tool: what the upstream sent, and its compiled argument check (``None``
    when the tool cannot be called: ``problem`` says why)."""

    tool: types.Tool
    check: Check | None
    problem: str | None = None


class ToolCatalogue:
    """The upstream's tools as the proxy last listed them in full. One per proxy session;
    used from the session's event loop."""

    def __init__(self) -> None:
        self._tools: dict[str, ListedTool] = {}
        self._order: list[str] = []
        self._problem: str | None = "not listed yet"
        #: bumped by every ``notifications/tools/list_changed``
        self._changes = 0
        self._listed_at = -1
        self._lock = anyio.Lock()

    @property
    def stale(self) -> bool:
        """Whether the upstream said its tools changed (or no listing succeeded) since the
        last complete listing."""
        return self._problem is not None or self._listed_at != self._changes

    @property
    def problem(self) -> str | None:
        """Why the last listing failed (then nothing may be called), or ``None``."""
        return self._problem

    async def on_message(self, message: object) -> None:
        """The upstream client session's ``message_handler``: ``tools/list_changed`` makes
        the catalogue stale. Never raises."""
        if isinstance(message, types.ToolListChangedNotification):
            self._changes += 1

    def tools(self) -> list[types.Tool]:
        """The callable tools, in the upstream's order."""
        return [e.tool for n in self._order if (e := self._tools[n]).check is not None]

    def lookup(self, name: str) -> ListedTool | str:
        """The listed tool named exactly ``name``, or why no such tool may be called. Never
        raises."""
        entry = self._tools.get(name)
        if entry is None:
            why = f" ({self._problem})" if self._problem is not None else ""
            return f"no tool named {name[:200]!a} in the upstream's tools/list{why}"
        if entry.check is None:
            return f"the upstream's tool {name[:200]!a} cannot be called: {entry.problem}"
        return entry

    async def resolve(self, name: str, fetch: Fetch) -> ListedTool | str:
        """:meth:`lookup`, after listing again if the catalogue is stale. Never raises."""
        if self.stale:
            await self.refresh(fetch, only_if_stale=True)
        return self.lookup(name)

    async def refresh(self, fetch: Fetch, *, only_if_stale: bool = False) -> None:
        """List every page of the upstream's tools with ``fetch(cursor)`` and replace the
        catalogue with it; when that fails, leave nothing callable (the reason is kept for
        :meth:`lookup`). Never raises except on cancellation."""
        async with self._lock:
            if only_if_stale and not self.stale:
                return  # another task listed while this one waited
            changes = self._changes
            try:
                listed = await self._list(fetch)
                entries = await anyio.to_thread.run_sync(_compile, listed)
            except ListingFailed as exc:
                self._tools, self._order, self._problem = {}, [], str(exc)
                _log.warning("mcp-proxy: no tool can be called: %s", exc)
                return
            self._tools = entries
            self._order = list(entries)
            self._problem = None
            self._listed_at = changes

    @staticmethod
    async def _list(fetch: Fetch) -> list[types.Tool]:
        tools: list[types.Tool] = []
        cursor: str | None = None
        for _page in range(MAX_TOOL_PAGES):
            try:
                result = await fetch(cursor)
            except Exception as exc:
                message = getattr(exc, "message", None) or type(exc).__name__
                raise ListingFailed(f"the upstream's tools/list failed: {message}"[:300]) from exc
            tools.extend(result.tools)
            if len(tools) > MAX_TOOLS:
                raise ListingFailed(f"the upstream lists more than {MAX_TOOLS} tools")
            cursor = result.next_cursor
            if not cursor:
                return tools
        raise ListingFailed(f"the upstream's tools/list has more than {MAX_TOOL_PAGES} pages")


def _compile(tools: list[types.Tool]) -> dict[str, ListedTool]:
    """Each tool with its compiled check (blocking: runs in a worker thread)."""
    counts: dict[str, int] = {}
    for tool in tools:
        counts[tool.name] = counts.get(tool.name, 0) + 1
    out: dict[str, ListedTool] = {}
    for tool in tools:
        if tool.name in out:
            continue
        if counts[tool.name] > 1:
            entry = ListedTool(tool, None, "the upstream lists this name more than once")
        else:
            try:
                entry = ListedTool(tool, compile_input_schema(tool.input_schema))
            except UnsafeSchema as exc:
                entry = ListedTool(tool, None, f"its inputSchema is refused: {exc.message}")
        if entry.check is None:
            _log.warning(
                "mcp-proxy: the upstream's tool %s is not offered: %s",
                ascii(tool.name[:200]),
                entry.problem,
            )
        out[tool.name] = entry
    return out
