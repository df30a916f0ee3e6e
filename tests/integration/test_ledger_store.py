"""The Store protocol on each driver — real SQLite and real PostgreSQL (the ``backend``
fixture): sequencing, tiles, checkpoints, proofs, faults. An attack edits the database as
someone with access to it could."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest

from interlock.errors import LedgerCorrupt, LedgerError, LedgerUnavailable
from interlock.ledger import merkle
from interlock.ledger.note import NoteSigner, NoteVerifier, open_checkpoint
from interlock.ledger.protocols import Append
from tests.conftest import Backend

SqliteLedger = Any  # either driver: these tests hold the Store protocol


def _records(n: int, start: int = 0) -> list[Append]:
    return [Append(record=f'{{"n":{i}}}'.encode()) for i in range(start, start + n)]


def test_append_assigns_contiguous_indices(ledger: SqliteLedger) -> None:
    got = [r.index for r in ledger.append(_records(3))]
    got += [r.index for r in ledger.append(_records(2, 3))]
    assert got == [0, 1, 2, 3, 4]
    assert ledger.size() == 5
    assert ledger.entry(3) == b'{"n":3}'
    assert ledger.leaf_hash_at(3) == merkle.leaf_hash(b'{"n":3}')


def test_concurrent_appends_share_commits_and_lose_nothing(ledger: SqliteLedger) -> None:
    results: list[int] = []
    lock = threading.Lock()

    def worker(t: int) -> None:
        for i in range(100):
            (r,) = ledger.append([Append(record=f'{{"t":{t},"i":{i}}}'.encode())])
            with lock:
                results.append(r.index)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(results) == list(range(800))
    leaves = [lh for _, lh, _ in ledger.iter_entries()]
    assert ledger.root_at(800) == merkle.root_of(leaves)


def test_tiles_and_proofs_match_reference(ledger: SqliteLedger) -> None:
    # 700 entries: two full level-0 tiles persisted, one partial derived from entries
    for chunk in range(7):
        ledger.append(_records(100, chunk * 100))
    leaves = [merkle.leaf_hash(f'{{"n":{i}}}'.encode()) for i in range(700)]
    ref = merkle.list_reader(leaves)
    for level, index in [(0, 5), (0, 699), (3, 10), (8, 0), (8, 1), (9, 0), (5, 20)]:
        assert ledger.node(level, index) == ref(level, index), (level, index)
    for size in (1, 2, 255, 256, 257, 512, 513, 700):
        root = merkle.root_of(leaves[:size])
        assert ledger.root_at(size) == root
        for index in {0, size // 2, size - 1}:
            proof = ledger.inclusion_proof(index, size)
            merkle.verify_inclusion(index, size, leaves[index], proof, root)
    for old, new in [(1, 700), (256, 512), (300, 700), (700, 700)]:
        proof = ledger.consistency_proof(old, new)
        merkle.verify_consistency(old, new, ledger.root_at(old), ledger.root_at(new), proof)


def test_checkpoint_is_signed_and_names_durability(
    ledger: SqliteLedger, verifier: NoteVerifier
) -> None:
    ledger.append(_records(10))
    cp = ledger.checkpoint()
    assert cp is not None
    assert cp.size == 10
    parsed = open_checkpoint(cp.note, verifier)
    assert parsed.root_hash == ledger.root_at(10)
    assert parsed.extensions == ("durability full",)


def test_process_durability_is_recorded(backend: Backend, signer: NoteSigner) -> None:
    led = backend.fresh("p.db").open(signer=signer, durability="process", create=True)
    try:
        led.append(_records(1))
        cp = led.checkpoint()
        assert cp is not None
        # PostgreSQL commits are always durable: the setting never weakens them
        mode = "process" if backend.kind == "sqlite" else "full"
        assert f"durability {mode}" in cp.note
        assert led.durability.value == mode
    finally:
        led.close()


def test_every_thousand_entries_get_a_checkpoint(ledger: SqliteLedger) -> None:
    for chunk in range(5):
        ledger.append(_records(500, chunk * 500))
    sizes = [c.size for c in ledger.checkpoints()]
    assert sizes, "no checkpoint issued"
    gaps = [b - a for a, b in zip([0, *sizes], sizes, strict=False)]
    assert max(gaps) <= 1000 + 500  # a batch may cross the threshold


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE entries SET data = x'00' WHERE idx = 0",
        "DELETE FROM entries WHERE idx = 0",
        "UPDATE checkpoints SET note = 'x'",
        "DELETE FROM checkpoints",
    ],
)
def test_triggers_refuse_rewrites(ledger: SqliteLedger, backend: Backend, statement: str) -> None:
    ledger.append(_records(3))
    ledger.checkpoint()
    with pytest.raises(backend.refusal, match="append-only"):
        backend.execute(statement)
    assert ledger.size() == 3


def test_self_check_detects_a_changed_entry(
    ledger: SqliteLedger, verifier: NoteVerifier, backend: Backend
) -> None:
    ledger.append(_records(20))
    ledger.checkpoint()
    ledger.self_check(verifier)  # clean
    # an attacker rewrites an entry and its leaf hash, but cannot re-sign the checkpoint
    backend.execute(
        "DROP TRIGGER entries_no_update",
        ("UPDATE entries SET data = ? WHERE idx = 7", (b'{"n":99}',)),
        ("UPDATE entries SET leaf_hash = ? WHERE idx = 7", (merkle.leaf_hash(b'{"n":99}'),)),
    )
    fresh = backend.open()
    try:
        with pytest.raises(LedgerCorrupt, match="checkpoint"):
            fresh.self_check(verifier)
    finally:
        fresh.close()


def test_self_check_detects_a_tail_entry_changed_after_the_checkpoint(
    ledger: SqliteLedger, verifier: NoteVerifier, backend: Backend
) -> None:
    ledger.append(_records(5))
    ledger.checkpoint()
    ledger.append(_records(3, 5))
    backend.execute(
        "DROP TRIGGER entries_no_update",
        ("UPDATE entries SET data = ? WHERE idx = 6", (b'{"n":0}',)),
    )
    with pytest.raises(LedgerCorrupt, match="leaf hash"):
        ledger.self_check(verifier)


def test_two_writers_on_one_file_stay_consistent(backend: Backend, signer: NoteSigner) -> None:
    a = backend.open(signer=signer, create=True)
    b = backend.open(signer=signer)
    try:
        for i in range(300):
            (a if i % 3 else b).append([Append(record=f'{{"i":{i}}}'.encode())])
        leaves = [lh for _, lh, _ in a.iter_entries()]
        assert len(leaves) == 300
        assert a.root_at(300) == b.root_at(300) == merkle.root_of(leaves)
        cp = b.checkpoint()
        assert cp is not None
        assert cp.root == merkle.root_of(leaves)
    finally:
        a.close()
        b.close()


def test_append_times_out_when_another_process_holds_the_lock(
    backend: Backend, signer: NoteSigner
) -> None:
    led = backend.open(signer=signer, busy_timeout_ms=50, create=True)
    try:
        led.append(_records(1))
        with backend.write_lock(), pytest.raises(LedgerUnavailable):
            led.append(_records(1, 1), timeout=0.5)
        # once the lock is released the ledger works again, and nothing was half-written
        (r,) = led.append(_records(1, 2))
        assert r.index == 1
        assert led.size() == 2
    finally:
        led.close()


def test_oversize_record_is_refused(ledger: SqliteLedger) -> None:
    with pytest.raises(LedgerUnavailable, match="64 KiB"):
        ledger.append([Append(record=b"x" * (64 * 1024))])
    assert ledger.size() == 0


def test_missing_entry_and_bad_ranges(ledger: SqliteLedger) -> None:
    ledger.append(_records(4))
    with pytest.raises(LedgerError):
        ledger.entry(4)
    with pytest.raises(LedgerError):
        ledger.inclusion_proof(4, 4)
    with pytest.raises(LedgerError):
        ledger.consistency_proof(3, 9)


def test_read_only_ledger_cannot_append(backend: Backend) -> None:
    led = backend.fresh("ro.db").open(create=True)
    try:
        with pytest.raises(LedgerUnavailable, match="log key"):
            led.append(_records(1))
    finally:
        led.close()


def test_concurrent_appends_with_timeouts_never_lose_or_duplicate(
    backend: Backend, signer: NoteSigner
) -> None:
    led = backend.open(signer=signer, create=True)
    ok: dict[bytes, int] = {}
    failed: set[bytes] = set()
    submitted: set[bytes] = set()
    lock = threading.Lock()
    stop = threading.Event()

    def worker(t: int) -> None:
        rng = random.Random(t)
        i = 0
        while not stop.is_set():
            rec = f'{{"t":{t},"i":{i}}}'.encode()
            i += 1
            with lock:
                submitted.add(rec)
            try:
                (r,) = led.append([Append(record=rec)], timeout=rng.uniform(0.001, 0.05))
            except LedgerUnavailable:
                with lock:
                    failed.add(rec)
            else:
                with lock:
                    ok[rec] = r.index

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    try:
        with backend.write_lock() as (hold, give):
            give()
            for th in threads:
                th.start()
            for _ in range(8):  # hold the write lock from another connection, on and off
                hold()
                time.sleep(0.08)
                give()
                time.sleep(0.08)
            hold()  # the context releases it
    finally:
        stop.set()
        for th in threads:
            th.join()
    try:
        assert ok, "no append succeeded"
        assert failed, "no append timed out: the test did not exercise withdrawal"
        indices = sorted(ok.values())
        assert len(set(indices)) == len(indices), "an index was reported twice"
        for rec, idx in ok.items():
            assert led.entry(idx) == rec
        entries = list(led.iter_entries())
        assert [e[0] for e in entries] == list(range(len(entries)))
        stored = [e[2] for e in entries]
        assert len(set(stored)) == len(stored), "a record was committed twice"
        assert set(stored) <= submitted
        assert set(ok) <= set(stored)
        leaves = [e[1] for e in entries]
        assert led.root_at(len(leaves)) == merkle.root_of(leaves)
        cp = led.checkpoint()
        assert cp is not None
        assert cp.size == len(leaves)
        assert cp.root == merkle.root_of(leaves)
    finally:
        led.close()


def test_withdrawn_records_are_never_committed(backend: Backend, signer: NoteSigner) -> None:
    led = backend.open(signer=signer, create=True)
    try:
        led.append(_records(3))
        led.checkpoint()
        blocker = backend.write_lock()
        blocker.__enter__()
        failures: list[bytes] = []
        lock = threading.Lock()

        def worker(t: int) -> None:
            rng = random.Random(t)
            for i in range(10):
                rec = f'{{"t":{t},"i":{i}}}'.encode()
                with pytest.raises(LedgerUnavailable):
                    led.append([Append(record=rec)], timeout=rng.uniform(0.001, 0.03))
                with lock:
                    failures.append(rec)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        blocker.__exit__(None, None, None)
        assert len(failures) == 80
        time.sleep(0.2)  # nothing queued may commit once the lock is free
        assert led.size() == 3
        (r,) = led.append([Append(record=b'{"after":1}')])
        assert r.index == 3
        stored = {data for _, _, data in led.iter_entries()}
        assert stored.isdisjoint(failures)
    finally:
        led.close()


def test_reopened_ledger_continues_with_correct_roots(backend: Backend, signer: NoteSigner) -> None:
    records: list[bytes] = []
    leaves: list[bytes] = []
    for target in (255, 256, 257, 511, 512, 513, 65_535, 65_536, 65_537):
        led = backend.open(signer=signer, create=True)
        try:
            while len(records) < target:
                n = min(target - len(records), 20_000)
                batch = [f'{{"n":{i}}}'.encode() for i in range(len(records), len(records) + n)]
                got = led.append([Append(record=r) for r in batch], timeout=60)
                assert [g.index for g in got] == list(range(len(records), len(records) + n))
                records += batch
                leaves += [g.leaf_hash for g in got]
            root = merkle.root_of(leaves)
            assert led.root_at(target) == root, target
            cp = led.checkpoint()
            assert cp is not None
            assert (cp.size, cp.root) == (target, root), target
            proof = led.inclusion_proof(target - 1, target)
            merkle.verify_inclusion(target - 1, target, leaves[-1], proof, root)
        finally:
            led.close()
    assert leaves == [merkle.leaf_hash(r) for r in records]


def test_idle_tail_gets_a_checkpoint_without_further_appends(ledger: SqliteLedger) -> None:
    ledger.append(_records(3))  # the first commit always checkpoints
    ledger.append(_records(4, 3))  # within the second: not due yet
    start = time.monotonic()
    while time.monotonic() - start < 2.5:
        cp = ledger.latest_checkpoint()
        if cp is not None and cp.size == 7:
            break
        time.sleep(0.02)
    cp = ledger.latest_checkpoint()
    assert cp is not None
    assert cp.size == 7, "the idle tail got no checkpoint"
    assert time.monotonic() - start <= 2.0
    assert cp.root == ledger.root_at(7)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_self_check_detects_a_tile_that_disagrees_with_its_entries(
    backend: Backend, signer: NoteSigner, verifier: NoteVerifier
) -> None:
    """SQLite persists a full tile in the commit that fills it, ahead of the checkpoint (the
    PostgreSQL integrator persists tiles with a checkpoint: see test_postgres_ledger)."""
    import sqlite3

    path = backend.location
    led = backend.open(signer=signer, create=True)
    led.append(_records(10))  # checkpointed (first commit)
    led.append(_records(290, 10))  # completes tile (0, 0); not checkpointed yet
    led.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT MAX(size) FROM checkpoints").fetchone()[0] == 10
    conn.execute("DROP TRIGGER tiles_no_update")
    # the tile's root (the writer's right edge at 256) only covers entries past the checkpoint
    conn.execute("UPDATE tiles SET root = zeroblob(32) WHERE level = 0 AND n = 0")
    conn.commit()
    conn.close()
    fresh = backend.open()
    try:
        with pytest.raises(LedgerCorrupt, match="does not match the entries"):
            fresh.self_check(verifier)
    finally:
        fresh.close()


def test_self_check_passes_on_a_clean_reopened_ledger(
    backend: Backend, signer: NoteSigner, verifier: NoteVerifier
) -> None:
    led = backend.open(signer=signer, create=True)
    led.append(_records(10))
    led.append(_records(700, 10))
    led.close()
    fresh = backend.open()
    try:
        fresh.self_check(verifier)
    finally:
        fresh.close()
