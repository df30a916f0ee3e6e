"""One sequencer for several gates (issue 14, ``interlock serve --workers``): real gates on one
home whose appends go over real Unix sockets to a sequencer host on the same ledger file.
Records of every gate share commits and verify; an answer comes only from a commit; a lost
sequencer, a refused append or a passed deadline denies and nothing runs; a peer that sends
anything but a request is dropped without a write."""

from __future__ import annotations

import socket
import sqlite3
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from interlock.errors import LedgerUnavailable
from interlock.gate import Gate
from interlock.home import Home
from interlock.ledger.note import NoteSigner
from interlock.ledger.protocols import Append
from interlock.ledger.storage.sqlite import SqliteLedger
from interlock.ledger.storage.sqlite_shared import (
    MAX_FRAME_BYTES,
    SequencerHost,
    SequencerLink,
)
from tests.conftest import tool_request
from tests.e2e.test_exec import cli
from tests.faults.harness import governed


@pytest.fixture
def host(home: Path) -> Iterator[SequencerHost]:
    h = Home.load(home)
    location = h.ledger_location
    assert isinstance(location, Path)
    signer = NoteSigner(h.config.origin, h.private_key("log"))
    seq = SequencerHost(SqliteLedger(location, signer=signer, durability="full"))
    try:
        yield seq
    finally:
        seq.close()


class Attached:
    """A gate on the home whose appends go to ``host`` over a socketpair."""

    def __init__(self, home: Path, host: SequencerHost, name: str) -> None:
        self.lost: list[str] = []
        self.ours, theirs = socket.socketpair()
        host.serve(self.ours, name)
        self.gate = Gate.open(home)
        self.link = SequencerLink(theirs, on_lost=self.lost.append)
        ledger = self.gate.ledger
        assert isinstance(ledger, SqliteLedger)
        ledger.attach_sequencer(self.link)
        #: what the gate committed itself while it opened, before the link was attached
        self.own_commits = ledger.commits


@pytest.fixture
def attach(home: Path, host: SequencerHost) -> Iterator[Any]:
    made: list[Attached] = []

    def _attach(name: str = "worker") -> Attached:
        made.append(Attached(home, host, name))
        return made[-1]

    yield _attach
    for a in made:
        a.gate.close()


def _record_at(host: SequencerHost, index: int) -> dict[str, Any]:
    import json

    return dict(json.loads(host.ledger.entry(index)))


def test_the_gates_records_share_the_hosts_commits_and_verify(
    home: Path, host: SequencerHost, attach: Any, issue: Any
) -> None:
    attached = [attach("worker 1"), attach("worker 2")]
    gates = [a.gate for a in attached]
    req = tool_request(issue())
    commits0, committed0 = host.ledger.commits, host.ledger.committed
    answers: list[Any] = []
    lock = threading.Lock()

    def work(gate: Gate) -> None:
        for _ in range(40):
            d = gate.decide(req)
            with lock:
                answers.append(d)

    threads = [threading.Thread(target=work, args=(gates[t % 2],)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answers) == 320
    assert all(d.allowed for d in answers), {c for d in answers for c in d.codes}
    # the host committed every one of them, several to a commit
    assert host.ledger.committed - committed0 == 320
    assert host.ledger.commits - commits0 < 320
    # each answer's index holds its own decision
    assert len({d.ledger_index for d in answers}) == 320
    for d in answers[::37]:
        rec = _record_at(host, d.ledger_index)
        assert rec["id"] == d.request_id and rec["effect"] == "allow"
    # the gates' own ledger objects wrote nothing since the link was attached
    for a in attached:
        assert isinstance(a.gate.ledger, SqliteLedger)
        assert a.gate.ledger.commits == a.own_commits
    for g in gates:
        g.ledger.checkpoint()  # a forced checkpoint goes to the host too
    assert host.ledger.latest_checkpoint() is not None
    assert host.ledger.latest_checkpoint().size == host.ledger.size()  # type: ignore[union-attr]
    assert cli(home, "ledger", "verify").returncode == 0


def test_a_lost_sequencer_denies_and_nothing_runs(
    home: Path, host: SequencerHost, attach: Any, issue: Any
) -> None:
    a = attach()
    req = tool_request(issue())
    assert a.gate.decide(req).allowed
    size = host.ledger.size()
    # the sequencer's process is gone: its end of the socket closes
    a.ours.shutdown(socket.SHUT_RDWR)
    a.ours.close()
    deadline = time.monotonic() + 10
    while not a.lost and time.monotonic() < deadline:
        time.sleep(0.01)
    assert a.lost and "sequencer" in a.lost[0]
    attempt = governed(a.gate, req)
    assert attempt.effect == "deny" and "LEDGER_UNAVAILABLE" in attempt.codes
    assert not attempt.executed
    d = a.gate.decide(req)
    assert not d.allowed and "LEDGER_UNAVAILABLE" in d.codes
    assert "sequencer" in d.reasons[0].detail
    assert host.ledger.size() == size  # nothing was written


def test_a_link_that_breaks_while_a_caller_waits_fails_it(home: Path) -> None:
    ours, theirs = socket.socketpair()
    lost: list[str] = []
    link = SequencerLink(theirs, on_lost=lost.append)
    signer = NoteSigner("interlock.test/link", Ed25519PrivateKey.generate())
    led = SqliteLedger(Home.load(home).path / "ledger.db", signer=signer)
    led.attach_sequencer(link)
    errors: list[BaseException] = []

    def append() -> None:
        try:
            led.append([Append(record=b'{"n":1}')], timeout=30)
        except LedgerUnavailable as exc:
            errors.append(exc)

    t = threading.Thread(target=append)
    t0 = time.monotonic()
    t.start()
    # the request arrives; no answer comes; the peer goes away
    head = ours.recv(4)
    assert len(head) == 4
    ours.close()
    t.join(timeout=10)
    assert not t.is_alive() and time.monotonic() - t0 < 10  # not the 30 s deadline
    assert errors and "sequencer" in str(errors[0])
    assert lost
    led.close()


def test_a_refused_append_denies_with_the_hosts_reason(
    home: Path, host: SequencerHost, attach: Any, issue: Any
) -> None:
    a = attach()
    req = tool_request(issue())
    assert a.gate.decide(req).allowed
    size = host.ledger.size()
    # the host's ledger stops taking appends (its sequencer failed, or it is closing)
    host.ledger.close()
    attempt = governed(a.gate, req)
    assert attempt.effect == "deny" and "LEDGER_UNAVAILABLE" in attempt.codes
    assert not attempt.executed
    assert "closed" in attempt.detail
    assert a.lost == []  # a refusal is an answer: the link itself still works
    with sqlite3.connect(Home.load(home).path / "ledger.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0] == size


def test_a_deadline_that_passes_while_the_lock_is_held_elsewhere_writes_nothing(
    home: Path, host: SequencerHost, attach: Any, issue: Any
) -> None:
    a = attach()
    req = tool_request(issue())
    assert a.gate.decide(req).allowed
    size = host.ledger.size()
    ledger = a.gate.ledger
    assert isinstance(ledger, SqliteLedger)
    conn = sqlite3.connect(Home.load(home).path / "ledger.db", isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")  # another writer holds the lock past the deadline
    try:
        t0 = time.monotonic()
        with pytest.raises(LedgerUnavailable, match="deadline"):
            ledger.append([Append(record=b'{"late":1}')], timeout=0.3)
        assert time.monotonic() - t0 < 3
    finally:
        conn.execute("ROLLBACK")
        conn.close()
    # the lock is free again; the withdrawn record never lands, later ones do
    assert a.gate.decide(req).allowed
    rows = [_record_at(host, i) for i in range(size, host.ledger.size())]
    assert {"late": 1} not in rows
    assert len(rows) == 1


def _raw_frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


@pytest.mark.parametrize(
    "frame",
    [
        _raw_frame(b"\xc1not msgpack"),
        _raw_frame(msgspec.msgpack.encode({"id": 1, "items": []})),  # not a request's shape
        # a record above the entry bundle's 65,535 bytes
        _raw_frame(msgspec.msgpack.encode([1, 1e18, [[b"x" * 70_000, {}, None]]])),
        struct.pack(">I", MAX_FRAME_BYTES + 1),  # a frame too large to read
        struct.pack(">I", 100) + b"\x93\x01",  # the stream ends inside a frame
    ],
    ids=["garbage", "wrong-shape", "record-too-big", "frame-too-large", "truncated"],
)
def test_a_peer_that_sends_anything_but_requests_is_dropped_without_a_write(
    host: SequencerHost, attach: Any, issue: Any, frame: bytes
) -> None:
    good = attach("worker 1")
    req = tool_request(issue())
    assert good.gate.decide(req).allowed
    size = host.ledger.size()
    ours, theirs = socket.socketpair()
    host.serve(ours, "hostile")
    theirs.sendall(frame)
    theirs.shutdown(socket.SHUT_WR)
    theirs.settimeout(10)
    assert theirs.recv(1) == b""  # dropped: closed without an answer
    theirs.close()
    assert host.ledger.size() == size
    # the other worker is unaffected
    assert good.gate.decide(req).allowed
    assert host.ledger.size() == size + 1


def test_a_sequencer_that_stops_reading_cannot_hold_callers_past_their_deadline(
    home: Path,
) -> None:
    """A stopped sequencer process (SIGSTOP) stops reading; its socket fills. Callers must
    still be answered (denied) at their deadline, not block in a send."""
    ours, theirs = socket.socketpair()
    signer = NoteSigner("interlock.test/link", Ed25519PrivateKey.generate())
    led = SqliteLedger(Home.load(home).path / "ledger.db", signer=signer)
    led.attach_sequencer(SequencerLink(theirs))
    big = Append(record=b"x" * 60_000)
    outcomes: list[BaseException | None] = []
    lock = threading.Lock()

    def append() -> None:
        try:
            led.append([big], timeout=1.0)
            outcome: BaseException | None = None
        except LedgerUnavailable as exc:
            outcome = exc
        with lock:
            outcomes.append(outcome)

    # more than the socket buffers hold (4 MiB asked for each side, never read)
    threads = [threading.Thread(target=append) for _ in range(200)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=15)
    assert not any(t.is_alive() for t in threads), "a caller stayed past its deadline"
    assert time.monotonic() - t0 < 15
    assert len(outcomes) == 200
    assert all(isinstance(o, LedgerUnavailable) for o in outcomes)
    ours.close()
    led.close()
