"""Landlock (Linux ≥ 5.13) through its three system calls: the governed command may read and
run what lies outside the governance home, write only where it is allowed to, and never signal
or ptrace a process outside its sandbox (ABI 6 signal scoping).

    >>> abi_version() >= 0                          # 0: no Landlock on this kernel
    True
    >>> rules = plan_rules(excluded=[Path("/nonexistent/home")], readable=[Path("/nonexistent")])
    >>> rules                                       # an ancestor of the home gets no rule
    []
    >>> ruleset = Ruleset.build(rules)              # doctest: +SKIP
    >>> ruleset.restrict_self()                     # in the child, before exec  # doctest: +SKIP

Why a small ctypes wrapper and not a binding: the one binding on PyPI (``landlock`` 1.0.0.dev5)
is an alpha that stops at ABI 5; Interlock needs ABI 6's ``LANDLOCK_SCOPE_SIGNAL`` so that a
command cannot kill its own supervisor or watchdog. The interface is four structures and three
system calls (Documentation/userspace-api/landlock.rst; include/uapi/linux/landlock.h).

**Landlock only grants.** A rule on a directory grants its whole subtree, so "everything but the
home" is written as rules on the *siblings* of each directory on the way from ``/`` down to the
home (:func:`plan_rules`); the home and its ancestors get no rule of their own. Consequences the
docs state: the ancestors of the home cannot be listed, and a file created later directly in an
ancestor (or in a writable directory that contains the home) is out of reach of the command.
Symbolic links get no rule (access through one is checked at its target).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "READ",
    "WRITE",
    "LandlockError",
    "Rule",
    "Ruleset",
    "abi_version",
    "plan_rules",
]

# include/uapi/linux/landlock.h
_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446  # every architecture
_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
REMOVE_DIR = 1 << 4
REMOVE_FILE = 1 << 5
MAKE_CHAR = 1 << 6
MAKE_DIR = 1 << 7
MAKE_REG = 1 << 8
MAKE_SOCK = 1 << 9
MAKE_FIFO = 1 << 10
MAKE_BLOCK = 1 << 11
MAKE_SYM = 1 << 12
REFER = 1 << 13  # ABI 2
TRUNCATE = 1 << 14  # ABI 3
IOCTL_DEV = 1 << 15  # ABI 5

SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6

#: read and run
READ = EXECUTE | READ_FILE | READ_DIR
#: everything else a command does to files (creation of device nodes included, so that it is
#: handled, i.e. denied, outside the writable directories)
WRITE = (
    WRITE_FILE
    | REMOVE_DIR
    | REMOVE_FILE
    | MAKE_CHAR
    | MAKE_DIR
    | MAKE_REG
    | MAKE_SOCK
    | MAKE_FIFO
    | MAKE_BLOCK
    | MAKE_SYM
    | REFER
    | TRUNCATE
)
#: the rights that apply to a file that is not a directory
_FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV


class LandlockError(OSError):
    """Landlock is unavailable, or a rule could not be built or enforced."""


def _handled_fs(abi: int) -> int:
    rights = READ | WRITE & ~(REFER | TRUNCATE)
    if abi >= 2:
        rights |= REFER
    if abi >= 3:
        rights |= TRUNCATE
    if abi >= 5:
        rights |= IOCTL_DEV
    return rights


def _load_syscall() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_long
    return fn


_SYSCALL = _load_syscall()
_PRCTL = None if _SYSCALL is None else ctypes.CDLL(None, use_errno=True).prctl


def abi_version() -> int:
    """The Landlock ABI the kernel offers; 0 when it offers none (not Linux, too old a
    kernel, or Landlock disabled at boot). Never raises."""
    if _SYSCALL is None:
        return 0
    r = _SYSCALL(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), _CREATE_RULESET_VERSION)
    return int(r) if r > 0 else 0


class _RulesetAttr(ctypes.Structure):
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = (
        ("allowed_access", ctypes.c_uint64),
        ("parent_fd", ctypes.c_int32),
    )


@dataclass(frozen=True, slots=True)
class Rule:
    """``rights`` on ``path`` and everything beneath it."""

    path: Path
    rights: int


def _is_under(path: Path, top: Path) -> bool:
    return path == top or top in path.parents


def _expand(
    top: Path, rights: int, excluded: Sequence[Path], out: list[Rule], budget: list[int]
) -> None:
    """Rules granting ``rights`` on ``top`` except on every path of ``excluded``."""
    if any(_is_under(top, x) for x in excluded):
        return  # the excluded path itself, or inside it
    if not any(_is_under(x, top) for x in excluded):
        out.append(Rule(top, rights))
        return
    # an ancestor of an excluded path: no rule on it, rules on each of its entries
    try:
        names = sorted(os.listdir(top))
    except OSError:
        return
    budget[0] -= len(names)
    if budget[0] < 0:
        raise LandlockError(
            errno.E2BIG,
            f"too many entries beside the governance home under {top}: move the home to a"
            " directory of its own (for example /var/lib/interlock)",
        )
    for name in names:
        entry = top / name
        try:
            st = os.lstat(entry)
        except OSError:
            continue
        if stat.S_ISLNK(st.st_mode):
            continue  # access through a link is checked where it points
        _expand(entry, rights, excluded, out, budget)


#: at most this many directory entries are expanded into rules (each is two system calls)
MAX_EXPANDED = 20_000


def plan_rules(
    *,
    excluded: Iterable[Path],
    readable: Iterable[Path] = (Path("/"),),
    writable: Iterable[Path] = (),
) -> list[Rule]:
    """The rules of a sandbox: read and run under each ``readable`` path, read, run and write
    under each ``writable`` path, nothing at all under an ``excluded`` one (the home). Paths
    must be absolute; they are resolved first. Reads the directories on the way to each
    excluded path (their entries become rules).

    Raises:
        LandlockError: more than :data:`MAX_EXPANDED` entries to expand.
    """
    ex = [Path(os.path.realpath(p)) for p in excluded]
    rules: list[Rule] = []
    budget = [MAX_EXPANDED]
    for p in readable:
        _expand(Path(os.path.realpath(p)), READ, ex, rules, budget)
    for p in writable:
        _expand(Path(os.path.realpath(p)), READ | WRITE | IOCTL_DEV, ex, rules, budget)
    return rules


class Ruleset:
    """A Landlock ruleset file descriptor, built in the supervisor and enforced by the child
    (:meth:`restrict_self` is async-signal-safe enough for ``preexec_fn``: two ``prctl``/
    ``syscall`` calls, no allocation beyond ctypes' argument conversion)."""

    def __init__(self, fd: int, abi: int, rules: int) -> None:
        self.fd = fd
        self.abi = abi
        self.rules = rules

    @classmethod
    def build(cls, rules: Iterable[Rule], *, scope_signals: bool = True) -> Ruleset:
        """A ruleset handling every filesystem right of the kernel's ABI (and, from ABI 6,
        signals and abstract UNIX sockets to processes outside the sandbox), granting ``rules``.
        A rule whose path vanished meanwhile is skipped.

        Raises:
            LandlockError: Landlock is unavailable, or the kernel refused the ruleset or a rule.
        """
        abi = abi_version()
        if abi < 1 or _SYSCALL is None:
            raise LandlockError(errno.ENOSYS, "Landlock is not available on this kernel")
        handled = _handled_fs(abi)
        attr = _RulesetAttr(handled_access_fs=handled, handled_access_net=0, scoped=0)
        size = 8 if abi < 4 else 16
        if abi >= 6 and scope_signals:
            attr.scoped = SCOPE_SIGNAL | SCOPE_ABSTRACT_UNIX_SOCKET
            size = 24
        fd = int(_SYSCALL(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), 0))
        if fd < 0:
            e = ctypes.get_errno()
            raise LandlockError(e, f"landlock_create_ruleset: {os.strerror(e)}")
        os.set_inheritable(fd, False)
        n = 0
        try:
            for rule in rules:
                try:
                    pfd = os.open(rule.path, os.O_PATH | os.O_CLOEXEC | os.O_NOFOLLOW)
                except OSError:
                    continue
                try:
                    is_dir = stat.S_ISDIR(os.fstat(pfd).st_mode)
                    allowed = rule.rights & handled & (~0 if is_dir else _FILE_RIGHTS)
                    if not allowed:
                        continue
                    pb = _PathBeneathAttr(allowed_access=allowed, parent_fd=pfd)
                    r = _SYSCALL(_SYS_ADD_RULE, fd, _RULE_PATH_BENEATH, ctypes.byref(pb), 0)
                    if r != 0:
                        e = ctypes.get_errno()
                        raise LandlockError(e, f"landlock_add_rule {rule.path}: {os.strerror(e)}")
                    n += 1
                finally:
                    os.close(pfd)
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, abi, n)

    def restrict_self(self) -> None:
        """Enforce the ruleset on the calling thread (the forked child, before exec), after
        ``no_new_privs``.

        Raises:
            LandlockError: the kernel refused.
        """
        if _PRCTL is None or _SYSCALL is None:
            raise LandlockError(errno.ENOSYS, "Landlock is not available")
        if _PRCTL(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise LandlockError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if _SYSCALL(_SYS_RESTRICT_SELF, self.fd, 0) != 0:
            raise LandlockError(ctypes.get_errno(), "landlock_restrict_self failed")

    def close(self) -> None:
        """Close the descriptor (once: a number closed twice could be another file's)."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __del__(self) -> None:
        self.close()
