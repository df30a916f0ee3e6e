"""shell.exec under the default policy, decided by the real gate on a real home: every spelling
of a recursive delete is POLICY_FORBID, code-running commands are forbidden unless the operator
lists them for the agent, and a malformed argv never reaches Cedar (MALFORMED_REQUEST)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest

from interlock.gate import Gate
from tests.conftest import RESEARCHER, SUMMARIZER, allow_code
from tests.unit.core.test_command import RECURSIVE


def shell(token: str, argv: Any, principal: str = RESEARCHER, **args: Any) -> dict[str, Any]:
    return {
        "principal": principal,
        "action": "shell.exec",
        "resource": {"type": "Host", "id": "localhost"},
        "args": {"argv": argv, **args},
        "capability": token,
    }


def test_every_spelling_of_a_recursive_delete_is_forbidden(home: Path, issue: Any) -> None:
    tok = issue(RESEARCHER, "shell.exec:Host::*")
    wrong: list[str] = []
    with Gate.open(home) as gate:
        for line in RECURSIVE:
            d = gate.decide(shell(tok, shlex.split(line)))
            if d.codes != ("POLICY_FORBID",) or "no-recursive-delete" not in (
                d.reasons[0].policy or ""
            ):
                wrong.append(f"{line}: {d.codes} {d.reasons[0].detail if d.reasons else ''}")
        # the executable interlock exec resolved is read too; a lie about it does not help
        d = gate.decide(shell(tok, ["rm", "-r", "x"], executable="/usr/bin/ls"))
        assert d.codes == ("POLICY_FORBID",)
    assert wrong == []


@pytest.mark.parametrize(
    "line", ["rm x", "rm -f x", "rm -- -r", "ls -la", "/usr/bin/ls -R /tmp", "git status"]
)
def test_ordinary_commands_are_allowed(home: Path, issue: Any, line: str) -> None:
    with Gate.open(home) as gate:
        d = gate.decide(shell(issue(RESEARCHER, "shell.exec:Host::*"), shlex.split(line)))
    assert d.allowed, d.reasons


def test_code_runs_only_in_the_forms_the_operator_lists(home: Path, issue: Any) -> None:
    researcher = issue(RESEARCHER, "shell.exec:Host::*")
    summarizer = issue(SUMMARIZER, "shell.exec:Host::*")
    py = ["python3", "-c", "print(1)"]
    with Gate.open(home) as gate:
        d = gate.decide(shell(researcher, py))
        assert d.codes == ("POLICY_FORBID",)
        assert d.reasons[0].policy == "no-code-unless-allowed"
    allow_code(home, RESEARCHER, ["python3 -c"])
    with Gate.open(home) as gate:
        assert gate.decide(shell(researcher, py)).allowed
        assert gate.decide(shell(researcher, py, executable="/usr/bin/python3.12")).allowed
        # the sub-agent is not the researcher: nothing listed for it
        assert gate.decide(shell(summarizer, py, principal=SUMMARIZER)).codes == ("POLICY_FORBID",)
        for line in (
            "sh -c 'print(1)'",
            "bash -c ls",
            "python3 script.py",  # a script is not -c
            "python3 -m http.server",
            "env python3 -c 1",  # env is a wrapper: it would need "env" too
            "sh -c 'python3 -c 1'",
        ):
            d = gate.decide(shell(researcher, shlex.split(line)))
            assert d.codes == ("POLICY_FORBID",), line
        # allowed python3 -c still may not delete recursively (best effort, defence in depth)
        d = gate.decide(shell(researcher, ["python3", "-c", "import shutil; shutil.rmtree('/')"]))
        assert d.codes == ("POLICY_FORBID",)
        assert d.reasons[0].policy == "no-recursive-delete"


@pytest.mark.parametrize(
    "args",
    [
        {"argv": "rm -rf x"},
        {"argv": []},
        {"argv": ["rm", 5]},
        {"argv": [["rm", "-rf"], ["x"]]},
        {"argv": ["rm", ["-rf"]]},
        {"argv": ["rm", None]},
        {"argv": ["", "-rf"]},
        {"cwd": "/"},
        {"argv": ["ls"], "executable": "ls"},
        {"argv": ["ls"], "command": {"recursive_delete": False}},
    ],
)
def test_malformed_shell_args_are_refused_at_intake(
    home: Path, issue: Any, args: dict[str, Any]
) -> None:
    req = shell(issue(RESEARCHER, "shell.exec:Host::*"), None)
    req["args"] = args
    with Gate.open(home) as gate:
        d = gate.decide(req)
    assert d.codes == ("MALFORMED_REQUEST",)
