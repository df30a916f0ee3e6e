"""Trust settings as governance events on the log: changed only by a record signed with the
home's root key, never by editing a text file (DESIGN I8).

    >>> from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    >>> root = Ed25519PrivateKey.generate()
    >>> rec = trust_record("attestation.enforce", True, root, ts="2026-01-01T00:00:00.000000Z",
    ...                    record_id="0190d1b4-0000-7000-8000-000000000000")
    >>> rec["event"], rec["setting"], rec["value"]
    ('trust.changed', 'attestation.enforce', True)

The settings that decide what is trusted — the policy, approval and break-glass keys, whether
attestation is enforced and which platforms are trusted, the durability mode — live on the log
as ``trust.changed`` records. ``interlock.toml`` still shows them, for people to read, but a
gate compares the two and denies everything (``ENVIRONMENT_UNTRUSTED``, naming the setting)
when they disagree: the switch no longer sits inside the file it would switch off.
``interlock trust set`` changes a setting (log first, then the file); ``interlock trust adopt``
records what the file says, for a home made before settings moved to the log.
"""

from __future__ import annotations

import json
import logging
import re
import tomllib
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from interlock.core.canonical import canonical_bytes
from interlock.core.model import (
    RECORD_VERSION,
    ActionRequest,
    RecordType,
    format_time,
    is_spiffe_id,
    is_under,
)
from interlock.errors import ClockBehind, ConfigError, Error, UsageError, error_detail
from interlock.home import CONFIG_NAME, Config, Home
from interlock.intake import new_request_id
from interlock.ledger.projection import TRUST_EVENT, TRUST_SETTINGS, delta_of
from interlock.ledger.protocols import Append, Store
from interlock.records import sign_governance
from interlock.trust import keys
from interlock.trust.files import replace_text

if TYPE_CHECKING:
    from interlock.engine import GateCore as Gate
    from interlock.pipeline import Verdict

_log = logging.getLogger("interlock")

__all__ = [
    "adopt_changes",
    "config_settings",
    "genesis",
    "log_settings",
    "mismatches",
    "parse_setting",
    "record_trust",
    "trust_appends",
    "trust_record",
    "write_setting",
]


def config_settings(config: Config) -> dict[str, Any]:
    """The trust settings ``interlock.toml`` shows, by name (JSON values)."""
    return {
        "policy.trusted_keys": sorted(config.trusted_policy_keys),
        "approvals.keys": sorted(config.approver_keys),
        "break_glass.keys": sorted(config.break_glass_keys),
        "attestation.enforce": config.attestation_enforce,
        "attestation.trusted": sorted(config.trusted_platforms),
        "log.durability": config.durability,
    }


def log_settings(state: Mapping[str, tuple[str, int]]) -> dict[str, Any]:
    """The trust settings on the log, by name, from the projection's settings (a setting
    never recorded is absent)."""
    out: dict[str, Any] = {}
    for name in TRUST_SETTINGS:
        found = state.get(f"trust.{name}")
        if found is not None:
            out[name] = json.loads(found[0])
    return out


def mismatches(config: Config, on_log: Mapping[str, Any]) -> list[str]:
    """Each trust setting where ``interlock.toml`` and the log disagree, as a sentence that
    names it and says what to do; empty when they agree."""
    found = []
    shown = config_settings(config)
    for name, toml_key in TRUST_SETTINGS.items():
        if name not in on_log:
            found.append(
                f"trust setting {toml_key} is not on the log: record it with `interlock trust"
                " adopt` (signed with the home's root key)"
            )
        elif _normal(on_log[name]) != _normal(shown[name]):
            found.append(
                f"trust setting {toml_key} in interlock.toml ({_short(shown[name])}) disagrees"
                f" with the log ({_short(on_log[name])}): trust settings change only with"
                " `interlock trust set`"
            )
    return found


def _normal(value: Any) -> Any:
    return sorted(value) if isinstance(value, list) else value


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def parse_setting(name: str, values: list[str]) -> Any:
    """The JSON value of trust setting ``name`` from command-line words.

    Raises:
        UsageError: unknown setting, or a value of the wrong form.
    """
    if name not in TRUST_SETTINGS:
        raise UsageError(f"unknown trust setting {name!r}; one of: {', '.join(TRUST_SETTINGS)}")
    if name == "attestation.enforce":
        if values not in (["true"], ["false"]):
            raise UsageError("attestation.enforce takes one value: true or false")
        return values == ["true"]
    if name == "log.durability":
        if values not in (["full"], ["process"]):
            raise UsageError("log.durability takes one value: full or process")
        return values[0]
    for v in values:
        if name == "attestation.trusted":
            ok = len(v) == 64 and all(c in "0123456789abcdef" for c in v)
        else:
            try:
                keys.public_from_raw(bytes.fromhex(v))
                ok = v == v.lower()
            except (ValueError, Error):
                ok = False
        if not ok:
            raise UsageError(f"{name}: {v!r} is not a lowercase hex {_form(name)}")
    return sorted(set(values))


def _form(name: str) -> str:
    return "platform digest (64 characters)" if name == "attestation.trusted" else "Ed25519 key"


def trust_record(
    name: str, value: Any, root: Ed25519PrivateKey, *, ts: str, record_id: str
) -> dict[str, Any]:
    """A ``trust.changed`` governance record setting ``name`` to ``value``, signed with the
    home's root key over its RFC 8785 bytes (``signer``, ``sig``).

    Raises:
        UsageError: ``name`` is not a trust setting.
    """
    if name not in TRUST_SETTINGS:
        raise UsageError(f"unknown trust setting {name!r}")
    rec: dict[str, Any] = {
        "v": RECORD_VERSION,
        "type": RecordType.GOVERNANCE.value,
        "event": TRUST_EVENT,
        "id": record_id,
        "ts": ts,
        "setting": name,
        "value": value,
        "signer": keys.public_raw(root).hex(),
    }
    rec["sig"] = root.sign(canonical_bytes(rec)).hex()
    return rec


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    return f'"{value}"'


def write_setting(config_path: Path, name: str, value: Any) -> None:
    """Show trust setting ``name`` as ``value`` in ``interlock.toml``: its one line is
    replaced (or added to its section) and every other setting is checked to be unchanged; the
    file is replaced atomically, keeping its mode. The log is the authority: call this after
    the setting was recorded, so a crash in between leaves the two disagreeing (deny), never a
    file ahead of the log.

    Raises:
        ConfigError: the file cannot be edited safely (the message says what to write by hand).
        OSError: it cannot be read or written.
    """
    section, key = TRUST_SETTINGS[name].removeprefix("[").split("] ")
    original = config_path.read_text(encoding="utf-8")
    line = f"{key} = {_toml_value(value)}"
    by_hand = f"{config_path}: cannot edit [{section}] {key} safely; set it by hand to: {line}"
    head = re.search(rf"(?m)^\[{re.escape(section)}\][ \t]*$", original)
    if head is None:
        text = original.rstrip("\n") + f"\n\n[{section}]\n{line}\n"
    else:
        nxt = re.compile(r"(?m)^\[").search(original, head.end())
        end = nxt.start() if nxt else len(original)
        found = re.compile(rf"(?m)^{re.escape(key)}[ \t]*=.*$").search(original, head.end(), end)
        if found is None:
            text = original[: head.end()] + "\n" + line + original[head.end() :]
        else:
            text = original[: found.start()] + line + original[found.end() :]
    try:
        before, after = tomllib.loads(original), tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(by_hand) from exc
    if after.get(section, {}).get(key) != value:
        raise ConfigError(by_hand)
    after[section].pop(key)
    before.get(section, {}).pop(key, None)
    if not before.get(section, True):
        before.pop(section, None)
    if not after[section]:
        after.pop(section)
    if before != after:
        raise ConfigError(by_hand)
    replace_text(config_path, text)


def trust_appends(changes: Mapping[str, Any], root: Ed25519PrivateKey, *, ns: int) -> list[Append]:
    """One ``trust.changed`` append per setting in ``changes`` (name -> JSON value), signed
    with ``root`` and timestamped ``ns`` (epoch nanoseconds), each with its state change.

    Raises:
        UsageError: an unknown setting.
    """
    when = format_time(datetime.fromtimestamp(ns // 1000 / 1e6, UTC))
    root_public = keys.public_raw(root)
    out = []
    for i, (name, value) in enumerate(sorted(changes.items())):
        rec = trust_record(name, value, root, ts=when, record_id=new_request_id(ns + i))
        out.append(
            Append(
                record=canonical_bytes(rec),
                state=delta_of(rec, node_public=None, root_public=root_public),
            )
        )
    return out


def record_trust(store: Store, home: Home, changes: Mapping[str, Any], *, ns: int) -> list[int]:
    """Change trust settings: record each (name -> JSON value) on ``store`` as a
    ``trust.changed`` record signed with ``home``'s root key, then show it in
    ``interlock.toml`` (log first: a failure in between leaves the two disagreeing, which
    denies). Returns the records' indices.

    Raises:
        UsageError: an unknown setting.
        ClockBehind: ``ns`` is behind the last timestamp on the log.
        KeyFileError: the root key is missing or unsafe.
        LedgerUnavailable: nothing was recorded.
        ConfigError: recorded, but ``interlock.toml`` could not be edited (the message says
            what to write by hand).
    """
    last = store.settings().get("last_ts")
    if last is not None and ns // 1000 < int(last[0]):
        raise ClockBehind("the clock is behind the last timestamp on the log: fix the clock")
    appends = trust_appends(changes, home.private_key("biscuit-root"), ns=ns)
    results = store.append(appends)
    for name, value in changes.items():
        write_setting(home.path / CONFIG_NAME, name, value)
    return [r.index for r in results]


def adopt_changes(store: Store, home: Home) -> dict[str, Any]:
    """The trust settings where ``home``'s ``interlock.toml`` (re-read now) differs from the
    log: what ``interlock trust adopt`` records.

    Raises:
        ConfigError: the configuration cannot be read. LedgerUnavailable: nor the log.
    """
    on_log = log_settings(store.settings())
    shown = config_settings(Home.load(home.path).config)
    return {n: v for n, v in shown.items() if on_log.get(n) != v}


def genesis(home: Home, *, ns: int) -> None:
    """Create ``home``'s ledger (``interlock init`` only: a gate never creates one) and record
    the trust settings of its configuration as its first entries, signed with the root key.

    Raises:
        LedgerError: the ledger cannot be created or written.
        KeyFileError: a key is missing or unsafe.
    """
    from interlock.ledger.note import NoteSigner
    from interlock.ledger.storage import open_store

    signer = NoteSigner(home.config.origin, home.private_key("log"))
    led = open_store(
        home.ledger_location, signer=signer, durability=home.config.durability, create=True
    )
    try:
        led.append(
            trust_appends(config_settings(home.config), home.private_key("biscuit-root"), ns=ns)
        )
    finally:
        led.close()


# -- governance actions of a gate (each a node-signed ledger record) --------------------


def _load_trust(gate: Gate) -> None:
    """Take the trust settings from the log; note where ``interlock.toml`` disagrees
    (ENVIRONMENT_UNTRUSTED until it agrees again). Never raises."""
    try:
        on_log = log_settings(gate.ledger.settings())
        problems = mismatches(gate.home.config, on_log)
    except Exception as exc:  # noqa: BLE001 - unreadable trust settings: trust nothing
        on_log, problems = {}, [f"trust settings unreadable: {error_detail(exc)}"]
    problem = "; ".join(problems) if problems else None
    with gate._lock:
        if on_log == gate._trust and problem == gate._trust_problem:
            return
        gate._trust = on_log
        gate._trust_problem = problem
        gate._approvers = frozenset(bytes.fromhex(k) for k in on_log.get("approvals.keys", []))
        gate._break_glass_keys = frozenset(
            bytes.fromhex(k) for k in on_log.get("break_glass.keys", [])
        )
    gate._rebuild_snapshot(force_trust=True)


def gate_record_trust(gate: Gate, changes: Mapping[str, Any]) -> list[int]:
    """Change trust settings (:func:`interlock.governance.record_trust`): on the log,
    signed with the root key, then in ``interlock.toml``. Effective for this gate at once;
    returns the records' indices.

    Raises: as :func:`interlock.governance.record_trust`.
    """
    try:
        return record_trust(gate.ledger, gate.home, changes, ns=gate._clock_ns())
    finally:
        gate.home = Home.load(gate.home.path)
        _load_trust(gate)


def adopt_trust(gate: Gate) -> dict[str, Any]:
    """Record every trust setting where ``interlock.toml`` (re-read now) differs from the
    log: the operator's deliberate act after an intended edit (``interlock trust adopt``).
    Returns what was recorded.

    Raises: as :func:`interlock.governance.record_trust`.
    """
    changes = adopt_changes(gate.ledger, gate.home)
    if changes:
        gate_record_trust(gate, changes)
    return changes


def trusted_policy_keys(gate: Gate) -> list[Any]:
    """The policy keys trusted by the log's ``policy.trusted_keys``."""
    with gate._lock:
        found = list(gate._trust.get("policy.trusted_keys", []))
    return [keys.public_from_raw(bytes.fromhex(k)) for k in found]


def revoke(gate: Gate, revocation_ids: tuple[str, ...], *, reason: str = "") -> int:
    """Revoke capability revocation ids; effective for this gate at once. Recorded as a
    node-signed ``capability.revoked`` governance record; returns its index.

    Raises:
        KeyFileError: the node key is missing or unsafe.
        LedgerUnavailable: if the governance record could not be committed.
    """
    return _governance(
        gate,
        "capability.revoked",
        {"revocation_ids": list(revocation_ids), "reason": reason},
    )


def _governance(gate: Gate, event: str, fields: Mapping[str, Any]) -> int:
    """Sign a governance record with the node key and commit it with the state change it
    makes (:func:`interlock.ledger.projection.delta_of`, one transaction); effective for
    this gate at once.

    Raises:
        LedgerUnavailable: not committed. ClockBehind: the clock is behind the log."""
    floor = gate._time_floor
    ns = gate._clock_ns()
    rec = {
        "v": RECORD_VERSION,
        "type": RecordType.GOVERNANCE.value,
        "event": event,
        "id": new_request_id(ns),
        "ts": format_time(datetime.fromtimestamp(ns / 1e9, UTC)),
        **dict(fields),
    }
    gate._check_clock(ns, floor)
    signed = sign_governance(rec, gate.home.private_key("node"))
    (res,) = gate.ledger.append(
        [
            Append(
                record=canonical_bytes(signed),
                state=delta_of(signed, node_public=gate._node_public, root_public=None),
            )
        ],
        timeout=gate.ledger_timeout_s,
    )
    gate._rebuild_snapshot(force_trust=True)
    return res.index


def quarantine(gate: Gate, principal: str, reason: str, *, on: bool) -> int:
    """Quarantine (``on=True``) or release a principal: while quarantined, its decisions
    and its running executions are denied PRINCIPAL_QUARANTINED. Recorded as a node-signed
    ``principal.quarantined`` / ``principal.released`` governance record; returns its index.

    Raises:
        UsageError: ``principal`` is not a SPIFFE ID.
        KeyFileError: the node key is missing or unsafe.
        LedgerUnavailable: the record could not be committed (nothing changed).
    """
    if not is_spiffe_id(principal):
        raise UsageError(f"not a SPIFFE ID: {principal!r}")
    event = "principal.quarantined" if on else "principal.released"
    return _governance(
        gate,
        event,
        {"principal": principal, "reason": reason},
    )


def release_restriction(gate: Gate, principal: str, boundary: str, reason: str) -> int:
    """Lift a boundary restriction (``boundary.released``, node-signed); returns its index.

    Raises:
        UsageError: ``principal`` is not a SPIFFE ID.
        LedgerUnavailable: the record could not be committed (nothing changed).
    """
    if not is_spiffe_id(principal):
        raise UsageError(f"not a SPIFFE ID: {principal!r}")
    return _governance(
        gate,
        "boundary.released",
        {"principal": principal, "boundary": boundary, "reason": reason},
    )


def _enforce_boundary(gate: Gate, request: ActionRequest, verdict: Verdict) -> None:
    """Carry out a boundary's ``on_violation`` after its BOUNDARY_VIOLATION deny was
    recorded: restrict the principal, quarantine it (isolate), or record the violation
    (terminate: the offending execution is denied or terminated by its supervisor).
    Never raises: the deny stands whatever happens here."""
    boundary = verdict.boundary
    if boundary is None:
        return
    principal = request.principal
    fields: dict[str, Any] = {
        "principal": principal,
        "boundary": boundary.name,
        "on_violation": boundary.on_violation,
        "request": request.id,
        "reason": f"boundary {boundary.name!r} violated by request {request.id}",
    }
    try:
        if boundary.on_violation == "restrict":
            if any(
                b == boundary.name and is_under(principal, p) for p, b in gate.snapshot.restricted
            ):
                return
            fields["restricted_actions"] = list(boundary.restricted_actions)
            _governance(
                gate,
                "boundary.restricted",
                fields,
            )
        elif boundary.on_violation == "isolate":
            if any(is_under(principal, q) for q in gate.snapshot.quarantined):
                return
            _governance(
                gate,
                "principal.quarantined",
                fields,
            )
        else:
            _governance(gate, "boundary.violated", fields)
    except Exception as exc:  # noqa: BLE001 - the request is denied either way
        _log.error(
            "boundary %r: %s of %s could not be recorded (%s); the request stays denied",
            boundary.name,
            boundary.on_violation,
            principal,
            error_detail(exc),
        )


def kill_switch(gate: Gate, on: bool, reason: str) -> int:
    """Turn the kill switch on (every action denied, every supervised run terminated) or
    off. Recorded as a node-signed ``kill_switch.on`` / ``kill_switch.off`` governance
    record; returns its index.

    Raises:
        KeyFileError: the node key is missing or unsafe.
        LedgerUnavailable: the record could not be committed (nothing changed).
    """
    event = "kill_switch.on" if on else "kill_switch.off"
    return _governance(gate, event, {"reason": reason})
