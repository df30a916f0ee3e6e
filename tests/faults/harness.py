"""The fault matrix (issue 16): what each fault test injected, what it attempted under the
fault, and what came back — collected here, written to ``FAULTS.md`` and ``faults.json``.

A fault test injects one fault into a real home from outside the code (files, locks, signals,
processes, the database, resource limits), attempts real actions under it and calls
:func:`record` with them::

    attempts = [decide_cli(home, request), exec_cli(home, token, tmp_path / "ran")]
    record("ledger.locked", "ledger", "another process holds ...", ("LEDGER_UNAVAILABLE",),
           attempts, recorded=on_ledger(home, attempts, why_not="the ledger is locked"))

:func:`record` adds the row first (a failing row is in the matrix too) and then asserts what
every row must show: no allow, nothing executed, only the expected codes, no traceback.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import RESEARCHER

EXE = [sys.executable, "-m", "interlock.cli"]
ROOT = Path(__file__).resolve().parents[2]
#: `interlock exec` fast enough for a test: re-verify every 200 ms, SIGKILL after 0.5 s
FAST = ["--interval", "0.2s", "--grace", "0.5s"]
MIN_CLASSES = 25

#: `interlock exec` on stderr: "denied CODE: ..." or "not started CODE: ..." (exit 126)
_DENIED = re.compile(r"(?:denied|not started) ([A-Z_]+)")
_REQUEST = re.compile(r"\(request ([0-9a-f-]{36})\)")


@dataclass
class Attempt:
    """One real action attempted under a fault and what its caller was told.

    ``effect``: ``allow``, ``deny`` or ``none`` (no answer at all: the process was killed or
    gave up); ``executed``: the action's effect is visible (the marker file exists, the
    governed body ran)."""

    action: str
    effect: str
    codes: tuple[str, ...] = ()
    request_id: str | None = None
    index: int | None = None
    executed: bool = False
    traceback: bool = False
    detail: str = ""


@dataclass
class Row:
    fault: str
    group: str
    injected: str
    expected: tuple[str, ...]
    observed: tuple[str, ...]
    attempts: list[str]
    allowed: int
    executed: bool
    recorded: str
    as_expected: bool
    note: str = ""


@dataclass
class CrashTrials:
    """Totals of the kill -9 trials (tests/faults/test_crash_trials.py), by kind."""

    kinds: dict[str, dict[str, int]] = field(default_factory=dict)
    #: what went wrong in a trial (a failed verification's output), for FAULTS.md
    notes: list[str] = field(default_factory=list)

    def add(self, kind: str, **counts: int) -> None:
        into = self.kinds.setdefault(kind, {})
        for k, v in counts.items():
            into[k] = into.get(k, 0) + v


ROWS: list[Row] = []
CRASH = CrashTrials()


# -- attempts ---------------------------------------------------------------------------------


def env_for(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTERLOCK_")}
    env["INTERLOCK_HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    env.update(extra)
    return env


def cli(
    home: Path,
    *args: str,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 90,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """``interlock ARGS`` on ``home`` in a process of its own."""
    return subprocess.run(
        [*EXE, *args],
        input=stdin,
        capture_output=True,
        env=env or env_for(home),
        timeout=timeout,
        check=False,
        preexec_fn=preexec_fn,
    )


def decide_cli(
    home: Path,
    request: Mapping[str, Any] | bytes,
    *,
    preexec_fn: Callable[[], None] | None = None,
    label: str = "decide (CLI)",
) -> Attempt:
    """``interlock decide --json`` with ``request`` on stdin (bytes are sent as they are)."""
    raw = request if isinstance(request, bytes) else json.dumps(request).encode()
    r = cli(home, "decide", "--json", stdin=raw, preexec_fn=preexec_fn)
    return _cli_answer(label, r)


def _cli_answer(label: str, r: subprocess.CompletedProcess[bytes]) -> Attempt:
    err = r.stderr.decode(errors="replace")
    try:
        out = json.loads(r.stdout)
    except ValueError:
        codes = tuple(_DENIED.findall(err)) or tuple(
            c for c in re.findall(r"\b([A-Z]+_[A-Z_]+)\b", err) if c in _codes()
        )
        return Attempt(
            label,
            "none" if not codes else "deny",
            codes,
            traceback="Traceback" in err,
            detail=f"exit {r.returncode}: {err.strip()[-300:]}",
        )
    effect = out.get("effect", "none")
    if (r.returncode == 0) != (effect == "allow"):
        effect = f"inconsistent (exit {r.returncode}, {effect})"
    return Attempt(
        label,
        effect,
        tuple(x["code"] for x in out.get("reasons", [])),
        request_id=out.get("request_id"),
        index=out.get("ledger_index"),
        traceback="Traceback" in err,
        detail=(out.get("reasons") or [{}])[0].get("detail", "")[:300],
    )


def exec_cli(
    home: Path,
    token: str,
    marker: Path,
    *,
    principal: str = RESEARCHER,
    preexec_fn: Callable[[], None] | None = None,
    label: str = "exec (CLI)",
) -> Attempt:
    """``interlock exec -- touch MARKER``: executed exactly when the marker exists after."""
    env = env_for(home, INTERLOCK_CAPABILITY=token, INTERLOCK_PRINCIPAL=principal)
    r = cli(home, "exec", *FAST, "--", "touch", str(marker), env=env, preexec_fn=preexec_fn)
    err = r.stderr.decode(errors="replace")
    codes = tuple(_DENIED.findall(err))
    rid = _REQUEST.search(err)
    if r.returncode == 0:
        effect = "allow"
    elif r.returncode == 126 and codes:
        effect = "deny"
    else:
        effect = "none"
    return Attempt(
        label,
        effect,
        codes,
        request_id=rid.group(1) if rid else None,
        executed=marker.exists(),
        traceback="Traceback" in err,
        detail=f"exit {r.returncode}: {err.strip()[-300:]}",
    )


def decide_in(gate: Any, request: Mapping[str, Any] | bytes | str, label: str = "") -> Attempt:
    """``gate.decide(request)`` in this process."""
    d = gate.decide(request)
    return Attempt(
        label or "decide (in-process gate)",
        d.effect.value,
        tuple(d.codes),
        request_id=d.request_id,
        index=d.ledger_index,
        detail=d.reasons[0].detail[:300] if d.reasons else "",
    )


def governed(gate: Any, request: Mapping[str, Any], label: str = "") -> Attempt:
    """``with gate.execution(request): <body>``: executed exactly when the body ran."""
    from interlock.errors import Denied

    ran: list[int] = []
    try:
        with gate.execution(request):
            ran.append(1)
    except Denied as exc:
        d = exc.decision
        return Attempt(
            label or "execution (in-process gate)",
            "deny",
            tuple(d.codes),
            request_id=d.request_id,
            index=d.ledger_index,
            executed=bool(ran),
            detail=d.reasons[0].detail[:300] if d.reasons else "",
        )
    return Attempt(label or "execution (in-process gate)", "allow", executed=bool(ran))


# -- was the denial recorded? -------------------------------------------------------------------


def ledger_records(home: Path) -> dict[str, list[dict[str, Any]]]:
    """Every record on ``home``'s ledger, by request id (read through the store, or straight
    from the SQLite file when the store refuses to open it)."""
    from interlock.audit import open_for_audit

    out: dict[str, list[dict[str, Any]]] = {}
    rows: Iterable[bytes]
    try:
        with open_for_audit(home) as view:
            rows = [d for _i, _h, d in view.ledger.iter_entries(0)]
    except Exception:  # noqa: BLE001 - a broken store: read the file itself
        db = home / "ledger.db"
        if not db.exists():
            return out
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            rows = [bytes(r[0]) for r in conn.execute("SELECT data FROM entries ORDER BY idx")]
        except sqlite3.Error:
            return out
        finally:
            conn.close()
    for data in rows:
        rec = json.loads(data)
        out.setdefault(str(rec.get("id")), []).append(rec)
    return out


def on_ledger(home: Path, attempts: Sequence[Attempt], *, why_not: str | None = None) -> str:
    """Whether the denials of ``attempts`` are on ``home``'s ledger: ``yes``, or — when none
    is — ``not possible: WHY`` (``why_not``: the fault is what stops the write) or ``no``."""
    denials = [a for a in attempts if a.effect != "allow"]
    if not denials:
        return "no denial"
    recs = ledger_records(home)
    found = 0
    for a in denials:
        for rec in recs.get(str(a.request_id), []):
            if rec.get("type") == "decision" and rec.get("effect") == "deny":
                found += 1
                break
    if found == len(denials):
        return "yes"
    if found:
        return f"partly ({found} of {len(denials)})" + (f": {why_not}" if why_not else "")
    return f"not possible: {why_not}" if why_not else "no"


# -- rows ---------------------------------------------------------------------------------------


def record(
    fault: str,
    group: str,
    injected: str,
    expected: Sequence[str],
    attempts: Sequence[Attempt],
    *,
    recorded: str,
    note: str = "",
    must_record: bool = False,
) -> Row:
    """Add a row for ``fault`` and assert it: no allow, nothing executed, no traceback, every
    attempt answered with one of the ``expected`` codes (its first reason: the one the caller
    acts on), and — with ``must_record`` — every denial on the ledger."""
    assert attempts, "a fault row needs at least one attempt"
    observed = tuple(sorted({_first(a) for a in attempts}))
    allowed = sum(1 for a in attempts if a.effect == "allow")
    executed = any(a.executed for a in attempts)
    ok = (
        allowed == 0
        and not executed
        and not any(a.traceback for a in attempts)
        and all(_first(a) in expected for a in attempts)
        and (not must_record or recorded == "yes")
    )
    row = Row(
        fault=fault,
        group=group,
        injected=injected,
        expected=tuple(expected),
        observed=observed,
        attempts=[a.action for a in attempts],
        allowed=allowed,
        executed=executed,
        recorded=recorded,
        as_expected=ok,
        note=note,
    )
    ROWS[:] = [r for r in ROWS if r.fault != fault] + [row]
    detail = "\n".join(f"  {a}" for a in attempts)
    assert allowed == 0, f"{fault}: allowed under the fault\n{detail}"
    assert not executed, f"{fault}: the action ran under the fault\n{detail}"
    assert not any(a.traceback for a in attempts), f"{fault}: a traceback\n{detail}"
    assert all(_first(a) in expected for a in attempts), f"{fault}: expected {expected}\n{detail}"
    if must_record:
        assert recorded == "yes", f"{fault}: denial not recorded ({recorded})\n{detail}"
    return row


def _first(a: Attempt) -> str:
    """The code the caller acts on: the first reason, or ``(none)`` for no answer at all."""
    return a.codes[0] if a.codes else f"({a.effect})"


def _codes() -> frozenset[str]:
    from interlock.core.model import ReasonCode

    return frozenset(c.value for c in ReasonCode)


# -- the published matrix -------------------------------------------------------------------------


def problems(rows: Sequence[Row]) -> list[str]:
    """What makes the matrix fail: an allow, an executed action, too few classes."""
    out = [f"{r.fault}: {r.allowed} allowed under the fault" for r in rows if r.allowed]
    out += [f"{r.fault}: the action executed under the fault" for r in rows if r.executed]
    if len(rows) < MIN_CLASSES:
        out.append(f"only {len(rows)} fault classes ran (at least {MIN_CLASSES} are required)")
    for kind, c in CRASH.kinds.items():
        if c.get("lost", 0):
            out.append(f"crash trials ({kind}): {c['lost']} reported allows lost")
        if c.get("verified", 0) != c.get("trials", 0):
            out.append(f"crash trials ({kind}): the ledger failed verification after a trial")
    return out


def write_matrix(rows: Sequence[Row], root: Path = ROOT) -> None:
    """Write ``FAULTS.md`` and ``faults.json`` at ``root`` from ``rows`` and the crash trials."""
    rows = sorted(rows, key=lambda r: (_GROUPS.index(r.group), r.fault))
    doc = {
        "generated_by": "make faults (pytest tests/faults)",
        "classes": len(rows),
        "allowed": sum(r.allowed for r in rows),
        "executed": sum(1 for r in rows if r.executed),
        "as_expected": sum(1 for r in rows if r.as_expected),
        "rows": [asdict(r) for r in rows],
        "crash_trials": CRASH.kinds,
        "crash_trial_notes": CRASH.notes,
        "problems": problems(rows),
    }
    (root / "faults.json").write_text(json.dumps(doc, indent=2) + "\n")
    (root / "FAULTS.md").write_text(_markdown(rows, doc))


_GROUPS = ["ledger", "policy", "capability", "time", "process", "postgres", "resource", "input"]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown(rows: Sequence[Row], doc: Mapping[str, Any]) -> str:
    crash = CRASH.kinds
    trials = sum(c.get("trials", 0) for c in crash.values())
    lines = [
        "# Fault matrix",
        "",
        "Generated by the fault tests (`make faults`, and `make test`, which runs them):"
        " `tests/faults/`. Each row is one fault class injected into a real home — real SQLite,"
        " real PostgreSQL, real processes, signals and resource limits — from outside"
        " Interlock's code, with the real actions attempted under it (`interlock decide`,"
        " `interlock exec -- touch MARKER`, an in-process `gate.decide` or governed"
        " execution) and what each caller was told. The run fails if any row shows an allow"
        " or an executed action, or if fewer than 25 classes ran. The same data is in"
        " [`faults.json`](faults.json).",
        "",
        f"**{doc['classes']} fault classes, {doc['allowed']} allowed, {doc['executed']} executed"
        f" under fault; {doc['as_expected']} of {doc['classes']} answered with the expected"
        f" code. {trials} `kill -9` crash trials, "
        f"{sum(c.get('lost', 0) for c in crash.values())} reported allows lost.**",
        "",
        *(
            ["**The run failed — the matrix shows:**", "", *[f"- {p}" for p in doc["problems"]], ""]
            if doc["problems"]
            else []
        ),
        "Columns: *expected* is the DESIGN §3 reason code the caller must get; *observed* the"
        " first reason code of every answer (`(none)`: no answer — the process was killed);"
        " *allowed* counts the allows under the fault; *executed* whether the marker file"
        " (or the governed body) appeared; *recorded* whether the denials are on the ledger"
        " (and why not, where the fault is what prevents it).",
        "",
        "| class | injected | attempted | expected | observed | allowed | executed | recorded |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        attempted = ", ".join(sorted(set(r.attempts)))
        note = f" — {r.note}" if r.note else ""
        lines.append(
            f"| `{r.fault}` | {_cell(r.injected)}{_cell(note)} | {_cell(attempted)} |"
            f" {', '.join(r.expected)} | {', '.join(r.observed)} | {r.allowed} |"
            f" {'yes' if r.executed else 'no'} | {_cell(r.recorded)} |"
        )
    lines += [
        "",
        "## Crash trials",
        "",
        "Each trial starts several processes deciding on one home (two threads each, so"
        " appends share commits), each reporting every allow it was told of — request id,"
        " ledger index, decision hash — to a file written per allow; kills one or all of them"
        " with SIGKILL at a random moment (during decide, append, checkpoint or tree"
        " integration, whichever it lands on); then runs `interlock ledger verify` on the"
        " home and looks up every reported allow at its index.",
        "",
        "| where | trials | killed | allows reported | lost allows | ledger verified |",
        "|---|---|---|---|---|---|",
    ]
    for kind, c in crash.items():
        lines.append(
            f"| {kind} | {c.get('trials', 0)} | {c.get('killed', 0)} | {c.get('reported', 0)} |"
            f" {c.get('lost', 0)} | {c.get('verified', 0)} of {c.get('trials', 0)} |"
        )
    if CRASH.notes:
        lines += ["", "Trials that failed verification:", ""]
        lines += [f"- {_cell(n)}" for n in CRASH.notes]
    return "\n".join(lines) + "\n"
