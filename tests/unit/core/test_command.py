"""The canonical command (interlock.core.command): equivalent spellings read alike, wrappers are
unwrapped, code-running forms are named, and the reading is deterministic."""

from __future__ import annotations

import shlex

import pytest
from hypothesis import given
from hypothesis import strategies as st

from interlock.core.command import canonical_command, command_context
from interlock.errors import MalformedRequest

#: spellings of a recursive delete, each through whatever wrapper or interpreter it uses
RECURSIVE = [
    "rm -rf x",
    "/bin/rm -rf x",
    "/usr/bin/rm -r x",
    "rm -r -f x",
    "rm -f -r x",
    "rm -fr x",
    "rm -Rf x",
    "rm -vrf x",
    "rm -Rvf x",
    "rm --recursive x",
    "rm --recur x",
    "rm --rec x",
    "rm --r x",
    "rm --recursive=yes x",  # GNU rm refuses it; read as recursive all the same (fail closed)
    "rm x -r",  # GNU getopt permutes: an option after an operand still counts
    "rm -f -- -r -R",  # ...nope: see NOT_RECURSIVE; this one has -f only before -- (below)
    "sh -c 'rm -rf x'",
    "bash -c 'rm -rf x'",
    "bash -lc 'cd /tmp && rm -Rf x'",
    "bash +e -c 'rm -rf x'",
    "dash -ec 'rm -r x'",
    "sh -c 'echo \"$(rm -rf x)\"'",
    "sh -c 'sh -c \"rm -rf x\"'",
    "env rm -rf x",
    "env -i A=1 rm -rf x",
    "env -S 'rm -rf x'",
    "nice rm -rf x",
    "nice -n 5 rm -rf x",
    "nohup rm -rf x",
    "timeout 5 rm -rf x",
    "timeout -s KILL -k 1 5 rm -rf x",
    "xargs rm -rf",
    "xargs -0 -I{} rm -rf {}",
    "sudo rm -rf x",
    "sudo -u root -- rm -rf x",
    "doas rm -rf x",
    "su -c 'rm -rf x'",
    "setsid rm -rf x",
    "stdbuf -o0 rm -rf x",
    "ionice -c 3 rm -rf x",
    "taskset 0x1 rm -rf x",
    "chrt 10 rm -rf x",
    "time rm -rf x",
    "command rm -rf x",
    "exec rm -rf x",
    "eval 'rm -rf x'",
    "watch -n 1 'rm -rf x'",
    "flock /tmp/l rm -rf x",
    "flock -c 'rm -rf x' /tmp/l",
    "strace -f -o /dev/null rm -rf x",
    "nsenter -t 1 -m rm -rf x",
    "env nice timeout 5 sudo rm -rf x",
    "find x -delete",
    "find -L x -name '*.tmp' -delete",
    "find x -exec rm -rf {} ;",
    "find x -exec rm -rf {} +",
    "find x -type f -exec rm {} +",
    "find x -execdir /bin/rm -r {} ;",
    "find x -ok unlink {} ;",
    "busybox rm -rf x",
    "toybox rm -rf x",
    "coreutils --coreutils-prog=rm -rf x",
    "rsync -a --delete empty/ x/",
    "python3 -c 'import shutil; shutil.rmtree(\"x\")'",
    "perl -MFile::Path -e 'remove_tree(\"x\")'",
    'ruby -e \'require "fileutils"; FileUtils.rm_rf("x")\'',
    'node -e \'require("fs").rmSync("x", {recursive: true})\'',
    "awk 'BEGIN { system(\"rm -rf x\") }'",
]
RECURSIVE.remove("rm -f -- -r -R")

NOT_RECURSIVE = [
    "rm x",
    "rm -f x",
    "rm -- -r",  # after -- "-r" is a file name
    "rm -f -- -r -R",
    "rm -i x",
    "ls -la",
    "ls -R",  # -R of ls is not a delete
    "unlink x",
    "rmdir x",
    "find x -name '*.py'",
    "find x -exec cat {} ;",
    "grep -r rm .",
    "echo rm -rf x",
    "sh -c 'echo rm'",
    "rsync -a src/ dst/",
]


def read(line: str, executable: str | None = None):  # type: ignore[no-untyped-def]
    return canonical_command(shlex.split(line), executable)


@pytest.mark.parametrize("line", RECURSIVE)
def test_every_spelling_of_a_recursive_delete_is_one(line: str) -> None:
    assert read(line).recursive_delete, line


@pytest.mark.parametrize("line", NOT_RECURSIVE)
def test_these_are_not_recursive_deletes(line: str) -> None:
    assert not read(line).recursive_delete, line


@pytest.mark.parametrize(
    ("line", "flags"),
    [
        ("rm -rf x", {"r", "f"}),
        ("rm -r -f x", {"r", "f"}),
        ("rm --recur --for x", {"recursive", "force"}),
        ("rm -- -r", set()),
        ("rm --v x", {"verbose", "version"}),  # ambiguous: each it could mean
        ("ls -la --color=auto", {"l", "a", "color"}),
        ("git push --force -- --not-a-flag", {"force"}),
        ("nice -n5 rm -i x", {"n", "i"}),
    ],
)
def test_flags_are_split_and_expanded(line: str, flags: set[str]) -> None:
    assert read(line).flags == flags


@pytest.mark.parametrize(
    ("line", "forms"),
    [
        ("ls -la", set()),
        ("rm -rf x", set()),
        ("env", set()),  # prints the environment, runs nothing
        ("python3 --version", set()),
        ("sh -c 'ls'", {"sh -c"}),
        ("bash script.sh", {"bash"}),
        ("bash", {"bash"}),  # commands from stdin
        ("python3 -c 'print(1)'", {"python3 -c"}),
        ("python3.12 -c 'print(1)'", {"python3 -c"}),
        ("python3 -Ic 'print(1)'", {"python3 -c"}),
        ("python3 -m http.server", {"python3 -m"}),
        ("python3 app.py -c x", {"python3"}),  # -c after the script is the script's
        ("perl -le 'print 1'", {"perl -e"}),
        ("perl -E 'say 1'", {"perl -E"}),
        ("ruby -e 'p 1'", {"ruby -e"}),
        ("node --eval '1'", {"node -e"}),
        ("node -p '1'", {"node -p"}),
        ("awk '{print $1}' f", {"awk"}),
        ("env python3 -c 1", {"env", "python3 -c"}),
        ("timeout 5 sh -c 'ls'", {"timeout", "sh -c"}),
        ("xargs ls", {"xargs"}),
        ("find . -exec ls {} ;", {"find -exec"}),
        ("find . -delete", {"find -delete"}),
        ("busybox ls", {"busybox"}),
        ("sudo -s", {"sudo"}),
        ("su", {"su"}),
    ],
)
def test_code_running_forms_are_named(line: str, forms: set[str]) -> None:
    c = read(line)
    assert set(c.interpreters) == forms
    assert c.interprets_code is bool(forms)


def test_names_cover_argv0_executable_and_inner_commands() -> None:
    c = read("sudo -u root env A=1 /usr/bin/nice rm -rf x")
    assert {"sudo", "env", "nice", "rm"} <= c.names
    assert c.program == "sudo"
    # a busybox applet by argv[0] is that applet, not a wrapper
    applet = canonical_command(["sh", "-c", "ls"], "/bin/busybox")
    assert {"sh", "busybox", "ls"} <= applet.names
    assert set(applet.interpreters) == {"sh -c"}
    assert applet.program == "busybox"
    assert applet.executable == "/bin/busybox"


def test_a_lying_executable_does_not_hide_the_argv() -> None:
    # over HTTP anyone may claim args.executable; argv[0] is read as well
    c = canonical_command(["rm", "-rf", "x"], "/usr/bin/ls")
    assert c.recursive_delete
    assert {"rm", "ls"} <= c.names
    # ...and the executable is read with the argv too
    c = canonical_command(["python3", "-c", "1"], "/usr/bin/bash")
    assert {"python3 -c", "bash -c"} == set(c.interpreters)


def test_cedar_record_shape() -> None:
    rec = command_context({"argv": ["rm", "-rf", "a b"], "executable": "/usr/bin/rm"})["command"]
    assert rec == {
        "executable": "/usr/bin/rm",
        "program": "rm",
        "names": ["rm"],
        "argc": 3,
        "line": "rm -rf 'a b'",
        "flags": ["f", "r"],
        "recursive_delete": True,
        "interprets_code": False,
        "interpreters": [],
    }
    # a `command` sent by the caller is replaced, never trusted
    forged = {"argv": ["rm", "-rf", "/"], "command": {"recursive_delete": False}}
    assert command_context(forged)["command"]["recursive_delete"] is True


@pytest.mark.parametrize(
    ("argv", "executable"),
    [
        ("rm -rf x", None),
        ([], None),
        (["rm", 1], None),
        (["rm", ["-rf"]], None),
        ([["rm", "-rf"]], None),
        (["", "x"], None),
        (["rm", "a\x00b"], None),
        (["rm"], "bin/rm"),
        (["rm"], 7),
    ],
)
def test_malformed_argv_is_refused(argv: object, executable: object) -> None:
    with pytest.raises(MalformedRequest):
        canonical_command(argv, executable)  # type: ignore[arg-type]


def test_pathological_nesting_is_bounded_and_fails_closed() -> None:
    deep = ["env"] * 20_000 + ["ls"]
    assert read(shlex.join(deep)).interprets_code
    ping_pong = ["nsenter", "1"] + ["rm", "nsenter", "1"] * 3_000
    assert canonical_command(ping_pong).recursive_delete
    nested = "sh -c " * 40 + "ls"
    assert read(shlex.join(nested.split())).interprets_code


# -- properties ----------------------------------------------------------------------------------

_RM_SHORT = "rRfivdI"


@given(
    clusters=st.lists(st.text(alphabet=_RM_SHORT, min_size=1, max_size=5), min_size=1, max_size=4),
    operands=st.lists(st.sampled_from(["x", "/tmp/y", "a b"]), max_size=3),
    prefix=st.sampled_from(["rm", "/bin/rm", "/usr/bin/rm", "busybox rm", "env rm", "sudo rm"]),
)
def test_any_rm_flag_spelling_with_r_is_recursive(
    clusters: list[str], operands: list[str], prefix: str
) -> None:
    argv = [*prefix.split(), *(f"-{c}" for c in clusters), *operands]
    c = canonical_command(argv)
    wants = any(ch in "rR" for cl in clusters for ch in cl)
    assert c.recursive_delete is wants
    # whatever the clustering, the flags are the letters used
    assert {ch for cl in clusters for ch in cl} <= c.flags
    # after "--", the same words are file names
    after = canonical_command([*prefix.split(), "--", *(f"-{cl}" for cl in clusters)])
    assert not after.recursive_delete


@given(
    long=st.sampled_from(["recursive", "recursiv", "recurs", "recu", "rec", "re", "r"]),
    where=st.integers(min_value=0, max_value=3),
)
def test_every_prefix_of_recursive_is_recursive(long: str, where: int) -> None:
    words = ["a", "b", "c"]
    words.insert(min(where, len(words)), f"--{long}")
    assert canonical_command(["rm", *words]).recursive_delete


@given(
    argv=st.lists(
        st.text(alphabet=st.characters(blacklist_characters="\x00"), max_size=12),
        min_size=1,
        max_size=12,
    ).filter(lambda a: a[0] != ""),
    executable=st.one_of(st.none(), st.sampled_from(["/bin/sh", "/usr/bin/rm", "/x/y z"])),
)
def test_the_canonical_form_is_deterministic_and_total(
    argv: list[str], executable: str | None
) -> None:
    first = canonical_command(argv, executable)
    again = canonical_command(list(argv), executable)
    assert first == again
    assert first.to_cedar() == again.to_cedar()
    assert first.argc == len(argv)
    assert shlex.split(first.line) == argv
    assert first.interprets_code is bool(first.interpreters)


def test_a_shell_string_adds_names_and_deletes_but_no_forms() -> None:
    c = read("sh -c 'exec python3 -c 1; env ls'")
    assert set(c.interpreters) == {"sh -c"}
    assert {"python3", "env", "ls"} <= c.names
    assert read("sh -c 'exec rm -rf x'").recursive_delete
