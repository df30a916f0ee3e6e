"""An HTTP/1.1 load generator for the HTTP benchmarks: keep-alive connections on loopback,
raw sockets on an asyncio (uvloop) event loop, run in its own processes.

    python -m interlock.bench.load '{"port": 8750, "body": "...", "connections": 16,
                                     "seconds": 3, "rate": 0}'

``rate`` 0: closed loop (each connection sends its next request when the previous answer is
read: the server's throughput). ``rate`` > 0: open loop, that many requests per second over
all connections, each sent at its scheduled time; a latency is measured from the *scheduled*
time, so a server that falls behind shows it (no coordinated omission). Prints one JSON
object: ``requests``, ``allowed``, ``seconds``, ``latencies_us`` (open loop only).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

__all__ = ["run"]


def _request(port: int, body: bytes) -> bytes:
    head = (
        f"POST /v1/decisions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


async def _answer(reader: asyncio.StreamReader) -> bool:
    """Read one response; True when it is a 200 allow."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    data = await reader.readexactly(length)
    return head.startswith(b"HTTP/1.1 200") and b'"effect":"allow"' in data


async def _connection(
    port: int, request: bytes, until: float, interval: float, offset: float, out: dict[str, Any]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    loop = asyncio.get_running_loop()
    try:
        due = loop.time() + offset
        while True:
            if interval > 0:
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                sent_at = due
                due += interval
            else:
                sent_at = loop.time()
            if sent_at >= until:
                return
            writer.write(request)
            ok = await _answer(reader)
            out["requests"] += 1
            out["allowed"] += ok
            if interval > 0:
                out["latencies_us"].append((loop.time() - sent_at) * 1e6)
    finally:
        writer.close()


async def _main(options: dict[str, Any]) -> dict[str, Any]:
    port = int(options["port"])
    request = _request(port, options["body"].encode())
    connections = int(options["connections"])
    rate = float(options.get("rate", 0))
    interval = connections / rate if rate > 0 else 0.0
    out: dict[str, Any] = {"requests": 0, "allowed": 0, "latencies_us": []}
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2  # connections open before the clock starts
    until = start + float(options["seconds"])
    t0 = time.perf_counter()
    await asyncio.gather(
        *(
            _connection(
                port,
                request,
                until,
                interval,
                0.2 + (i * interval / connections if interval else 0.0),
                out,
            )
            for i in range(connections)
        )
    )
    out["seconds"] = time.perf_counter() - t0 - 0.2
    return out


def run(options: dict[str, Any]) -> dict[str, Any]:
    """Run one load (see the module) in this process and return its counts."""
    try:
        import uvloop

        return uvloop.run(_main(options))
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        return asyncio.run(_main(options))


if __name__ == "__main__":
    result = json.dumps(run(json.loads(sys.argv[1])))
    if len(sys.argv) > 2:  # a file: hundreds of KiB of latencies need no pipe
        with open(sys.argv[2], "w", encoding="utf-8") as f:
            f.write(result)
    else:
        print(result)
