"""An MCP server for the proxy tests, run as a subprocess: ``python tests/mcp_upstream.py``
(stdio) or ``python tests/mcp_upstream.py --http PORT`` (streamable HTTP on 127.0.0.1).

Everything that reaches it is appended, one JSON line per request, to the file named by
``$MCP_UPSTREAM_LOG`` *before* the request is served: the tests read that log to prove what was
(and what was not) forwarded. Tools:

* ``echo(text)`` returns ``text``; ``add(a, b)`` returns ``a + b``
* ``hang(seconds)`` sleeps (an upstream that does not answer)
* ``die()`` exits the process at once, without answering (an upstream that crashes)
* ``env_keys()`` returns the names of the ``INTERLOCK_*`` environment variables it was started
  with, as a JSON list (the proxy must pass none)

a resource ``note://greeting`` and a resource template ``note://{name}``, and a prompt
``greet(name)``.
"""

from __future__ import annotations

import json
import os
import sys
import time

import anyio
from mcp.server import MCPServer

NAME = "testsrv"
mcp = MCPServer(NAME)


def _log(kind: str, name: str, args: object) -> None:
    path = os.environ.get("MCP_UPSTREAM_LOG")
    if not path:
        return
    line = json.dumps({"kind": kind, "name": name, "args": args, "pid": os.getpid()})
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


@mcp.tool()
def echo(text: str) -> str:
    """Return the text."""
    _log("tool", "echo", {"text": text})
    return text


@mcp.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    _log("tool", "add", {"a": a, "b": b})
    return a + b


@mcp.tool()
async def hang(seconds: float) -> str:
    """Sleep, then answer (too late for the proxy's timeout)."""
    _log("tool", "hang", {"seconds": seconds})
    await anyio.sleep(seconds)
    return "woke up"


@mcp.tool()
def die() -> str:
    """Exit the process without answering."""
    _log("tool", "die", {})
    sys.stdout.flush()
    os._exit(3)


@mcp.tool()
def env_keys() -> str:
    """The INTERLOCK_* variables in this server's environment."""
    keys = sorted(k for k in os.environ if k.startswith("INTERLOCK_"))
    _log("tool", "env_keys", {"keys": keys})
    return json.dumps(keys)


@mcp.resource("note://greeting")
def greeting() -> str:
    """A greeting."""
    _log("resource", "note://greeting", {})
    return "hello from the upstream"


@mcp.resource("note://secret/{name}")
def secret(name: str) -> str:
    """A secret note."""
    _log("resource", f"note://secret/{name}", {})
    return f"secret {name}"


@mcp.prompt()
def greet(name: str) -> str:
    """A prompt that greets someone."""
    _log("prompt", "greet", {"name": name})
    return f"Say hello to {name}."


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        mcp.settings.log_level = "WARNING"
        mcp.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    elif len(sys.argv) == 2 and sys.argv[1] == "--slow-start":
        time.sleep(60)  # never answers initialize in time
    else:
        mcp.run()


if __name__ == "__main__":
    main()
