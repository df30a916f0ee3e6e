"""An MCP server (the SDK's low-level ``Server``, on stdio) whose tool list the proxy tests
control: ``python tests/mcp_catalogue_upstream.py``.

Everything that reaches it is appended, one JSON line per request, to ``$MCP_UPSTREAM_LOG``
*before* it is answered: ``{"kind": "list", "cursor": ...}`` for each ``tools/list`` page and
``{"kind": "tool", "name": ..., "args": ...}`` for each ``tools/call``.

Its ``tools/list`` is paginated, :data:`PAGE` tools a page. Tools (their schemas are written
by hand, as a hostile or careless upstream would):

* ``strict(n: integer, tag: string matching ^[a-z]+$)``, ``additionalProperties: false``
* ``echo(text)``; ``last(text)`` (on the last page)
* ``grow()`` adds the tool ``late(text)`` and sends ``notifications/tools/list_changed``;
  ``shrink()`` removes it and sends the notification too
* ``redos(s)``: ``pattern: ^(a+)+$`` (exponential backtracking); ``remote(x)``: a ``$ref`` to
  an http URL; ``huge``: an inputSchema over 64 KiB — the proxy refuses each of these schemas
"""

from __future__ import annotations

import json
import os
from typing import Any

import anyio
import mcp.types as types
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.stdio import stdio_server

PAGE = 2


def _log(entry: dict[str, Any]) -> None:
    path = os.environ.get("MCP_UPSTREAM_LOG")
    if not path:
        return
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _tool(name: str, schema: dict[str, Any]) -> types.Tool:
    return types.Tool(name=name, description=f"the {name} tool", input_schema=schema)


_TEXT = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
_NONE: dict[str, Any] = {"type": "object", "properties": {}}

TOOLS: list[types.Tool] = [
    _tool(
        "strict",
        {
            "type": "object",
            "properties": {
                "n": {"type": "integer", "minimum": 0},
                "tag": {"type": "string", "pattern": "^[a-z]+$"},
            },
            "required": ["n"],
            "additionalProperties": False,
        },
    ),
    _tool("echo", _TEXT),
    _tool("grow", _NONE),
    _tool("shrink", _NONE),
    _tool(
        "redos",
        {"type": "object", "properties": {"s": {"type": "string", "pattern": "^(a+)+$"}}},
    ),
    _tool(
        "remote",
        {"type": "object", "properties": {"x": {"$ref": "http://127.0.0.1:9/schema.json"}}},
    ),
    _tool(
        "huge",
        {
            "type": "object",
            "properties": {f"p{i:05d}": {"type": "string"} for i in range(3000)},
        },
    ),
    _tool("last", _TEXT),
]

LATE = _tool("late", _TEXT)

_current: list[types.Tool] = list(TOOLS)


async def list_tools(
    ctx: Any, params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    cursor = params.cursor if params is not None else None
    _log({"kind": "list", "cursor": cursor})
    start = int(cursor) if cursor else 0
    page = _current[start : start + PAGE]
    more = start + PAGE < len(_current)
    return types.ListToolsResult(tools=page, next_cursor=str(start + PAGE) if more else None)


async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
    _log({"kind": "tool", "name": params.name, "args": params.arguments})
    if params.name == "grow":
        if LATE not in _current:
            _current.append(LATE)
        await ctx.session.send_tool_list_changed()
    elif params.name == "shrink":
        if LATE in _current:
            _current.remove(LATE)
        await ctx.session.send_tool_list_changed()
    text = json.dumps({"tool": params.name, "args": params.arguments}, sort_keys=True)
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)])


server = Server("catalogue", on_list_tools=list_tools, on_call_tool=call_tool)


async def main() -> None:
    async with stdio_server() as (read, write):
        await server.run(
            read,
            write,
            server.create_initialization_options(NotificationOptions(tools_changed=True)),
        )


if __name__ == "__main__":
    anyio.run(main)
