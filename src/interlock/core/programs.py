"""The programs Interlock knows how to read a command line of: their option grammar and what they
do with their arguments. Pure data, used by :mod:`interlock.core.command`.

    >>> spec_for("python3.11").kind is Kind.INTERPRETER
    True
    >>> spec_for("rm").longs["recursive"]
    'none'
    >>> spec_for("my-tool") is None
    True

Each entry follows the program's own manual (GNU coreutils, findutils, sudo, util-linux, bash,
CPython, perl, ruby, node). Where a grammar is only partly modelled the reader over-approximates:
it may see a flag or a command that is not there, never miss one the entry lists. Programs not
listed here get a generic reading (short clusters split, long options verbatim).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

__all__ = ["DELETERS", "MULTICALL", "Kind", "Program", "family", "spec_for"]


class Kind(enum.Enum):
    """What a program does with its operands."""

    #: an ordinary program: its flags are read, nothing in its arguments runs
    PLAIN = "plain"
    #: runs another command given in its arguments (env, nice, timeout, sudo, xargs, ...)
    WRAPPER = "wrapper"
    #: a shell: ``-c STRING`` runs STRING; otherwise a script file or stdin runs
    SHELL = "shell"
    #: a language interpreter: code in an option (``-c``, ``-e``), a module, a script or stdin
    INTERPRETER = "interpreter"
    #: find(1): ``-exec``/``-execdir``/``-ok``/``-okdir`` run commands, ``-delete`` deletes a tree
    FIND = "find"
    #: a multi-call binary named by its first argument (busybox rm ...) or by argv[0]
    MULTICALL = "multicall"


@dataclass(frozen=True, slots=True, kw_only=True)
class Program:
    """One program's option grammar (getopt / getopt_long terms) and behaviour.

    ``longs`` maps each long option to ``"none"``, ``"required"`` or ``"optional"`` (its
    argument); an unambiguous prefix is expanded to it, as getopt_long does. ``None``: long
    options are unknown and kept verbatim.
    """

    kind: Kind = Kind.PLAIN
    #: short options that take an argument (attached, ``-n5``, or the next word, ``-n 5``)
    with_arg: frozenset[str] = frozenset()
    #: short options whose argument, if any, is the rest of the word (``-i.bak``)
    optional_arg: frozenset[str] = frozenset()
    #: short options whose argument, if any, is the digits that follow (perl ``-l``, ``-0``)
    digit_arg: frozenset[str] = frozenset()
    longs: Mapping[str, str] | None = None
    #: GNU permutation: options may follow operands (``rm x -r``); otherwise the first operand
    #: ends the options
    permute: bool = False
    #: ``+x`` is an option too (shells)
    plus_options: bool = False
    #: options that end option parsing once read (python ``-c``/``-m``)
    terminal: frozenset[str] = frozenset()
    #: options whose argument is code, and the form it is recorded as (``{"c": "-c"}``)
    code: Mapping[str, str] = field(default_factory=dict)
    #: options whose argument is a module run as the program (python ``-m``)
    module: Mapping[str, str] = field(default_factory=dict)
    #: the first operand is code unless one of these options gave a program file (awk)
    code_operand_unless: frozenset[str] | None = None
    #: wrapper: operands skipped before the command (``timeout DURATION cmd``)
    positionals: int = 0
    #: wrapper: ``NAME=VALUE`` operands before the command are skipped (env, sudo)
    assignments: bool = False
    #: wrapper: options whose argument is a shell command string (``su -c``, ``flock -c``)
    shell_string: frozenset[str] = frozenset()
    #: wrapper: options whose argument is split into words that start the command (``env -S``)
    split_string: frozenset[str] = frozenset()
    #: wrapper: the command words are joined and run by a shell (watch, eval)
    joins_to_shell: bool = False
    #: ... unless one of these options is given (``watch -x``)
    joins_unless: frozenset[str] = frozenset()
    #: wrapper: with no command it runs a shell (su, sudo -s, chroot)
    bare_runs_shell: bool = False
    #: options that make the program print rather than run anything (``--version``)
    inert: frozenset[str] = frozenset({"version", "help"})


def _longs(**kinds: str) -> Mapping[str, str]:
    return MappingProxyType({k.replace("_", "-"): v for k, v in kinds.items()})


def _set(chars: str) -> frozenset[str]:
    return frozenset(chars)


_N, _R, _O = "none", "required", "optional"

# GNU coreutils rm(1)
_RM = Program(
    permute=True,
    longs=_longs(
        force=_N,
        interactive=_O,
        one_file_system=_N,
        no_preserve_root=_N,
        preserve_root=_O,
        recursive=_N,
        dir=_N,
        verbose=_N,
        help=_N,
        version=_N,
    ),
)

_SHELL = Program(
    kind=Kind.SHELL,
    with_arg=_set("oO"),
    plus_options=True,
    longs=_longs(
        login=_N,
        norc=_N,
        noprofile=_N,
        rcfile=_R,
        init_file=_R,
        posix=_N,
        restricted=_N,
        verbose=_N,
        version=_N,
        help=_N,
        noediting=_N,
        debugger=_N,
        dump_strings=_N,
        dump_po_strings=_N,
        pretty_print=_N,
        rpm_requires=_N,
        wordexp=_N,
    ),
)

# CPython: python [option] ... [-c cmd | -m mod | file | -] [arg] ...
_PYTHON = Program(
    kind=Kind.INTERPRETER,
    with_arg=_set("cmWX"),
    terminal=_set("cm"),
    code={"c": "-c"},
    module={"m": "-m"},
    longs=_longs(help=_N, help_env=_N, help_xoptions=_N, help_all=_N, version=_N),
    inert=frozenset({"version", "help", "V", "h"}),
)

_PERL = Program(
    kind=Kind.INTERPRETER,
    with_arg=_set("eEI"),
    optional_arg=_set("CdDFimMxV"),
    digit_arg=_set("0l"),
    code={"e": "-e", "E": "-E"},
    longs=_longs(help=_N, version=_N),
    inert=frozenset({"version", "help", "v", "h"}),
)

_RUBY = Program(
    kind=Kind.INTERPRETER,
    with_arg=_set("erICE"),
    optional_arg=_set("xFiWTK"),
    digit_arg=_set("0"),
    code={"e": "-e"},
    longs=_longs(
        enable=_R,
        disable=_R,
        encoding=_R,
        external_encoding=_R,
        internal_encoding=_R,
        dump=_R,
        yjit=_N,
        jit=_N,
        verbose=_N,
        copyright=_N,
        version=_N,
        help=_N,
    ),
    inert=frozenset({"version", "help", "v", "h", "copyright"}),
)

_NODE = Program(
    kind=Kind.INTERPRETER,
    with_arg=_set("eprC"),
    code={"e": "-e", "eval": "-e", "p": "-p", "print": "-p"},
    longs=_longs(
        eval=_R,
        print=_R,
        require=_R,
        input_type=_R,
        conditions=_R,
        title=_R,
        loader=_R,
        experimental_loader=_R,
        inspect_port=_R,
        stack_size=_R,
        max_old_space_size=_R,
        env_file=_R,
        check=_N,
        interactive=_N,
        version=_N,
        help=_N,
    ),
    inert=frozenset({"version", "help", "v", "h"}),
)

# POSIX awk / gawk / mawk: the program text is the first operand unless -f names a file
_AWK = Program(
    kind=Kind.INTERPRETER,
    with_arg=_set("fvFEil"),
    code_operand_unless=frozenset({"f", "file", "E", "exec"}),
    longs=None,
)

_PHP = Program(kind=Kind.INTERPRETER, with_arg=_set("rBRFEcdz"), code={"r": "-r"}, longs=None)
_LUA = Program(kind=Kind.INTERPRETER, with_arg=_set("el"), code={"e": "-e"}, longs=None)
_RSCRIPT = Program(kind=Kind.INTERPRETER, with_arg=_set("e"), code={"e": "-e"}, longs=None)

_FIND = Program(kind=Kind.FIND, with_arg=_set("D"), optional_arg=_set("O"))

_ENV = Program(
    kind=Kind.WRAPPER,
    with_arg=_set("uCS"),
    assignments=True,
    split_string=frozenset({"S", "split-string"}),
    longs=_longs(
        ignore_environment=_N,
        null=_N,
        unset=_R,
        chdir=_R,
        split_string=_R,
        block_signal=_O,
        default_signal=_O,
        ignore_signal=_O,
        list_signal_handling=_N,
        debug=_N,
        help=_N,
        version=_N,
    ),
)
_NICE = Program(kind=Kind.WRAPPER, with_arg=_set("n"), longs=_longs(adjustment=_R, help=_N))
_TIMEOUT = Program(
    kind=Kind.WRAPPER,
    with_arg=_set("sk"),
    positionals=1,
    longs=_longs(signal=_R, kill_after=_R, preserve_status=_N, foreground=_N, verbose=_N, help=_N),
)
_XARGS = Program(
    kind=Kind.WRAPPER,
    with_arg=_set("adEILnPs"),
    optional_arg=_set("eil"),
    longs=_longs(
        null=_N,
        arg_file=_R,
        delimiter=_R,
        eof=_O,
        replace=_O,
        max_lines=_O,
        max_args=_R,
        max_procs=_R,
        max_chars=_R,
        interactive=_N,
        no_run_if_empty=_N,
        verbose=_N,
        exit=_N,
        show_limits=_N,
        process_slot_var=_R,
        open_tty=_N,
        help=_N,
        version=_N,
    ),
)
_SUDO = Program(
    kind=Kind.WRAPPER,
    with_arg=_set("ugCDhprtTU"),
    assignments=True,
    bare_runs_shell=True,
    longs=_longs(
        user=_R,
        group=_R,
        close_from=_R,
        chdir=_R,
        host=_R,
        prompt=_R,
        role=_R,
        type=_R,
        command_timeout=_R,
        other_user=_R,
        askpass=_N,
        background=_N,
        preserve_env=_O,
        edit=_N,
        set_home=_N,
        login=_N,
        remove_timestamp=_N,
        reset_timestamp=_N,
        list=_N,
        non_interactive=_N,
        preserve_groups=_N,
        stdin=_N,
        shell=_N,
        validate=_N,
        version=_N,
        help=_N,
    ),
)
_DOAS = Program(kind=Kind.WRAPPER, with_arg=_set("uC"), bare_runs_shell=True, longs=None)
_SU = Program(
    kind=Kind.WRAPPER,
    with_arg=_set("csgGw"),
    shell_string=frozenset({"c", "command", "session-command"}),
    bare_runs_shell=True,
    positionals=1_000_000,  # every operand is the user or the shell's arguments, never a command
    longs=_longs(
        command=_R,
        session_command=_R,
        shell=_R,
        group=_R,
        supp_group=_R,
        whitelist_environment=_R,
        login=_N,
        preserve_environment=_N,
        pty=_N,
        help=_N,
        version=_N,
    ),
)
_SETSID = Program(kind=Kind.WRAPPER, longs=_longs(ctty=_N, fork=_N, wait=_N, help=_N))
_STDBUF = Program(
    kind=Kind.WRAPPER, with_arg=_set("ioe"), longs=_longs(input=_R, output=_R, error=_R, help=_N)
)
_CHROOT = Program(
    kind=Kind.WRAPPER,
    positionals=1,
    bare_runs_shell=True,
    longs=_longs(userspec=_R, groups=_R, skip_chdir=_N, help=_N, version=_N),
)
_IONICE = Program(kind=Kind.WRAPPER, with_arg=_set("cnpPu"), longs=None)
_TASKSET = Program(kind=Kind.WRAPPER, positionals=1, longs=None)
_CHRT = Program(kind=Kind.WRAPPER, with_arg=_set("TPD"), positionals=1, longs=None)
_WATCH = Program(
    kind=Kind.WRAPPER,
    with_arg=_set("nq"),
    joins_to_shell=True,
    joins_unless=frozenset({"x", "exec"}),
    longs=_longs(
        interval=_R,
        differences=_O,
        exec=_N,
        chgexit=_N,
        equexit=_R,
        errexit=_N,
        beep=_N,
        color=_N,
        no_color=_N,
        no_title=_N,
        no_wrap=_N,
        precise=_N,
        no_rerun=_N,
        help=_N,
        version=_N,
    ),
)
_TIME = Program(
    kind=Kind.WRAPPER,
    with_arg=_set("fo"),
    longs=_longs(format=_R, output=_R, append=_N, portability=_N, quiet=_N, verbose=_N, help=_N),
)
_COMMAND = Program(kind=Kind.WRAPPER, longs=None)
_EXEC = Program(kind=Kind.WRAPPER, with_arg=_set("a"), longs=None)
_EVAL = Program(kind=Kind.WRAPPER, joins_to_shell=True, longs=None)
_FLOCK = Program(
    kind=Kind.WRAPPER,
    with_arg=_set("wEc"),
    positionals=1,
    shell_string=frozenset({"c", "command"}),
    longs=_longs(
        shared=_N,
        exclusive=_N,
        unlock=_N,
        nonblock=_N,
        timeout=_R,
        conflict_exit_code=_R,
        close=_N,
        command=_R,
        no_fork=_N,
        verbose=_N,
        help=_N,
        version=_N,
    ),
)
_TRACER = Program(kind=Kind.WRAPPER, with_arg=_set("eopsuEabIOPXSUnADFlL"), longs=None)
_PLAIN_WRAPPER = Program(kind=Kind.WRAPPER, longs=None)
# GNU parallel runs its command lines through a shell
_PARALLEL = Program(kind=Kind.WRAPPER, joins_to_shell=True, longs=None)
_MULTICALL = Program(kind=Kind.MULTICALL, longs=None)

_SHELLS: Final = ("sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "yash", "posh", "fish")
_SHELLS_C: Final = ("csh", "tcsh", "rbash", "pdksh", "oksh", "loksh")

_TABLE: Final[Mapping[str, Program]] = MappingProxyType(
    {
        "rm": _RM,
        "rsync": Program(permute=True, longs=None),
        **dict.fromkeys((*_SHELLS, *_SHELLS_C), _SHELL),
        "python": _PYTHON,
        "pypy": _PYTHON,
        "perl": _PERL,
        "ruby": _RUBY,
        "node": _NODE,
        "nodejs": _NODE,
        "awk": _AWK,
        "gawk": _AWK,
        "mawk": _AWK,
        "nawk": _AWK,
        "php": _PHP,
        "lua": _LUA,
        "luajit": _LUA,
        "Rscript": _RSCRIPT,
        "find": _FIND,
        "env": _ENV,
        "nice": _NICE,
        "nohup": _PLAIN_WRAPPER,
        "timeout": _TIMEOUT,
        "xargs": _XARGS,
        "sudo": _SUDO,
        "doas": _DOAS,
        "su": _SU,
        "runuser": _SU,
        "setsid": _SETSID,
        "stdbuf": _STDBUF,
        "chroot": _CHROOT,
        "ionice": _IONICE,
        "taskset": _TASKSET,
        "chrt": _CHRT,
        "watch": _WATCH,
        "time": _TIME,
        "command": _COMMAND,
        "builtin": _COMMAND,
        "exec": _EXEC,
        "eval": _EVAL,
        "flock": _FLOCK,
        "strace": _TRACER,
        "ltrace": _TRACER,
        "unbuffer": _PLAIN_WRAPPER,
        "fakeroot": _PLAIN_WRAPPER,
        "eatmydata": _PLAIN_WRAPPER,
        "nocache": _PLAIN_WRAPPER,
        "torsocks": _PLAIN_WRAPPER,
        "proxychains": _PLAIN_WRAPPER,
        "proxychains4": _PLAIN_WRAPPER,
        "catchsegv": _PLAIN_WRAPPER,
        "unshare": _PLAIN_WRAPPER,
        "nsenter": _PLAIN_WRAPPER,
        "prlimit": _PLAIN_WRAPPER,
        "systemd-run": _PLAIN_WRAPPER,
        "firejail": _PLAIN_WRAPPER,
        "parallel": _PARALLEL,
        "busybox": _MULTICALL,
        "toybox": _MULTICALL,
        "coreutils": _MULTICALL,
    }
)

#: binaries that act as the program named by argv[0] (or by their first argument)
MULTICALL: Final = frozenset({"busybox", "toybox", "coreutils"})
#: programs that delete what they are given: run by ``find -exec`` over a tree, a recursive delete
DELETERS: Final = frozenset({"rm", "unlink", "rmdir", "shred"})

# versioned interpreter names: python3.12, pypy3, perl5.36.0, ruby3.1
_VERSIONED = re.compile(r"^(python|pypy|perl|ruby|lua|php|tclsh|wish)(\d+)?(?:[.\-]\d+)*\Z")


def family(name: str) -> str:
    """The name an interpreter is recorded under: ``python3.12`` -> ``python3``, ``perl5.36.0``
    -> ``perl5``; other names unchanged.

        >>> family("python3.12"), family("python"), family("rm")
        ('python3', 'python', 'rm')
    """
    m = _VERSIONED.match(name)
    if m is None:
        return name
    return m.group(1) + (m.group(2) or "")


def spec_for(name: str) -> Program | None:
    """The grammar of the program called ``name`` (a basename), or None if Interlock does not
    know it."""
    found = _TABLE.get(name)
    if found is not None:
        return found
    m = _VERSIONED.match(name)
    return _TABLE.get(m.group(1)) if m is not None else None
