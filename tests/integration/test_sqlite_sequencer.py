"""The SQLite ledger's sequencer (issue 14), on a real ledger file with the write lock held by
a real second connection: callers queued behind a held lock commit together in one batch once
it is released; a lone caller commits on its own thread; deadlines withdraw what was not
written; a sequencer that dies refuses every later append instead of leaving callers hanging."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from interlock.errors import LedgerUnavailable
from interlock.ledger.note import NoteSigner
from interlock.ledger.protocols import Append, AppendResult
from interlock.ledger.storage.sqlite import SqliteLedger


@pytest.fixture
def led(tmp_path: Path) -> Iterator[SqliteLedger]:
    signer = NoteSigner("interlock.test/sequencer", Ed25519PrivateKey.generate())
    ledger = SqliteLedger(tmp_path / "ledger.db", signer=signer, durability="full", create=True)
    try:
        yield ledger
    finally:
        ledger.close()


@contextmanager
def write_lock(path: Path) -> Iterator[None]:
    """Another connection holds the database's write lock (BEGIN IMMEDIATE) until exit."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def _record(i: int) -> Append:
    return Append(record=f'{{"n":{i}}}'.encode())


def _wait_until(cond: object, what: str, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > end:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.005)


def test_callers_queued_behind_a_held_lock_commit_in_one_batch(led: SqliteLedger) -> None:
    led.append([_record(0)])  # the sequencer's connection exists
    before = led.commits
    results: dict[int, list[AppendResult]] = {}

    def call(i: int) -> None:
        results[i] = led.append([_record(i)], timeout=30)

    with write_lock(led.path):
        first = threading.Thread(target=call, args=(1,))
        first.start()  # alone: commits on its own thread, waiting for the lock
        _wait_until(lambda: led._writing, "the lone caller is writing")
        rest = [threading.Thread(target=call, args=(i,)) for i in range(2, 18)]
        for th in rest:
            th.start()
        _wait_until(lambda: len(led._queue) == 16, "16 callers queued for the sequencer")
    for th in [first, *rest]:
        th.join(timeout=30)
    assert sorted(r[0].index for r in results.values()) == list(range(1, 18))
    # the lone caller's commit, then one batch for the 16 that queued meanwhile (the idle
    # sequencer may add a checkpoint-only commit: it commits no entries)
    assert led.committed >= 17
    batches = led.commits - before
    assert 2 <= batches <= 3, f"{batches} commits for 17 appends"
    assert led.size() == 18


def test_a_queued_caller_whose_deadline_passes_is_withdrawn_and_never_written(
    led: SqliteLedger,
) -> None:
    led.append([_record(0)])
    errors: dict[int, BaseException] = {}
    done: dict[int, list[AppendResult]] = {}

    def call(i: int, timeout: float) -> None:
        try:
            done[i] = led.append([_record(i)], timeout=timeout)
        except LedgerUnavailable as exc:
            errors[i] = exc

    with write_lock(led.path):
        lone = threading.Thread(target=call, args=(1, 30.0))
        lone.start()
        _wait_until(lambda: led._writing, "the lone caller is writing")
        short = threading.Thread(target=call, args=(2, 0.2))
        short.start()
        short.join(timeout=10)
        assert "not durable within the deadline" in str(errors[2])
        assert led._queue == []  # withdrawn, not left for the sequencer
    lone.join(timeout=30)
    assert [r.index for r in done[1]] == [1]
    assert [led.entry(i) for i in range(led.size())] == [b'{"n":0}', b'{"n":1}']


def test_a_lone_caller_past_its_deadline_behind_the_lock_is_denied_and_not_written(
    led: SqliteLedger,
) -> None:
    led.append([_record(0)])
    with write_lock(led.path), pytest.raises(LedgerUnavailable):
        led.append([_record(1)], timeout=0.2)
    assert led.size() == 1
    led.append([_record(2)])  # and the ledger goes on
    assert led.size() == 2


def test_a_dead_sequencer_refuses_every_later_append(
    led: SqliteLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    led.append([_record(0)])

    def crash(batch: object) -> None:
        raise SystemExit("injected: the sequencer thread dies")

    errors: list[BaseException] = []

    def call(i: int) -> None:
        try:
            led.append([_record(i)], timeout=10)
        except LedgerUnavailable as exc:
            errors.append(exc)

    # callers queued behind a lone caller's commit are the sequencer's to write
    with write_lock(led.path):
        lone = threading.Thread(target=call, args=(1,))
        lone.start()
        _wait_until(lambda: led._writing, "the lone caller is writing")
        # the lone caller is inside the real _write_batch already; the sequencer's next is not
        monkeypatch.setattr(led, "_write_batch", crash)
        queued = threading.Thread(target=call, args=(2,))
        queued.start()
        _wait_until(lambda: len(led._queue) == 1, "a caller queued for the sequencer")
    lone.join(timeout=30)
    queued.join(timeout=30)
    assert any("sequencer stopped" in str(e) for e in errors), errors
    assert led._writer is not None
    led._writer.join(timeout=10)
    assert not led._writer.is_alive()
    with pytest.raises(LedgerUnavailable, match="sequencer stopped"):
        led.append([_record(3)])
    assert led.size() <= 2  # nothing the dead sequencer held was written


def test_a_lone_caller_dropped_after_the_lock_for_its_deadline_is_denied(
    led: SqliteLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window between obtaining the write lock and writing: a caller whose deadline
    passed there (its process was stopped) is dropped, and its append raises, never returns
    an empty result."""
    led.append([_record(0)])
    begin = led._begin

    def slow_begin(conn: sqlite3.Connection, lock_until: float) -> None:
        begin(conn, lock_until)
        time.sleep(0.3)  # stopped right after the lock was obtained

    monkeypatch.setattr(led, "_begin", slow_begin)
    with pytest.raises(LedgerUnavailable, match="not durable within the deadline"):
        led.append([_record(1)], timeout=0.1)
    monkeypatch.undo()
    assert led.size() == 1
    assert [r.index for r in led.append([_record(2)])] == [1]
