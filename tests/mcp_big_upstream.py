"""An MCP upstream that answers as large as asked, for the proxy's answer-size limit:
``python tests/mcp_big_upstream.py`` (the SDK's server: ``{"jsonrpc", "id", "result"}``) or
``python tests/mcp_big_upstream.py --raw`` (hand-written JSON-RPC that puts ``id`` last, as the
TypeScript SDK does). Tools: ``blob(megabytes)`` answers that many MB of text; ``echo(text)``."""

from __future__ import annotations

import json
import sys

from mcp.server import MCPServer

mcp = MCPServer("bigsrv")


@mcp.tool()
def blob(megabytes: int) -> str:
    """Answer ``megabytes`` MB of text."""
    return "x" * (megabytes * 1_000_000)


@mcp.tool()
def echo(text: str) -> str:
    """Return the text."""
    return text


_TOOLS = [
    {
        "name": name,
        "inputSchema": {"type": "object", "properties": {arg: {"type": kind}}, "required": [arg]},
    }
    for name, arg, kind in (("blob", "megabytes", "integer"), ("echo", "text", "string"))
]


def _answer(request: dict[str, object]) -> dict[str, object] | None:
    method, params = request.get("method"), request.get("params") or {}
    assert isinstance(params, dict)
    if method == "initialize":
        return {
            "protocolVersion": params.get("protocolVersion"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "bigsrv", "version": "1"},
        }
    if method == "tools/list":
        return {"tools": _TOOLS}
    if method == "tools/call":
        args = params.get("arguments") or {}
        assert isinstance(args, dict)
        text = "x" * (args["megabytes"] * 1_000_000) if params["name"] == "blob" else args["text"]
        return {"content": [{"type": "text", "text": text}], "isError": False}
    return None


def raw() -> None:
    """JSON-RPC by hand: the result first and the id last."""
    for line in sys.stdin:
        request = json.loads(line)
        if "id" not in request:
            continue  # a notification
        result = _answer(request)
        if result is None:
            answer = {"error": {"code": -32601, "message": "no such method"}}
        else:
            answer = {"result": result}
        answer |= {"jsonrpc": "2.0", "id": request["id"]}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    if sys.argv[1:] == ["--raw"]:
        raw()
    else:
        mcp.run()
