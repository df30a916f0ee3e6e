"""The stored governance state is always the projection of the log (DESIGN I8).

Two properties, both against real SQLite:

* any sequence of records — including ones no gate writes (a status before its decision, a
  status that would go backwards, a repeated id, an unsigned governance record) — leaves the
  SQLite driver's tables equal to :class:`Projection`'s fold of the same records;
* a state machine drives a real gate through random decisions and governance actions and
  checks, after every step, that the projection rebuilt from the log equals the stored one.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from interlock.bootstrap import init_home
from interlock.capability import CapabilityIssuer, Right, revocation_ids
from interlock.core.canonical import canonical_bytes
from interlock.gate import Gate
from interlock.ledger.fold import rebuild
from interlock.ledger.merkle import leaf_hash
from interlock.ledger.note import NoteSigner
from interlock.ledger.projection import (
    STATE_CHECKED_EVENT,
    Projection,
    delta_of,
    first_difference,
)
from interlock.ledger.protocols import Append
from interlock.ledger.statecheck import (
    Unvouched,
    check_log,
    check_since_checkpoint,
    checkpoint_fields,
)
from interlock.ledger.storage import open_store
from interlock.ledger.storage.sqlite import SqliteLedger
from interlock.records import sign_governance
from interlock.trust import keys
from tests.conftest import (
    RESEARCHER,
    SUMMARIZER,
    drop_pg_database,
    new_pg_database,
    tool_request,
)


@contextlib.contextmanager
def _store(kind: str, signer: NoteSigner) -> Iterator[Any]:
    """A new, empty store of either driver (PostgreSQL: a database of its own), gone after."""
    if kind == "sqlite":
        folder = Path(tempfile.mkdtemp())
        led = SqliteLedger(folder / "l.db", signer=signer, create=True)
        try:
            yield led
        finally:
            led.close()
            shutil.rmtree(folder)
        return
    url = new_pg_database()
    try:
        led = open_store(url, signer=signer, durability="full", create=True)
        try:
            yield led
        finally:
            led.close()
    finally:
        drop_pg_database(url)


NODE = Ed25519PrivateKey.generate()
NODE_PUBLIC = keys.public_raw(NODE)
IDS = st.sampled_from(["a", "b", "c", "d"])
PRINCIPALS = st.sampled_from([RESEARCHER, SUMMARIZER])


def _ts(n: int) -> str:
    return f"2026-12-02T10:00:{n % 60:02d}.{n:06d}Z"


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(
        st.sampled_from(
            ["decision", "exec.start", "exec.end", "exec.terminated", "exec.verify", "gov"]
        )
    )
    ts = _ts(draw(st.integers(0, 999_999)))
    if kind == "decision":
        return {
            "type": "decision",
            "id": draw(IDS),
            "ts": ts,
            "effect": draw(st.sampled_from(["allow", "deny"])),
            "parent": draw(st.none() | IDS),
            "lineage": {"status": "allowed", "depth": draw(st.integers(0, 3))},
            "request": {"principal": draw(PRINCIPALS)},
        }
    if kind != "gov":
        return {"type": kind, "id": draw(IDS), "ts": ts}
    event = draw(
        st.sampled_from(
            [
                "capability.revoked",
                "principal.quarantined",
                "principal.released",
                "kill_switch.on",
                "kill_switch.off",
                "boundary.restricted",
                "boundary.released",
                "policy.loaded",
            ]
        )
    )
    rec: dict[str, Any] = {"type": "governance", "event": event, "id": "g", "ts": ts}
    if event == "capability.revoked":
        rec["revocation_ids"] = draw(st.lists(st.sampled_from(["r1", "r2", "r3"]), max_size=2))
    elif event.startswith(("principal", "boundary")):
        rec["principal"] = draw(PRINCIPALS)
        if event.startswith("boundary"):
            rec["boundary"] = draw(st.sampled_from(["x", "y"]))
    elif event == "policy.loaded":
        rec["policy_version"] = draw(st.integers(1, 4))
        rec["policy_digest"] = draw(st.sampled_from(["d1", "d2"]))
    if event != "policy.loaded" and draw(st.booleans()):  # some are forged: unsigned
        return rec
    return sign_governance(rec, NODE) if event != "policy.loaded" else rec


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=st.lists(st.lists(records(), min_size=1, max_size=6), min_size=1, max_size=8))
def test_the_stored_tables_are_the_fold_of_any_record_sequence(
    kind: str, batches: list[list[dict[str, Any]]]
) -> None:
    signer = NoteSigner("interlock.test/p", Ed25519PrivateKey.generate())
    with _store(kind, signer) as led:
        p = Projection()
        for batch in batches:
            appends = [
                Append(
                    record=canonical_bytes(r),
                    state=delta_of(r, node_public=NODE_PUBLIC, root_public=None),
                )
                for r in batch
            ]
            for res, r in zip(led.append(appends), batch, strict=True):
                p.apply(res.index, leaf_hash(canonical_bytes(r)), r, node_public=NODE_PUBLIC)
            assert first_difference(led.dump_state(), p.rows()) is None
            assert rebuild(led, node_public=NODE_PUBLIC, root_public=None).rows() == p.rows()


class GateMachine(RuleBasedStateMachine):
    """Random decisions and governance actions on a real gate."""

    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp())
        home = init_home(self.folder / "home", origin="interlock.test/sm")
        cfg = home.path / "interlock.toml"
        cfg.write_text(cfg.read_text().replace("deadline_ms = 50", "deadline_ms = 5000"))
        from interlock.trust.attestation import trust_current

        trust_current(cfg)
        self.gate = Gate.open(home.path)
        self.gate.adopt_trust()
        self.issuer = CapabilityIssuer(keys.private_raw(home.private_key("biscuit-root")))
        self.tokens: list[str] = []
        self.running: list[str] = []
        self.live: list[str] = []

    def _token(self, principal: str) -> str:
        from datetime import UTC, datetime, timedelta

        tok = self.issuer.issue(
            principal=principal,
            rights=[Right.parse("tool.call:Tool::*")],
            expires_at=datetime.now(UTC) + timedelta(minutes=10),
        )
        self.tokens.append(tok)
        return tok

    @rule(principal=PRINCIPALS, tool=st.sampled_from(["web_search", "delete_database", "x"]))
    def decide(self, principal: str, tool: str) -> None:
        d = self.gate.decide(tool_request(self._token(principal), tool, principal=principal))
        if d.allowed:
            self.live.append(d.request_id)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def child(self, data: st.DataObject) -> None:
        parent = data.draw(st.sampled_from(self.live))
        self.gate.decide(tool_request(self._token(SUMMARIZER), principal=SUMMARIZER, parent=parent))

    @rule()
    def start(self) -> None:
        d, req = self.gate.admit(tool_request(self._token(RESEARCHER)), start={"kind": "test"})
        if d.allowed and req is not None:
            self.running.append(req.id)
            self.live.append(req.id)

    @precondition(lambda self: self.running)
    @rule(data=st.data(), ended=st.booleans())
    def finish(self, data: st.DataObject, ended: bool) -> None:
        from interlock.core.model import RecordType

        exec_id = data.draw(st.sampled_from(self.running))
        self.running.remove(exec_id)
        kind = RecordType.EXEC_END if ended else RecordType.EXEC_TERMINATED
        self.gate.record_execution(kind, exec_id, {"exit_status": 0})

    @precondition(lambda self: self.tokens)
    @rule(data=st.data())
    def revoke(self, data: st.DataObject) -> None:
        tok = data.draw(st.sampled_from(self.tokens))
        self.gate.revoke(tuple(revocation_ids(tok)), reason="test")

    @rule(principal=PRINCIPALS, on=st.booleans())
    def quarantine(self, principal: str, on: bool) -> None:
        self.gate.quarantine(principal, "test", on=on)

    @rule(on=st.booleans())
    def kill_switch(self, on: bool) -> None:
        self.gate.kill_switch(on, "test")

    @rule(n=st.integers(0, 2))
    def approvers(self, n: int) -> None:
        found = [keys.public_raw(Ed25519PrivateKey.generate()).hex() for _ in range(n)]
        self.gate.record_trust({"approvals.keys": sorted(found)})

    @invariant()
    def state_is_the_projection_of_the_log(self) -> None:
        led = self.gate.ledger
        rebuilt = rebuild(
            led, node_public=self.gate._node_public, root_public=self.gate._root_public
        )
        assert first_difference(led.dump_state(), rebuilt.rows()) is None
        assert self.gate.corrupt is None

    def teardown(self) -> None:
        self.gate.close()
        shutil.rmtree(self.folder)


GateMachine.TestCase.settings = settings(
    max_examples=8, stateful_step_count=20, deadline=None, suppress_health_check=list(HealthCheck)
)
test_gate_state_is_always_the_projection_of_its_log = GateMachine.TestCase


@given(
    when=st.datetimes(
        min_value=datetime(1971, 1, 1),  # noqa: DTZ001 - made aware below
        max_value=datetime(2200, 1, 1),  # noqa: DTZ001
    )
)
def test_the_fast_timestamp_parse_equals_the_reference(when: datetime) -> None:
    from interlock.core.model import format_time
    from interlock.ledger.projection import _ts_fast, ts_micros

    text = format_time(when.replace(tzinfo=UTC))
    assert _ts_fast(text) == ts_micros(text)
    assert _ts_fast(text[:19] + "Z") == ts_micros(text[:19] + "Z")


# -- state checkpoints (issue 9: a start-up check that costs the suffix) --------------------------


def _checkpoint(led: SqliteLedger, vkey: str, p: Projection, n: int) -> None:
    """Vouch for the log and the state as they are, the way a gate does after a full check."""
    full = check_log(led, vkey, _notes(led), node_public=NODE_PUBLIC, root_public=None)
    assert first_difference(full.stored, full.projection.rows()) is None
    body = {"type": "governance", "event": STATE_CHECKED_EVENT, "id": "s", "ts": _ts(n)}
    rec = sign_governance({**body, **checkpoint_fields(full)}, NODE)
    (res,) = led.append(
        [
            Append(
                record=canonical_bytes(rec),
                state=delta_of(rec, node_public=NODE_PUBLIC, root_public=None),
            )
        ]
    )
    p.apply(res.index, leaf_hash(canonical_bytes(rec)), rec, node_public=NODE_PUBLIC)
    led.forget_undo(full.projection.size)


def _notes(led: SqliteLedger) -> list[str]:
    cps = led.checkpoints()
    return [cps[0].note, cps[-1].note] if cps else []


def _quick(led: SqliteLedger, vkey: str) -> Any:
    return check_since_checkpoint(led, vkey, _notes(led), node_public=NODE_PUBLIC, root_public=None)


def _history(
    led: SqliteLedger, vkey: str, batches: list[list[dict[str, Any]]], at: int
) -> Projection:
    """Append ``batches``, with a state checkpoint after batch ``at``; return the fold."""
    p = Projection()
    for i, batch in enumerate(batches):
        appends = [
            Append(
                record=canonical_bytes(r),
                state=delta_of(r, node_public=NODE_PUBLIC, root_public=None),
            )
            for r in batch
        ]
        for res, r in zip(led.append(appends), batch, strict=True):
            p.apply(res.index, leaf_hash(canonical_bytes(r)), r, node_public=NODE_PUBLIC)
        if i == at:
            _checkpoint(led, vkey, p, i)
    led.checkpoint()
    return p


HISTORY = st.lists(st.lists(records(), min_size=1, max_size=6), min_size=2, max_size=8)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
@settings(max_examples=60, deadline=None)
@given(batches=HISTORY, data=st.data())
def test_a_state_checkpoint_vouches_for_any_untampered_history(
    kind: str, batches: list[list[dict[str, Any]]], data: st.DataObject
) -> None:
    signer = NoteSigner("interlock.test/p", Ed25519PrivateKey.generate())
    with _store(kind, signer) as led:
        at = data.draw(st.integers(0, len(batches) - 1))
        p = _history(led, signer.vkey, batches, at)
        assert first_difference(led.dump_state(), p.rows()) is None
        quick = _quick(led, signer.vkey)
        assert quick.size == led.size() == p.size
        last = p.settings.get("last_ts")
        assert quick.last_ts == (None if last is None else int(last[0]))


#: the columns of each state table an attacker may rewrite
_TAMPERABLE = {
    "executions": ["idx", "effect", "status", "status_idx", "parent", "depth", "principal"],
    "revocations": ["idx"],
    "quarantines": ["active", "idx"],
    "restrictions": ["active", "idx", "boundary"],
    "state": ["v", "idx"],
}


@settings(max_examples=150, deadline=None)
@given(batches=HISTORY, data=st.data())
def test_a_state_checkpoint_never_vouches_for_an_edited_state_table(
    batches: list[list[dict[str, Any]]], data: st.DataObject
) -> None:
    """Any one edit of the stored state — a column rewritten, a row deleted or added,
    anywhere, before or after the checkpoint — and the checkpoint no longer vouches."""
    folder = Path(tempfile.mkdtemp())
    signer = NoteSigner("interlock.test/p", Ed25519PrivateKey.generate())
    led = SqliteLedger(folder / "l.db", signer=signer, create=True)
    try:
        _history(led, signer.vkey, batches, data.draw(st.integers(0, len(batches) - 1)))
        before = led.dump_state()
        conn = sqlite3.connect(folder / "l.db", isolation_level=None)
        try:
            filled = [
                t for t in sorted(_TAMPERABLE) if conn.execute(f"SELECT 1 FROM {t}").fetchone()
            ]
            table = data.draw(st.sampled_from(filled))
            rowids = [r[0] for r in conn.execute(f"SELECT rowid FROM {table}")]
            rowid = data.draw(st.sampled_from(rowids))
            how = data.draw(st.sampled_from(["update", "delete", "insert"]))
            if how == "insert":  # a copy of a row under a new key
                fresh = list(
                    conn.execute(f"SELECT * FROM {table} WHERE rowid = ?", (rowid,)).fetchone()
                )
                fresh[0] = "forged-" + str(fresh[0])
                marks = ", ".join("?" * len(fresh))
                conn.execute(f"INSERT INTO {table} VALUES ({marks})", fresh)
            elif how == "delete":
                conn.execute(f"DELETE FROM {table} WHERE rowid = ?", (rowid,))
            else:
                column = data.draw(st.sampled_from(_TAMPERABLE[table]))
                value = data.draw(st.sampled_from([0, 1, 10**6, "allowed", "running", "x", None]))
                try:
                    conn.execute(f"UPDATE {table} SET {column} = ? WHERE rowid = ?", (value, rowid))
                except sqlite3.IntegrityError:
                    return  # NOT NULL: the database refuses the edit itself
        finally:
            conn.close()
        if led.dump_state() == before:
            return  # the edit changed nothing
        event(f"{how} {table}")
        with pytest.raises(Unvouched):
            _quick(led, signer.vkey)
    finally:
        led.close()
        shutil.rmtree(folder)
