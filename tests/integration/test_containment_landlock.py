"""Containment without a mount namespace (a supervisor without CAP_SYS_ADMIN): Landlock alone
leaves the home out of the command's rules. Real kernel enforcement through ``run_command``;
only the choice of that path is forced here (``_can_mask``), as a non-root supervisor would
make it."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

import interlock.containment as containment
from interlock.gate import Gate
from interlock.runtime import run_command
from tests.conftest import RESEARCHER, allow_code, code_forms
from tests.integration.test_supervisor import by_id, shell_request

PROBE = """
import errno, json, os, sys
home, work = sys.argv[1], sys.argv[2]
out = {}
def attempt(name, fn):
    try:
        fn()
        out[name] = "ok"
    except OSError as exc:
        out[name] = errno.errorcode[exc.errno]
attempt("read key", lambda: open(f"{home}/keys/node.key", "rb").read())
attempt("list home", lambda: os.listdir(home))
attempt("write ledger", lambda: open(f"{home}/ledger.db", "r+b"))
attempt("write sibling", lambda: open(f"{work}/out.txt", "w").write("x"))
attempt("read sibling file", lambda: open(f"{work}/../readme.txt").read())
attempt("create beside the home", lambda: open(f"{home}/../new.txt", "w"))
print(json.dumps(out))
"""


def test_landlock_alone_keeps_the_home_out_and_the_rest_usable(
    home: Path, issue: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(containment, "_can_mask", lambda: False)
    allow_code(home, RESEARCHER, code_forms(sys.executable, "probe.py"))
    work = home.parent / "work"
    work.mkdir()
    (home.parent / "readme.txt").write_text("hello")
    probe = work / "probe.py"
    probe.write_text(PROBE)
    argv = [sys.executable, str(probe), str(home), str(work)]
    out = io.BytesIO()
    with Gate.open(home) as gate:
        o = run_command(
            gate,
            shell_request(issue(RESEARCHER, "shell.exec:Host::*"), *argv),
            argv,
            stdout=out,
            cwd=work,
            handle_signals=False,
        )
        assert o.status == "ended" and o.exit_code == 0, o
        start = by_id(gate, o.request_id or "")["exec.start"]
    assert start["containment"]["home"] == "landlock"
    assert json.loads(out.getvalue()) == {
        "read key": "EACCES",
        "list home": "EACCES",
        "write ledger": "EACCES",
        "write sibling": "ok",
        "read sibling file": "ok",
        # the documented price of leaving the home out: its parent's top level is not writable
        "create beside the home": "EACCES",
    }
    assert (work / "out.txt").read_text() == "x"


def test_a_ruleset_is_reused_for_a_while_and_survives_one_holder_releasing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    settings = containment.Settings()
    first = containment.prepare(settings, home=home, cwd=work)
    second = containment.prepare(settings, home=home, cwd=work)
    try:
        assert first.ruleset is not None and first.ruleset is second.ruleset
        first.release()
        assert second.ruleset is not None and second.ruleset.fd >= 0  # still usable
        # another working directory is another sandbox
        third = containment.prepare(settings, home=home, cwd=tmp_path)
        assert third.ruleset is not second.ruleset
        third.release()
        # past REUSE_S it is built again
        monkeypatch.setattr(containment, "REUSE_S", 0.0)
        containment._reused.clear()
        fourth = containment.prepare(settings, home=home, cwd=work)
        fifth = containment.prepare(settings, home=home, cwd=work)
        assert fourth.ruleset is not fifth.ruleset
        fourth.release()
        fifth.release()
    finally:
        second.release()
