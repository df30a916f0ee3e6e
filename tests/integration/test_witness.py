"""Witnesses over real HTTP on loopback (uvicorn), real Ed25519 and real SQLite ledgers: the
node's confirm_head against C2SP tlog-witness servers, forks, rollbacks, quorums, restarts."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from interlock.errors import VerificationError
from interlock.ledger.cosign import CosignatureVerifier, QuorumNotMet, note_text
from interlock.ledger.note import NoteSigner, NoteVerifier
from interlock.ledger.protocols import Append, Store
from interlock.ledger.storage import open_store
from interlock.witness import Witness, WitnessEndpoint, confirm_head, init_witness, require_quorum
from interlock.witness.protocol import MAX_BODY_BYTES, format_add_checkpoint
from interlock.witness.server import create_app

ORIGIN = "interlock.test/fleet"


@contextlib.contextmanager
def served(path: Path) -> Iterator[str]:
    """``Witness.open(path)`` served by uvicorn on a free loopback port, in a thread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    with Witness.open(path) as w:
        config = uvicorn.Config(
            create_app(w), log_level="warning", ws="none", access_log=False, lifespan="off"
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the witness did not start")
            time.sleep(0.01)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            thread.join(20)
            sock.close()


def dead_url() -> str:
    """A loopback URL nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


class Log:
    def __init__(self, path: Path, key: Ed25519PrivateKey, tag: str) -> None:
        self.signer = NoteSigner(ORIGIN, key)
        self.store: Store = open_store(path, signer=self.signer, durability="process", create=True)
        self.tag = tag
        self.n = 0

    def grow(self, k: int) -> str:
        self.store.append(
            [Append(record=f'{{"{self.tag}":{self.n + i}}}'.encode()) for i in range(k)]
        )
        self.n += k
        cp = self.store.checkpoint()
        assert cp is not None
        return cp.note


@pytest.fixture
def log_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def log(tmp_path: Path, log_key: Ed25519PrivateKey) -> Iterator[Log]:
    lg = Log(tmp_path / "a.db", log_key, "a")
    yield lg
    lg.store.close()


def make_witnesses(tmp_path: Path, vkey: str, n: int) -> list[tuple[Path, str]]:
    """``n`` witness folders trusting the log; each with its cosignature vkey."""
    out = []
    for i in range(n):
        path = tmp_path / f"w{i}"
        init_witness(path, name=f"witness.test/w{i}", logs={ORIGIN: vkey})
        with Witness.open(path) as w:
            out.append((path, w.vkey))
    return out


def test_a_witness_cosigns_a_growing_log(tmp_path: Path, log: Log) -> None:
    ((path, wkey),) = make_witnesses(tmp_path, log.signer.vkey, 1)
    sizes: dict[str, int] = {}
    with served(path) as url:
        ep = WitnessEndpoint.parse(url, wkey)
        for k in (1, 3, 1, 250, 7):
            log.grow(k)
            head = confirm_head(log.store, [ep], 1, known_sizes=sizes)
            assert head.checkpoint.size == log.n
            assert list(head.cosigners) == ["witness.test/w0"]
            assert sizes == {url: log.n}
            # the result carries the log's and the witness's signatures; it checks offline
            require_quorum(head.note, NoteVerifier.from_vkey(log.signer.vkey), [ep], 1)
        # a new node knows no size: it learns it from the 409 and still gets cosigned
        head = confirm_head(log.store, [ep], 1)
        assert head.checkpoint.size == log.n


def test_a_fork_is_refused_and_kept(tmp_path: Path, log: Log, log_key: Ed25519PrivateKey) -> None:
    ((path, wkey),) = make_witnesses(tmp_path, log.signer.vkey, 1)
    other = Log(tmp_path / "b.db", log_key, "b")  # same origin, same key, other entries
    try:
        log.grow(5)
        other.grow(5)
        assert note_text(log.store.latest_checkpoint().note) != note_text(  # type: ignore[union-attr]
            other.store.latest_checkpoint().note  # type: ignore[union-attr]
        )
        with served(path) as url:
            ep = WitnessEndpoint.parse(url, wkey)
            confirm_head(log.store, [ep], 1)
            with pytest.raises(QuorumNotMet) as info:  # same size, other root
                confirm_head(other.store, [ep], 1)
            assert "422" in str(info.value.evidence["failures"])
            other.grow(2)  # the other branch, larger: its proof cannot start at the held root
            with pytest.raises(QuorumNotMet):
                confirm_head(other.store, [ep], 1)
            log.grow(1)
            confirm_head(log.store, [ep], 1)  # the branch it saw still goes on
        with Witness.open(path) as w:  # the refusals survive the restart
            kinds = [(e.kind, e.size, e.held_size) for e in w.state.evidence()]
            assert kinds == [("fork", 5, 5), ("inconsistent", 7, 5)]
            assert [lt.size for lt in w.state.all_latest()] == [6]
    finally:
        other.store.close()


def test_protocol_answers(tmp_path: Path, log: Log) -> None:
    ((path, _),) = make_witnesses(tmp_path, log.signer.vkey, 1)
    note3 = log.grow(3)
    note8 = log.grow(5)
    with served(path) as url, httpx.Client(base_url=url, timeout=10) as http:
        post = lambda body: http.post("/add-checkpoint", content=body)  # noqa: E731
        assert post(format_add_checkpoint(0, [], note3)).status_code == 200
        # stale old size: 409 with the witness's size, then success from it
        r = post(format_add_checkpoint(0, [], note8))
        assert r.status_code == 409
        assert r.headers["content-type"] == "text/x.tlog.size"
        assert r.text == "3\n"
        bad = [bytes(32)] * len(log.store.consistency_proof(3, 8))
        assert post(format_add_checkpoint(3, bad, note8)).status_code == 422
        r = post(format_add_checkpoint(3, log.store.consistency_proof(3, 8), note8))
        assert r.status_code == 200
        assert r.text.startswith("— witness.test/w0 ") and r.text.endswith("\n")
        # unknown origin 404; right origin but another key 403; old > size 400
        stranger = NoteSigner("interlock.test/other", Ed25519PrivateKey.generate())
        assert (
            post(
                format_add_checkpoint(
                    0, [], stranger.sign(note_text(note8).replace(ORIGIN, "interlock.test/other"))
                )
            ).status_code
            == 404
        )
        impostor = NoteSigner(ORIGIN, Ed25519PrivateKey.generate())
        assert (
            post(format_add_checkpoint(8, [], impostor.sign(note_text(note8)))).status_code == 403
        )
        assert post(format_add_checkpoint(9, [], note8)).status_code == 400
        assert post(b"garbage").status_code == 400
        # body limit: refused before it is read, declared or streamed
        assert post(b"x" * (MAX_BODY_BYTES + 1)).status_code == 413

        def chunks() -> Iterator[bytes]:
            for _ in range(100):
                yield b"y" * 1024

        assert http.post("/add-checkpoint", content=chunks()).status_code == 413
        assert http.get("/add-checkpoint").status_code == 405
        # monitoring: the latest cosigned checkpoint, with the log's and the witness's lines
        import hashlib

        r = http.get(f"/{hashlib.sha256(ORIGIN.encode()).hexdigest()}/checkpoint")
        assert r.status_code == 200
        assert note_text(r.text) == note_text(note8)
        assert http.get(f"/{'0' * 64}/checkpoint").status_code == 404


def test_quorum_two_of_three(tmp_path: Path, log: Log) -> None:
    ws = make_witnesses(tmp_path, log.signer.vkey, 3)
    log.grow(4)
    with served(ws[0][0]) as u0, served(ws[1][0]) as u1:
        up = [WitnessEndpoint.parse(u0, ws[0][1]), WitnessEndpoint.parse(u1, ws[1][1])]
        down = WitnessEndpoint.parse(dead_url(), ws[2][1])
        head = confirm_head(log.store, [*up, down], 2, timeout=2)
        assert set(head.cosigners) == {"witness.test/w0", "witness.test/w1"}
        verifiers = [CosignatureVerifier.from_vkey(k) for _, k in ws]
        assert sum(1 for v in verifiers if _cosigned(v, head.note)) == 2
        # two of three down: not confirmed, and why is in the evidence
        with pytest.raises(QuorumNotMet) as info:
            confirm_head(
                log.store,
                [up[0], down, WitnessEndpoint.parse(dead_url(), ws[1][1])],
                2,
                timeout=2,
            )
        assert info.value.evidence["cosigned"] == 1
        assert info.value.reason_code == "POLICY_STALE"
        assert len(info.value.evidence["failures"]) == 2


def test_an_impostor_witness_does_not_count(tmp_path: Path, log: Log) -> None:
    ws = make_witnesses(tmp_path, log.signer.vkey, 2)
    log.grow(2)
    # the witness at u0 answers, but the node expects w1's key there: its line is not w1's
    with served(ws[0][0]) as u0, pytest.raises(QuorumNotMet):
        confirm_head(log.store, [WitnessEndpoint.parse(u0, ws[1][1])], 1)


def test_the_witness_never_goes_back_across_restarts(tmp_path: Path, log: Log) -> None:
    ((path, wkey),) = make_witnesses(tmp_path, log.signer.vkey, 1)
    note2 = log.grow(2)
    with served(path) as url:
        confirm_head(log.store, [WitnessEndpoint.parse(url, wkey)], 1)
    log.grow(3)
    with served(path) as url:  # a new server process state: it still holds 2
        r = httpx.post(f"{url}/add-checkpoint", content=format_add_checkpoint(0, [], note2))
        assert (r.status_code, r.text) == (409, "2\n")
        confirm_head(log.store, [WitnessEndpoint.parse(url, wkey)], 1)
    with served(path) as url:
        r = httpx.post(f"{url}/add-checkpoint", content=format_add_checkpoint(5, [], note2))
        assert r.status_code == 400  # old 5 > size 2
        r = httpx.post(f"{url}/add-checkpoint", content=format_add_checkpoint(0, [], note2))
        assert (r.status_code, r.text) == (409, "5\n")
    with Witness.open(path) as w:
        assert [lt.size for lt in w.state.all_latest()] == [5]
        assert {e.kind for e in w.state.evidence()} == {"smaller"}


def _cosigned(v: CosignatureVerifier, note: str) -> bool:
    try:
        v.verify(note)
    except VerificationError:
        return False
    return True
