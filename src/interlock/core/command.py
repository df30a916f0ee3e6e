"""The canonical form of a command line: what a ``shell.exec`` policy reads. Pure: no I/O.

    >>> c = canonical_command(["/usr/bin/env", "nice", "-n", "5", "rm", "-vrf", "--", "-x"])
    >>> c.program, sorted(c.names), sorted(c.flags)
    ('env', ['env', 'nice', 'rm'], ['f', 'n', 'r', 'v'])
    >>> c.recursive_delete, c.interprets_code, sorted(c.interpreters)
    (True, True, ['env', 'nice'])

Cedar has no list type, and the spellings of one command are many (``rm -rf``, ``/bin/rm -r
-f``, ``rm --recur``, ``env rm -fr``, ``sh -c 'rm -Rf x'``, ``find x -delete``). A policy
therefore reads this form, which the policy engine adds to a ``shell.exec`` request's arguments as
``context.args.command`` (see :func:`command_context`):

``executable``   the path that is executed: ``args.executable`` (resolved by the caller with a
                 ``PATH`` lookup and ``realpath``, DESIGN I3: no I/O here), else ``argv[0]``
``program``      its basename (``rm``, ``python3.12``)
``names``        every program name the command line runs or may run: ``basename(argv[0])``,
                 ``basename(executable)``, each multi-call applet (``busybox rm``), each command
                 a wrapper runs (``env``/``sudo``/``xargs``/``find -exec`` ...), and, best effort,
                 each command of a shell string (``sh -c``); versioned interpreters also under
                 their family (``python3.12`` and ``python3``)
``argc``         ``len(argv)``
``line``         ``shlex.join(argv)``, for ``like`` patterns that need order
``flags``        the options of every command above, parsed with each program's grammar: short
                 clusters split (``-rf`` -> ``r``, ``f``), GNU long-option prefixes expanded
                 (``--recur`` -> ``recursive``; an ambiguous prefix counts as each option it could
                 mean), nothing after ``--``; programs Interlock does not know get the generic
                 reading (clusters split, long options verbatim)
``recursive_delete``  ``rm`` with ``-r``/``-R``/``--recursive`` in any spelling, ``find
                 -delete``, ``find -exec rm|unlink|rmdir|shred``, ``rsync --delete*``, anywhere in
                 the command, including through wrappers and (best effort) in shell strings and
                 in ``-c``/``-e`` code (``shutil.rmtree`` ...)
``interprets_code``   whether anything in the command runs code or a command that is not this
                 argv's own program: shells, interpreters, wrappers, multi-call dispatch by
                 argument, ``find -exec``/``-delete``
``interpreters`` the forms that make it so, e.g. ``["python3 -c"]``, ``["env", "sh -c"]``,
                 ``["find -exec"]``: ``<name> <option>`` for code given in an option,
                 ``<name> -m`` for a module, ``<name>`` for a script, stdin, an awk program or a
                 wrapper. Empty exactly when ``interprets_code`` is false. The commands of a
                 shell string add no forms: allowing ``sh -c`` allows any shell code.

Reading a command line cannot be complete: a shell string is not parsed, only split; programs not
listed in :mod:`interlock.core.programs` are read generically. Where it guesses it over-approximates
(more names, flags and forms, never fewer), so forbids written against it err towards denying;
permits should name a ``program`` and require ``!interprets_code``.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from interlock.core.programs import DELETERS, MULTICALL, Kind, Program, family, spec_for
from interlock.errors import MalformedRequest

__all__ = ["Command", "canonical_command", "check_argv", "command_context"]

#: how deep wrappers and shell strings are followed; deeper, the command still interprets code
MAX_DEPTH: Final = 8
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
# defence in depth in code strings: a recursive delete in the languages of interlock.core.programs
_CODE_RECURSIVE = re.compile(
    r"rmtree|remove_tree|rm_rf|rm_r\b|rimraf|\brm\s+-[A-Za-z]*[rR]|\brm\s+--rec"
    r"|\.(?:rm|rmdir)(?:Sync)?\s*\([^)]*recursive|File::Path"
)
_SHELL_SEPARATORS: Final = frozenset({";", "&", "&&", "|", "||", "|&", "(", ")", ";;", "`", "$"})
#: how many words one request may make the reader read, counted each time a command is read
#: (wrappers, shell strings, find -exec read some words again); past it the rest is unread, and
#: the command counts as interpreting code and deleting. A 64 KiB request has < 22,000 words.
_BUDGET: Final = 65_536
_REDIRECTS: Final = frozenset({"<", ">", ">>", "<<", "<<<", ">&", "<&", "&>", ">|", "<>", "&>>"})
_KEYWORDS: Final = frozenset(
    {"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "for", "in", "case",
     "esac", "function", "!", "{", "}", "[[", "]]", "select", "coproc"}
)  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """The canonical form of one argv (see the module docstring for each field)."""

    executable: str
    program: str
    names: frozenset[str]
    argc: int
    line: str
    flags: frozenset[str]
    recursive_delete: bool
    interpreters: frozenset[str]

    @property
    def interprets_code(self) -> bool:
        """Whether anything in the command runs code or another command."""
        return bool(self.interpreters)

    def to_cedar(self) -> dict[str, Any]:
        """The Cedar record (``context.args.command``): sets as sorted lists."""
        return {
            "executable": self.executable,
            "program": self.program,
            "names": sorted(self.names),
            "argc": self.argc,
            "line": self.line,
            "flags": sorted(self.flags),
            "recursive_delete": self.recursive_delete,
            "interprets_code": self.interprets_code,
            "interpreters": sorted(self.interpreters),
        }


@dataclass(slots=True)
class _Seen:
    names: set[str] = field(default_factory=set)
    flags: set[str] = field(default_factory=set)
    interpreters: set[str] = field(default_factory=set)
    recursive_delete: bool = False
    budget: int = _BUDGET


def check_argv(argv: object, executable: object = None) -> tuple[list[str], str | None]:
    """Check that ``argv`` is a non-empty list of strings with a non-empty ``argv[0]`` and no
    NUL (which no exec can pass), and ``executable``, if given, an absolute path.

    Raises:
        MalformedRequest: saying what is wrong.
    """
    if not isinstance(argv, list) or not argv:
        raise MalformedRequest("shell.exec: 'args.argv' must be a non-empty list of strings")
    for i, arg in enumerate(argv):
        if not isinstance(arg, str):
            raise MalformedRequest(f"shell.exec: args.argv[{i}] is not a string")
        if "\x00" in arg:
            raise MalformedRequest(f"shell.exec: args.argv[{i}] contains NUL")
    if not argv[0]:
        raise MalformedRequest("shell.exec: args.argv[0] must not be empty")
    if executable is not None and (
        not isinstance(executable, str) or not executable.startswith("/") or "\x00" in executable
    ):
        raise MalformedRequest("shell.exec: 'args.executable' must be an absolute path")
    return argv, executable


def canonical_command(argv: Sequence[str], executable: str | None = None) -> Command:
    """The canonical form of ``argv``, run as ``executable`` (default ``argv[0]``).

    Deterministic: the same arguments always give an equal :class:`Command`.

    Raises:
        MalformedRequest: if ``argv`` or ``executable`` is malformed (see :func:`check_argv`).
    """
    # a tuple is a fine argv from Python; a str is not (list("rm -rf x") would be its letters)
    args, exe = check_argv(list(argv) if isinstance(argv, tuple) else argv, executable)
    exe = exe or args[0]
    seen = _Seen()
    first, exe_name = _basename(args[0]), _basename(exe)
    _read(args, seen, 0)
    if exe_name != first:
        # both names run the same argv: a lying or surprising executable is read as itself too
        # (a multi-call binary run as argv[0]'s applet is that applet, read above)
        seen.names.add(exe_name)
        if exe_name not in MULTICALL:
            _read([exe, *args[1:]], seen, 0)
    return Command(
        executable=exe,
        program=exe_name,
        names=frozenset(seen.names),
        argc=len(args),
        line=shlex.join(args),
        flags=frozenset(seen.flags),
        recursive_delete=seen.recursive_delete,
        interpreters=frozenset(seen.interpreters),
    )


def command_context(args: Mapping[str, Any]) -> dict[str, Any]:
    """``args`` of a ``shell.exec`` request with ``command`` (the Cedar record of
    :meth:`Command.to_cedar`) set from ``args.argv`` and ``args.executable``; a ``command``
    the request carried is replaced.

    Raises:
        MalformedRequest: if ``argv`` or ``executable`` is malformed.
    """
    command = canonical_command(args.get("argv"), args.get("executable"))  # type: ignore[arg-type]
    return {**args, "command": command.to_cedar()}


# -- reading ---------------------------------------------------------------------------------


def _basename(path: str) -> str:
    return posixpath.basename(path.rstrip("/")) or path


@dataclass(slots=True)
class _Parsed:
    flags: list[str] = field(default_factory=list)
    values: list[tuple[str, str]] = field(default_factory=list)
    operands: list[str] = field(default_factory=list)
    #: index in the argument list of the first word not read as an option (non-permuting)
    rest: int = 0


def _parse(words: Sequence[str], spec: Program | None) -> _Parsed:
    """getopt_long over ``words`` (argv without argv[0]) with ``spec``'s grammar."""
    out = _Parsed()
    permute = spec.permute if spec is not None else True
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word == "--":
            out.operands.extend(words[i:])
            out.rest = i
            return out
        plus = spec is not None and spec.plus_options and word.startswith("+") and len(word) > 1
        if word.startswith("--") and len(word) > 2:
            name, eq, value = word[2:].partition("=")
            for full in _expand(name, spec):
                out.flags.append(full)
                kind = spec.longs.get(full) if spec is not None and spec.longs else None
                if eq:
                    out.values.append((full, value))
                elif kind == "required" and i < len(words):
                    out.values.append((full, words[i]))
                    i += 1
                    break
        elif (word.startswith("-") or plus) and len(word) > 1:
            i = _short_cluster(word, words, i, spec, out)
        else:
            out.operands.append(word)
            if not permute:
                out.operands.extend(words[i:])
                out.rest = i - 1
                return out
            continue
        if spec is not None and any(f in spec.terminal for f in out.flags[-1:]):
            out.operands.extend(words[i:])
            out.rest = i
            return out
    out.rest = len(words)
    return out


def _short_cluster(
    word: str, words: Sequence[str], i: int, spec: Program | None, out: _Parsed
) -> int:
    body = word[1:]
    j = 0
    while j < len(body):
        ch = body[j]
        j += 1
        out.flags.append(ch)
        if spec is None:
            continue
        if ch in spec.with_arg:
            if j < len(body):
                out.values.append((ch, body[j:]))
            elif i < len(words):
                out.values.append((ch, words[i]))
                i += 1
            return i
        if ch in spec.optional_arg:
            out.values.append((ch, body[j:]))
            return i
        if ch in spec.digit_arg:
            k = j
            while k < len(body) and body[k].isdigit():
                k += 1
            j = k
        if ch in spec.terminal:
            return i
    return i


def _expand(name: str, spec: Program | None) -> list[str]:
    """A long option's full name(s): exact, the unique prefix match, or every match of an
    ambiguous prefix (getopt_long would refuse it; over-approximating is the safe reading)."""
    if spec is None or spec.longs is None or name in spec.longs or not name:
        return [name]
    matches = sorted(n for n in spec.longs if n.startswith(name))
    return matches or [name]


def _read(argv: Sequence[str], seen: _Seen, depth: int) -> None:
    """Read one command (``argv[0]`` is its name) into ``seen``."""
    if not argv or not argv[0]:
        return
    name = _basename(argv[0])
    seen.names.add(name)
    fam = family(name)
    seen.names.add(fam)
    seen.budget -= len(argv)
    if depth > MAX_DEPTH or seen.budget < 0:
        # nested or repeated beyond reading: what it runs is unread, so it is taken to
        # interpret code and to delete (fail closed)
        seen.interpreters.add(fam)
        seen.recursive_delete = True
        return
    spec = spec_for(name)
    parsed = _parse(argv[1:], spec)
    seen.flags.update(parsed.flags)
    if spec is None:
        return
    inert = not parsed.operands and set(parsed.flags) <= spec.inert and parsed.flags != []
    if spec.kind is Kind.PLAIN:
        if name == "rm" and {"r", "R", "recursive"} & set(parsed.flags):
            seen.recursive_delete = True
        if name == "rsync" and any(f.startswith("del") for f in parsed.flags):
            seen.recursive_delete = True
    elif spec.kind is Kind.SHELL:
        if inert:
            return
        if "c" in parsed.flags:
            seen.interpreters.add(f"{fam} -c")
            if parsed.operands:
                _read_shell(parsed.operands[0], seen, depth + 1)
        else:
            seen.interpreters.add(fam)  # a script file, or commands from stdin
    elif spec.kind is Kind.INTERPRETER:
        if not inert:
            _read_interpreter(fam, spec, parsed, seen)
    elif spec.kind is Kind.FIND:
        _read_find(argv[1:], seen, depth)
    elif spec.kind is Kind.MULTICALL:
        _read_multicall(fam, argv, seen, depth)
    else:
        _read_wrapper(fam, spec, argv[1:], parsed, seen, depth)


def _read_interpreter(fam: str, spec: Program, parsed: _Parsed, seen: _Seen) -> None:
    forms = [f"{fam} {spec.code[o]}" for o, _ in parsed.values if o in spec.code]
    forms += [f"{fam} {spec.module[o]}" for o, _ in parsed.values if o in spec.module]
    forms += [f"{fam} {spec.code[f]}" for f in parsed.flags if f in spec.code]  # -c at the end
    seen.interpreters.update(forms)
    for opt, value in parsed.values:
        if opt in spec.code and _CODE_RECURSIVE.search(value):
            seen.recursive_delete = True
    if spec.code_operand_unless is not None:
        program_file = bool(spec.code_operand_unless & set(parsed.flags))
        if parsed.operands and not program_file and _CODE_RECURSIVE.search(parsed.operands[0]):
            seen.recursive_delete = True
        seen.interpreters.add(fam)
    elif not forms:
        seen.interpreters.add(fam)  # a script file, or code from stdin


def _read_wrapper(
    fam: str, spec: Program, words: Sequence[str], parsed: _Parsed, seen: _Seen, depth: int
) -> None:
    strings = [v for o, v in parsed.values if o in spec.shell_string]
    split = [v for o, v in parsed.values if o in spec.split_string]
    start = parsed.rest
    if spec.assignments:
        while start < len(words) and _ASSIGNMENT.match(words[start]):
            start += 1
    inner = list(words[start + spec.positionals :])
    for value in split:
        try:
            inner = [*shlex.split(value), *inner]
        except ValueError:
            seen.interpreters.add(fam)
    if not inner and not strings and not spec.bare_runs_shell:
        return  # `env`, `nice`: print and run nothing
    seen.interpreters.add(fam)
    for s in strings:
        _read_shell(s, seen, depth + 1)
    if spec.joins_to_shell and not (spec.joins_unless & set(parsed.flags)):
        _read_shell(" ".join(inner), seen, depth + 1)
    else:
        _read(inner, seen, depth + 1)
    # defence in depth: an option grammar modelled in part may have taken an option's value for
    # the command; then read each later word that names a known program as a command too
    if inner and spec_for(_basename(inner[0])) is None:
        for k in range(1, len(inner)):
            if seen.budget < 0:
                break
            if spec_for(_basename(inner[k])) is not None:
                _read(inner[k:], seen, depth + 1)


def _read_find(words: Sequence[str], seen: _Seen, depth: int) -> None:
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word == "-delete":
            seen.flags.add("delete")
            seen.interpreters.add("find -delete")
            seen.recursive_delete = True
        elif word in ("-exec", "-execdir", "-ok", "-okdir"):
            seen.flags.add(word[1:])
            seen.interpreters.add(f"find {word}")
            inner: list[str] = []
            while i < len(words) and words[i] not in (";", "+"):
                inner.append(words[i])
                i += 1
            i += 1
            sub = _Seen(budget=seen.budget)
            _read(inner, sub, depth + 1)
            seen.budget = sub.budget
            seen.names |= sub.names
            seen.flags |= sub.flags
            seen.interpreters |= sub.interpreters
            if sub.recursive_delete or sub.names & DELETERS:
                seen.recursive_delete = True
        elif word.startswith("-") and len(word) > 1:
            seen.flags.add(word.lstrip("-"))


def _read_multicall(fam: str, argv: Sequence[str], seen: _Seen, depth: int) -> None:
    rest = list(argv[1:])
    if fam == "coreutils":
        progs = [w.split("=", 1)[1] for w in rest if w.startswith("--coreutils-prog=")]
        rest = [w for w in rest if not w.startswith("--coreutils-prog=")]
        inner = [progs[-1], *rest] if progs else []
    else:
        inner = rest if rest and not rest[0].startswith("-") else []
    if inner:
        seen.interpreters.add(fam)
        _read(inner, seen, depth + 1)


def _read_shell(code: str, seen: _Seen, depth: int) -> None:
    """Best effort (defence in depth, not a shell parser): split a shell string into simple
    commands and read each. An unsplittable string reads as nothing more: it is already marked
    as code."""
    if depth > MAX_DEPTH:
        return
    # what the string runs adds names, flags and recursive_delete, not interpreters: the shell
    # runs whatever the string says (`p=rm; $p -rf x` reads as nothing), so the form that runs
    # it ("sh -c") is what an operator allows, and the string's own commands are not forms
    sub = _Seen(budget=seen.budget)
    for words in _shell_commands(code):
        _read(words, sub, depth)
        for w in words:  # "$(rm -rf x)" or `rm -rf x` inside a quoted word
            for marker in ("$(", "`"):
                if marker in w:
                    _read_shell(w.split(marker, 1)[1], sub, depth + 1)
    seen.budget = sub.budget
    seen.names |= sub.names
    seen.flags |= sub.flags
    seen.recursive_delete = seen.recursive_delete or sub.recursive_delete


def _shell_commands(code: str) -> list[list[str]]:
    lexer = shlex.shlex(code.replace("\n", " ; "), posix=True, punctuation_chars=";&|()<>`")
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes
        return []
    commands: list[list[str]] = []
    current: list[str] = []
    skip = False
    for tok in tokens:
        if skip:
            skip = False
            continue
        if tok in _REDIRECTS or (tok[:-1].isdigit() and tok[-1:] in "<>"):
            skip = True
            continue
        if tok in _SHELL_SEPARATORS:
            if current:
                commands.append(current)
            current = []
            continue
        if not current and (tok in _KEYWORDS or _ASSIGNMENT.match(tok)):
            continue
        current.append(tok)
    if current:
        commands.append(current)
    return commands
