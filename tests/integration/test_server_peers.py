"""Slow and greedy clients against the real HTTP server (uvicorn with ``interlock serve``'s own
configuration, :func:`interlock.server.server_config`), spoken to with raw sockets: a slowloris
client that drips its headers, one that sends nothing, one that drips its body, and one that
opens more connections than its share. Each is cut off; a well-behaved client on the same
server is served meanwhile, and nothing reaches the ledger."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from interlock.bootstrap import init_home
from interlock.gate import Gate
from interlock.server import PeerLimits, create_app, server_config
from tests.conftest import edit_config

HEADER_S = 1.0
BODY_S = 1.5
#: a generous bound on how late a cut may come on a loaded 2-core machine
SLACK_S = 5.0


@contextlib.contextmanager
def serving(gate: Gate, limits: PeerLimits) -> Iterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = server_config(
        create_app(gate), host="127.0.0.1", port=port, log_level="warning", limits=limits
    )
    config.access_log = False
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gate]:
    home = init_home(tmp_path_factory.mktemp("peers") / "home", origin="interlock.test/peers")
    edit_config(home.path, "deadline_ms = 50", "deadline_ms = 2000")
    with Gate.open(home.path) as g:
        yield g


@pytest.fixture(scope="module")
def port(gate: Gate) -> Iterator[int]:
    limits = PeerLimits(header_timeout=HEADER_S, body_timeout=BODY_S, max_connections_per_client=8)
    with serving(gate, limits) as p:
        yield p


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    s = socket.create_connection(
        ("127.0.0.1", port), timeout=HEADER_S + BODY_S + SLACK_S * 2, source_address=(source, 0)
    )
    return s


def read_all(s: socket.socket) -> bytes:
    """Everything until the server closes the connection."""
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


def drip(s: socket.socket, pieces: list[bytes], every: float) -> tuple[int, float]:
    """Send ``pieces`` one by one, ``every`` seconds apart, until the server cuts us off.
    Returns how many were sent and when the connection ended."""
    start = time.monotonic()
    sent = 0
    for piece in pieces:
        try:
            s.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += 1
        time.sleep(every)
        s.setblocking(False)
        try:
            if s.recv(65536, socket.MSG_PEEK) is not None:
                break  # the server answered (and closes)
        except BlockingIOError:
            pass
        finally:
            s.setblocking(True)
    return sent, time.monotonic() - start


def get(port: int, path: str = "/healthz", source: str = "127.0.0.1") -> bytes:
    with connect(port, source) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        return read_all(s)


def test_a_client_that_drips_its_headers_is_cut_off(gate: Gate, port: int) -> None:
    size = gate.ledger.size()
    started = time.monotonic()
    with connect(port) as s:
        s.sendall(b"POST /v1/decisions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        # 60 header lines, one every 0.2 s: 12 s if nobody stopped it
        sent, _ = drip(s, [f"X-Slow-{i}: y\r\n".encode() for i in range(60)], 0.2)
        answer = read_all(s)
    took = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"headers were not received in time" in answer
    assert sent < 60
    assert HEADER_S <= took < HEADER_S + SLACK_S
    assert gate.ledger.size() == size


def test_a_connection_that_sends_nothing_is_closed(port: int) -> None:
    started = time.monotonic()
    with connect(port) as s:
        answer = read_all(s)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert HEADER_S <= time.monotonic() - started < HEADER_S + SLACK_S


def test_a_client_that_drips_its_body_is_cut_off(gate: Gate, port: int) -> None:
    size = gate.ledger.size()
    started = time.monotonic()
    with connect(port) as s:
        s.sendall(
            b"POST /v1/decisions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{"
        )
        sent, _ = drip(s, [b" "] * 100, 0.1)
        answer = read_all(s)
    took = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"body was not received in time" in answer
    assert sent < 100
    assert HEADER_S <= took < HEADER_S + BODY_S + SLACK_S
    # the request never reached the gate: nothing was decided or recorded
    assert gate.ledger.size() == size


def test_well_behaved_clients_are_served_meanwhile(port: int) -> None:
    with connect(port) as slow:
        slow.sendall(b"GET /healthz HTTP/1.1\r\n")
        assert get(port).startswith(b"HTTP/1.1 200 ")
        # a keep-alive connection: two requests, a pause shorter than the header timeout
        with connect(port) as s:
            for _ in range(2):
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
                time.sleep(HEADER_S / 2)
        # the slow one was cut off
        assert read_all(slow).startswith(b"HTTP/1.1 408 ")


def test_a_request_read_in_time_may_take_longer_to_answer(gate: Gate, port: int) -> None:
    """The limits are on reading the request, not on the answer (an SSE stream, a slow
    decision): a request whose body arrived is never cut by them."""
    body = b'{"principal": "spiffe://acme.test/agent/researcher", "action": "tool.call"}'
    with connect(port) as s:
        s.sendall(
            b"POST /v1/decisions HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        time.sleep(HEADER_S + BODY_S + 0.5)  # read nothing for a while
        answer = read_all(s)
    assert answer.startswith(b"HTTP/1.1 4") and b"MALFORMED_REQUEST" in answer


def test_connections_per_client_address_are_capped(gate: Gate) -> None:
    limits = PeerLimits(header_timeout=60, body_timeout=60, max_connections_per_client=4)
    with serving(gate, limits) as p:
        held = [connect(p) for _ in range(4)]
        try:
            # the fifth from the same address is refused at once
            with connect(p) as fifth:
                assert read_all(fifth).startswith(b"HTTP/1.1 429 ")
            # another address is not affected (127.0.0.2 is loopback too on Linux)
            assert get(p, source="127.0.0.2").startswith(b"HTTP/1.1 200 ")
            # one closed: there is room again
            held.pop().close()
            for _ in range(100):  # the server sees the close asynchronously
                answer = get(p)
                if not answer.startswith(b"HTTP/1.1 429 "):
                    break
                time.sleep(0.05)
            assert answer.startswith(b"HTTP/1.1 200 ")
        finally:
            for s in held:
                s.close()


@pytest.mark.parametrize(
    "kwargs",
    [{"header_timeout": 0}, {"body_timeout": -1}, {"max_connections_per_client": 0}],
)
def test_limits_must_be_positive(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        PeerLimits(**kwargs)  # type: ignore[arg-type]
