"""Governance state as a function of the log (DESIGN I8): the log is the source of truth.

    >>> p = Projection()
    >>> rec = {"type": "decision", "id": "r1", "ts": "2026-01-01T00:00:00.000000Z",
    ...        "effect": "allow", "parent": None, "request": {"principal": "spiffe://a.test/x"}}
    >>> p.apply(0, b"\\x00" * 32, rec)
    >>> p.execution("r1").status, p.execution("r1").idx
    ('allowed', 0)

Every change of governance state is a ledger record; :func:`delta_of` says what one record
changes and :class:`Projection` folds those changes in ledger order. Storage keeps the folded
state in tables so the gate reads it quickly — each row naming the ledger index that produced
it — but the tables are a *projection*: :func:`interlock.ledger.fold.rebuild` recomputes them
from the log alone and
:func:`first_difference` names the first stored row that disagrees, with the entry it should
come from. ``interlock ledger verify`` and every gate run that comparison; a difference is
``LEDGER_CORRUPT``.

The gate builds each record's table changes with the same :func:`delta_of` the rebuild uses,
so the two cannot drift apart.

Governance records change state only when they carry a valid signature: the node key for
revocations, quarantines, restrictions and the kill switch; the home's root key for trust
settings (``trust.changed``). A record without one changes nothing, so a row appended to the
database by someone without the keys cannot lift a revocation or add a trusted key.

Nothing here reads storage (:mod:`interlock.ledger.fold` folds stored entries).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from interlock.core.canonical import canonical_bytes
from interlock.errors import VerificationError
from interlock.trust import keys

if TYPE_CHECKING:
    pass

__all__ = [
    "STATUS_FROM",
    "TRUST_SETTINGS",
    "Delta",
    "Execution",
    "Projection",
    "StateRows",
    "delta_of",
    "first_difference",
    "row_key",
    "signed_by",
    "status_set_by",
    "ts_micros",
]

#: the status an execution record sets, and the statuses it may replace: statuses only move
#: forward (allowed -> running -> ended | terminated), so no record can bring a finished
#: execution back to life
STATUS_OF = {"exec.start": "running", "exec.end": "ended", "exec.terminated": "terminated"}
STATUS_FROM: dict[str, tuple[str, ...]] = {
    "running": ("allowed",),
    "ended": ("allowed", "running"),
    "terminated": ("allowed", "running"),
}
QUARANTINE_EVENTS = {"principal.quarantined": True, "principal.released": False}
KILL_SWITCH_EVENTS = {"kill_switch.on": True, "kill_switch.off": False}
RESTRICT_EVENTS = {"boundary.restricted": True, "boundary.released": False}
#: the trust settings the log holds (``interlock trust set``), with the ``interlock.toml`` key
#: each mirrors
TRUST_SETTINGS = {
    "policy.trusted_keys": "[policy] trusted_keys",
    "approvals.keys": "[approvals] keys",
    "break_glass.keys": "[break_glass] keys",
    "attestation.enforce": "[attestation] enforce",
    "attestation.trusted": "[attestation] trusted",
    "log.durability": "[log] durability",
}
TRUST_EVENT = "trust.changed"
STATE_CHECKED_EVENT = "state.checked"


def status_set_by(rec: Mapping[str, Any]) -> str | None:
    """The status an execution record sets: ``exec.start`` running, ``exec.end`` ended,
    ``exec.terminated`` — and an ``exec.verify`` that denies, committed before the supervisor
    signals anything — terminated; None for other records."""
    kind = rec.get("type")
    if kind == "exec.verify":
        return "terminated" if rec.get("effect") == "deny" else None
    return STATUS_OF.get(kind) if isinstance(kind, str) else None


def ts_micros(ts: str) -> int:
    """An RFC 3339 ``...Z`` timestamp as integer microseconds since the epoch.

    Raises:
        ValueError: not an RFC 3339 timestamp with an offset.
    """
    dt = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        raise ValueError(f"timestamp without an offset: {ts!r}")
    return int(dt.timestamp()) * 1_000_000 + dt.microsecond


@dataclass(frozen=True, slots=True, kw_only=True)
class Execution:
    """One decided request: what lineage needs. ``idx`` is its decision's ledger index,
    ``status_idx`` the index of the record that set ``status``."""

    id: str
    idx: int
    leaf_hash: bytes
    effect: str
    status: str
    status_idx: int
    parent: str | None
    depth: int
    principal: str | None

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Execution:
        """From a row as :meth:`row` gives it (storage reads it back this way)."""
        return cls(
            id=row[0],
            idx=row[1],
            leaf_hash=row[2],
            effect=row[3],
            status=row[4],
            status_idx=row[5],
            parent=row[6],
            depth=row[7],
            principal=row[8],
        )

    def row(self) -> tuple[Any, ...]:
        return (
            self.id,
            self.idx,
            self.leaf_hash,
            self.effect,
            self.status,
            self.status_idx,
            self.parent,
            self.depth,
            self.principal,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Delta:
    """What one record changes in the governance state (indices are filled in by the log)."""

    #: a new execution: ``(id, effect, parent, depth, principal)``
    execution: tuple[str, str, str | None, int, str | None] | None = None
    #: ``(execution id, new status)``
    status: tuple[str, str] | None = None
    revoked: tuple[str, ...] = ()
    quarantine: tuple[str, bool] | None = None
    restrict: tuple[str, str, bool] | None = None
    kill_switch: bool | None = None
    #: ``(version, digest)`` of an activated policy bundle
    policy: tuple[int, str] | None = None
    attestation: str | None = None
    #: ``(trust setting, canonical JSON value)``
    setting: tuple[str, str] | None = None
    #: the log size a node-signed state checkpoint vouches for (``state.checked``)
    checked: int | None = None
    ts: int | None = None

    @property
    def trust_event(self) -> bool:
        """Whether the record counts toward the trust version besides revocations (replay
        counts the same records)."""
        return (
            self.quarantine is not None or self.restrict is not None or self.kill_switch is not None
        )


NO_CHANGE = Delta()


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise VerificationError("record field is not a string")
    return value


def delta_of(
    rec: Mapping[str, Any],
    *,
    node_public: bytes | None,
    root_public: bytes | None,
) -> Delta:
    """The state change one parsed record makes.

    Governance records count only with a valid signature (node key; root key for trust
    settings); one without changes nothing but its timestamp. Pure.

    Raises:
        VerificationError: the record is not shaped as its type requires.
    """
    kind = rec.get("type")
    ts_text = rec.get("ts")
    ts = _ts_fast(ts_text) if isinstance(ts_text, str) else None
    if kind == "decision":
        request = rec.get("request")
        # ``type(...) is dict or`` only spares the ABC check for the gate's own records
        principal = (
            request.get("principal")
            if type(request) is dict or isinstance(request, Mapping)
            else None
        )
        lineage = rec.get("lineage")
        depth = (
            lineage.get("depth", 0)
            if lineage is not None and (type(lineage) is dict or isinstance(lineage, Mapping))
            else 0
        )
        parent = rec.get("parent")
        effect = _str(rec.get("effect"))
        if not isinstance(depth, int) or (parent is not None and not isinstance(parent, str)):
            raise VerificationError("decision record has a malformed lineage")
        return Delta(
            execution=(
                _str(rec.get("id")),
                effect,
                parent,
                depth,
                principal if isinstance(principal, str) else None,
            ),
            ts=ts,
        )
    status = status_set_by(rec)
    if status is not None:
        return Delta(status=(_str(rec.get("id")), status), ts=ts)
    if kind != "governance":
        return Delta(ts=ts)
    event = rec.get("event")
    if event == "policy.loaded":
        version, pd = rec.get("policy_version"), rec.get("policy_digest")
        if not isinstance(version, int) or isinstance(version, bool) or not isinstance(pd, str):
            raise VerificationError("policy.loaded record is malformed")
        return Delta(policy=(version, pd), ts=ts)
    if event == TRUST_EVENT:
        if not signed_by(rec, root_public):
            return Delta(ts=ts)
        name = rec.get("setting")
        if name not in TRUST_SETTINGS or "value" not in rec:
            raise VerificationError("trust.changed record names no known setting")
        return Delta(setting=(str(name), canonical_bytes(rec["value"]).decode()), ts=ts)
    if not signed_by(rec, node_public):
        return Delta(ts=ts)
    if event == "capability.revoked":
        ids = rec.get("revocation_ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise VerificationError("capability.revoked record is malformed")
        return Delta(revoked=tuple(ids), ts=ts)
    if event in QUARANTINE_EVENTS:
        return Delta(quarantine=(_str(rec.get("principal")), QUARANTINE_EVENTS[event]), ts=ts)
    if event in RESTRICT_EVENTS:
        return Delta(
            restrict=(
                _str(rec.get("principal")),
                _str(rec.get("boundary")),
                RESTRICT_EVENTS[event],
            ),
            ts=ts,
        )
    if event in KILL_SWITCH_EVENTS:
        return Delta(kill_switch=KILL_SWITCH_EVENTS[event], ts=ts)
    if event == STATE_CHECKED_EVENT:
        size = rec.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise VerificationError("state.checked record is malformed")
        return Delta(checked=size, ts=ts)
    if event == "node.attested":
        trusted, problem = rec.get("trusted"), rec.get("problem")
        attested = bool(trusted) and problem is None
        key = f"{rec.get('digest')}:{int(attested)}:{int(problem is not None)}"
        return Delta(attestation=key, ts=ts)
    return Delta(ts=ts)


def signed_by(rec: Mapping[str, Any], public: bytes | None) -> bool:
    """Whether ``rec`` carries ``public``'s Ed25519 signature over its other fields."""
    sig, signer = rec.get("sig"), rec.get("signer")
    if public is None or not isinstance(sig, str) or signer != public.hex():
        return False
    try:
        raw = bytes.fromhex(sig)
        body = {k: v for k, v in rec.items() if k != "sig"}
        keys.verify_signature(keys.public_from_raw(public), raw, canonical_bytes(body))
    except (ValueError, VerificationError, TypeError):
        return False
    return True


@dataclass(frozen=True, slots=True, kw_only=True)
class StateRows:
    """A whole projection, table by table, each a dict from a row's key to the row (a tuple
    that ends with the ledger index that produced it; for executions, ``Execution.row()``):
    what storage dumps and what a rebuild produces. Equal dicts mean equal tables; comparing
    them costs no sort."""

    executions: dict[str, tuple[Any, ...]]
    revocations: dict[str, tuple[Any, ...]]
    quarantines: dict[str, tuple[Any, ...]]
    restrictions: dict[tuple[str, str], tuple[Any, ...]]
    settings: dict[str, tuple[Any, ...]]


def row_key(table: str, row: Sequence[Any]) -> Any:
    """The key of a state row as :class:`StateRows` holds it: its first column, or for
    restrictions its first two as a tuple."""
    return (row[0], row[1]) if table == "restrictions" else row[0]


#: column positions in an execution row (``Execution.row()``)
_IDX, _LEAF, _EFFECT, _STATUS, _STATUS_IDX, _PARENT, _DEPTH, _PRINCIPAL = range(1, 9)


@dataclass(slots=True)
class Projection:
    """The governance state after folding records ``0..size-1``. Executions are kept as
    rows (``Execution.row()`` tuples): a rebuild makes a million of them."""

    size: int = 0
    executions: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    revocations: dict[str, int] = field(default_factory=dict)
    #: principal -> (1 quarantined | 0 released, index)
    quarantines: dict[str, tuple[int, int]] = field(default_factory=dict)
    restrictions: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    #: name -> (JSON text, index): ``kill_switch``, ``trust_events``, ``policy_version`` (the
    #: floor: the highest version ever activated), ``policy_digest``, ``attestation``,
    #: ``last_ts`` (the highest timestamp on the log, microseconds) and ``trust.<setting>``
    settings: dict[str, tuple[str, int]] = field(default_factory=dict)
    _last_ts: int = -1

    def execution(self, exec_id: str) -> Execution | None:
        row = self.executions.get(exec_id)
        return None if row is None else Execution.from_row(row)

    def apply(
        self,
        idx: int,
        leaf_hash: bytes,
        rec: Mapping[str, Any],
        *,
        node_public: bytes | None = None,
        root_public: bytes | None = None,
    ) -> None:
        """Fold the record at ``idx``.

        Raises:
            VerificationError: the record is malformed, or not at the next index.
        """
        self.apply_delta(
            idx, leaf_hash, delta_of(rec, node_public=node_public, root_public=root_public)
        )

    def apply_delta(self, idx: int, leaf_hash: bytes, d: Delta) -> None:
        """Fold one record's change (see :func:`delta_of`).

        Raises:
            VerificationError: ``idx`` is not the next index.
        """
        if idx != self.size:
            raise VerificationError("records are not contiguous", index=idx)
        self.size = idx + 1
        # one record is a decision, an execution record or a governance record
        if d.execution is not None:
            eid, effect, parent, depth, principal = d.execution
            if eid not in self.executions:  # the first decision for an id is the one
                status = "allowed" if effect == "allow" else "denied"
                row = (eid, idx, leaf_hash, effect, status, idx, parent, depth, principal)
                self.executions[eid] = row
        elif d.status is not None:
            eid, status = d.status
            old = self.executions.get(eid)
            if old is not None and old[_STATUS] in STATUS_FROM[status]:
                self.executions[eid] = (*old[:_STATUS], status, idx, *old[_PARENT:])
        else:
            self._apply_governance(idx, d)
        if d.ts is not None and d.ts > self._last_ts:
            self._last_ts = d.ts
            self.settings["last_ts"] = (str(d.ts), idx)

    def _apply_governance(self, idx: int, d: Delta) -> None:
        s = self.settings
        for rid in d.revoked:
            self.revocations.setdefault(rid, idx)
        if d.quarantine is not None:
            principal, on = d.quarantine
            self.quarantines[principal] = (int(on), idx)
        if d.restrict is not None:
            principal, boundary, on = d.restrict
            self.restrictions[(principal, boundary)] = (int(on), idx)
        if d.kill_switch is not None:
            s["kill_switch"] = (json.dumps(d.kill_switch), idx)
        if d.trust_event:
            count = int(s["trust_events"][0]) if "trust_events" in s else 0
            s["trust_events"] = (str(count + 1), idx)
        if d.policy is not None:
            version, pd = d.policy
            floor = int(s["policy_version"][0]) if "policy_version" in s else 0
            if version >= floor:
                s["policy_version"] = (str(version), idx)
                s["policy_digest"] = (json.dumps(pd), idx)
        if d.attestation is not None:
            s["attestation"] = (json.dumps(d.attestation), idx)
        if d.setting is not None:
            name, value = d.setting
            s[f"trust.{name}"] = (value, idx)
        if d.checked is not None:
            s["state_checked"] = (str(d.checked), idx)

    def seed(self, table: str, key: Any, row: tuple[Any, ...]) -> None:
        """Start from a known row (a state checkpoint's recovered state): ``table`` as
        :class:`StateRows` names it, ``row`` as :meth:`rows` gives it."""
        if table == "executions":
            self.executions[key] = row
        elif table == "revocations":
            self.revocations[key] = row[1]
        elif table == "quarantines":
            self.quarantines[key] = (row[1], row[2])
        elif table == "restrictions":
            self.restrictions[key] = (row[2], row[3])
        else:
            self.settings[key] = (row[1], row[2])
            if key == "last_ts":
                self._last_ts = int(row[1])

    def rows(self) -> StateRows:
        return StateRows(
            executions=self.executions,
            revocations={r: (r, i) for r, i in self.revocations.items()},
            quarantines={p: (p, on, i) for p, (on, i) in self.quarantines.items()},
            restrictions={k: (*k, on, i) for k, (on, i) in self.restrictions.items()},
            settings={k: (k, v, i) for k, (v, i) in self.settings.items()},
        )


_TABLES = ("executions", "revocations", "quarantines", "restrictions", "settings")


def first_difference(stored: StateRows, rebuilt: StateRows) -> VerificationError | None:
    """The first stored row that differs from the rebuilt projection, as the error to raise
    (its evidence names the table, the row key and the ledger ``index`` the row should come
    from, or that produced the stored row), or None when they are equal."""
    for table in _TABLES:
        have: dict[Any, tuple[Any, ...]] = getattr(stored, table)
        want: dict[Any, tuple[Any, ...]] = getattr(rebuilt, table)
        if have == want:
            continue
        differing = [k for k in have.keys() | want.keys() if have.get(k) != want.get(k)]
        key = min(differing, key=lambda k: (_index(table, want.get(k) or have[k]), repr(k)))
        h, w = have.get(key), want.get(key)
        if w is None:
            return VerificationError(
                f"state table {table} has a row the log does not produce: {_show(h or ())}",
                table=table,
                row=_show_key(key),
                index=_index(table, h or (-1,)),
            )
        what = "is missing" if h is None else f"is {_show(h)}"
        return VerificationError(
            f"state table {table} row {_show_key(key)} {what}; the log says {_show(w)}",
            table=table,
            row=_show_key(key),
            index=_index(table, w),
        )
    return None


def _index(table: str, row: tuple[Any, ...]) -> int:
    """The ledger index a row names (for executions: the record that set its status)."""
    value = row[_STATUS_IDX] if table == "executions" else row[-1]
    return value if isinstance(value, int) else -1


def _show_key(key: Any) -> str:
    return "/".join(key) if isinstance(key, tuple) else str(key)


def _show(row: tuple[Any, ...]) -> str:
    return "(" + ", ".join(v.hex()[:16] if isinstance(v, bytes) else repr(v) for v in row) + ")"


#: the last distinct second parsed, as one tuple: replaced whole, so threads never see a
#: second's text beside another second's value
_last_second: tuple[str, int] = ("", 0)


def _ts_fast(ts: str) -> int:
    """:func:`ts_micros`, quicker for the gate's own fixed format (``...SS.ffffffZ``): the
    seconds are parsed once per distinct second."""
    global _last_second
    if len(ts) == 27 and ts[19] == "." and ts[26] == "Z" and ts[20:26].isdigit():
        head = ts[:19]
        seen, micros = _last_second
        if seen != head:
            micros = ts_micros(head + "Z")
            _last_second = (head, micros)
        return micros + int(ts[20:26])
    return ts_micros(ts)
