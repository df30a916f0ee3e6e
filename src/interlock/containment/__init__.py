"""Containment of a governed command (DESIGN I9): one cgroup v2 per execution, the governance
home out of the command's reach, and no signal or ptrace from the command to its supervisor.

    >>> settings = Settings()                                    # [exec] of interlock.toml
    >>> settings.mode
    'full'
    >>> box = prepare(settings, home=Path("/srv/ilk"), cwd=Path.cwd())     # doctest: +SKIP
    >>> subprocess.Popen(argv, preexec_fn=box.enter, ...)                   # doctest: +SKIP
    >>> box.kill(); box.release()                                           # doctest: +SKIP

Modes (``[exec] containment``), the weaker ones named so that nobody picks one by accident:

* ``full`` (default) — a cgroup v2 per execution (terminated with ``cgroup.kill``; over when
  ``populated 0``) **and** key isolation, by one of:

  - *a masked home* (a supervisor with ``CAP_SYS_ADMIN``, e.g. root): the command gets its own
    mount namespace in which an empty, read-only tmpfs lies over the home; Landlock lets it read
    everything but ``/dev`` (a few safe devices excepted) and write only its working directory,
    the temporary directories and ``[exec] writable``; it cannot mount or unmount, signal or
    ptrace anything outside its sandbox; a command started as root also loses every capability
    (bounding set emptied), so it cannot load a module or open files by handle;
  - *Landlock alone* (no ``CAP_SYS_ADMIN``): the same, but the home is left out of the rules
    (rules on the siblings of each directory on its way from ``/``), so the directories above
    the home can be neither listed nor written at their top level;
  - ``run_as``: the command runs as another, unprivileged user with ``no_new_privs`` (the
    home's files are the operator's, mode 0600/0700).

  Missing any of it: :class:`~interlock.errors.ContainmentUnavailable`
  (``CONTAINMENT_UNAVAILABLE``).
* ``unsafe-no-key-isolation`` — the cgroup, no key isolation: the command can read the home's
  keys and kill its supervisor.
* ``unsafe-process-group`` — neither: a process group killed with ``killpg``, which a
  ``setsid`` descendant escapes. Only for machines with no cgroup v2 at all.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import secrets
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from interlock.containment.cgroup import CgroupError, CgroupRoot, ExecCgroup, Limits, find_root
from interlock.containment.landlock import LandlockError, Ruleset, abi_version, plan_rules
from interlock.errors import ContainmentUnavailable

__all__ = [
    "FULL",
    "MODES",
    "NO_KEY_ISOLATION",
    "PROCESS_GROUP",
    "Box",
    "Settings",
    "describe",
    "prepare",
]

FULL = "full"
NO_KEY_ISOLATION = "unsafe-no-key-isolation"
PROCESS_GROUP = "unsafe-process-group"
MODES = (FULL, NO_KEY_ISOLATION, PROCESS_GROUP)

#: what a command may write by default besides the directories of ``[exec] writable``
DEFAULT_WRITABLE = (
    "/tmp",  # noqa: S108 - the command's scratch space, not ours
    "/var/tmp",  # noqa: S108
    "/dev/shm",  # noqa: S108
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/tty",
    "/dev/pts",
    "/dev/ptmx",
)
#: what a command may read besides everything outside ``/dev`` and the home
DEFAULT_DEVICES = ("/dev/random", "/dev/urandom")


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """``[exec]`` of ``interlock.toml``."""

    mode: str = FULL
    #: a cgroup2 directory to make execution cgroups in (default: found at run time)
    cgroup_root: Path | None = None
    #: directories the command may write besides its working directory and DEFAULT_WRITABLE
    writable: tuple[Path, ...] = ()
    #: run the command as this user (name or uid), with no_new_privs
    run_as: str | None = None
    limits: Limits = field(default_factory=Limits)


#: how long a found cgroup root and a built Landlock ruleset are reused (seconds)
REUSE_S = 5.0
_T = TypeVar("_T")
_reuse_lock = threading.Lock()
_reused: dict[tuple[Any, ...], tuple[float, Any]] = {}


def _reuse(key: tuple[Any, ...], build: Callable[[], _T]) -> _T:
    """``build()``, or what it returned for the same ``key`` less than :data:`REUSE_S` ago.

    Only for what goes stale towards *less* access: a ruleset grants inodes, so a directory
    made since is not granted and one replaced since is not reachable through the old rule;
    a cgroup root that has gone makes the cgroup's creation fail. Saves ~1.5 ms an execution.
    """
    now = time.monotonic()
    with _reuse_lock:
        hit = _reused.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]  # type: ignore[no-any-return]
    value = build()
    with _reuse_lock:
        for k in [k for k, (until, _) in _reused.items() if until <= now]:
            del _reused[k]  # a dropped Ruleset closes its descriptor when no Box holds it
        _reused[key] = (now + REUSE_S, value)
    return value


def _cgroup(settings: Settings) -> CgroupRoot:
    try:
        return _reuse(("cgroup", settings.cgroup_root), lambda: find_root(settings.cgroup_root))
    except CgroupError as exc:
        raise ContainmentUnavailable(
            f"no cgroup v2 for the execution: {exc.strerror or exc}; "
            f'or set [exec] containment = "{PROCESS_GROUP}" in interlock.toml (weaker: a'
            " setsid descendant escapes)"
        ) from exc


def describe(settings: Settings) -> dict[str, Any]:
    """What containment this node can enforce now, for the runtime attestation and
    ``interlock attest show``: the mode chosen, whether it is available, and what it rests on.
    Never raises."""
    out: dict[str, Any] = {"mode": settings.mode, "landlock_abi": abi_version()}
    try:
        root = find_root(settings.cgroup_root)
        out["cgroup"] = str(root.container)
    except CgroupError as exc:
        out["cgroup"] = None
        out["cgroup_problem"] = exc.strerror or str(exc)
    out["run_as"] = settings.run_as
    problem = None
    if settings.mode in (FULL, NO_KEY_ISOLATION) and out["cgroup"] is None:
        problem = "no writable cgroup v2"
    elif settings.mode == FULL and settings.run_as is None and out["landlock_abi"] < 1:
        problem = "no key isolation: Landlock is unavailable and no run_as user is set"
    out["available"] = problem is None
    if problem is not None:
        out["problem"] = problem
    return out


def _user(spec: str) -> tuple[int, int]:
    try:
        pw = pwd.getpwuid(int(spec)) if spec.isdigit() else pwd.getpwnam(spec)
    except (KeyError, ValueError) as exc:
        raise ContainmentUnavailable(f"run_as: no such user {spec!r}") from exc
    if pw.pw_uid == 0:
        raise ContainmentUnavailable("run_as must name an unprivileged user, not root")
    return pw.pw_uid, pw.pw_gid


_CLONE_NEWNS = 0x00020000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REC, _MS_PRIVATE = 0x4000, 1 << 18
_MS_MASK = _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
_CAP_SYS_ADMIN = 21
_PR_SET_PDEATHSIG = 1
_PR_CAPBSET_DROP = 24
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4


def _can_mask() -> bool:
    """Whether this process may make a mount namespace (``CAP_SYS_ADMIN`` in effect)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> _CAP_SYS_ADMIN & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


def _last_cap() -> int:
    try:
        return int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        return 40


_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


class Box:
    """The containment of one execution, prepared in the supervisor before the command is
    spawned. :meth:`enter` runs in the forked child before exec; everything it needs was
    opened or computed here, so it only makes system calls."""

    def __init__(
        self,
        mode: str,
        cgroup: ExecCgroup | None,
        ruleset: Ruleset | None,
        user: tuple[int, int] | None,
        supervisor_pid: int,
        mask: Path | None = None,
    ) -> None:
        self.mode = mode
        #: the home, hidden under an empty read-only tmpfs in the command's mount namespace
        self.mask = mask
        self._mask = None if mask is None else os.fsencode(mask)
        self.cgroup = cgroup
        self.ruleset = ruleset
        self.user = user
        self.supervisor_pid = supervisor_pid
        self._join = cgroup.open_join() if cgroup is not None else None
        self._drop_caps = user is None and os.geteuid() == 0 and mode == FULL
        self._last_cap = _last_cap()

    def record(self) -> dict[str, Any]:
        """What ``exec.start`` records about the containment."""
        rec: dict[str, Any] = {"mode": self.mode}
        if self.cgroup is not None:
            rec["cgroup"] = str(self.cgroup.path)
            if self.cgroup.limits_applied:
                rec["limits"] = list(self.cgroup.limits_applied)
        if self.ruleset is not None:
            rec["landlock_abi"] = self.ruleset.abi
        rec["home"] = "masked" if self.mask is not None else "landlock" if self.ruleset else "uid"
        if self.user is not None:
            rec["run_as"] = self.user[0]
        rec["capabilities_dropped"] = self._drop_caps
        return rec

    def enter(self) -> None:
        """In the child, before exec: join the cgroup, drop capabilities (root without
        ``run_as``), change user, die with the supervisor, then enforce Landlock. Any failure
        raises, and the command is not executed."""
        if self._join is not None:
            os.write(self._join, b"0")
        libc = _LIBC
        if self._mask is not None and libc is not None:
            if libc.unshare(_CLONE_NEWNS) != 0:
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
            # nothing below propagates back to the supervisor's namespace
            if libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
                raise OSError(ctypes.get_errno(), "mount --make-rprivate /")
            if (
                libc.mount(b"interlock-masked", self._mask, b"tmpfs", _MS_MASK, b"size=4k,mode=000")
                != 0
            ):
                raise OSError(ctypes.get_errno(), "mount tmpfs over the home")
        if self._drop_caps and libc is not None:
            for cap in range(self._last_cap + 1):
                if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                    raise OSError(ctypes.get_errno(), "PR_CAPBSET_DROP")
            libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
        if self.user is not None:
            uid, gid = self.user
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
        if libc is not None:  # after setuid, which clears it
            libc.prctl(_PR_SET_PDEATHSIG, 9, 0, 0, 0)
            if os.getppid() != self.supervisor_pid:
                os._exit(126)  # the supervisor died before the prctl took effect
        if self.ruleset is not None:
            self.ruleset.restrict_self()
        elif self.user is not None and libc is not None:
            libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS

    def kill(self) -> bool:
        """Kill everything in the execution's cgroup. False without a cgroup (the caller
        signals the process group) or when it is already gone."""
        return self.cgroup.kill() if self.cgroup is not None else False

    def release(self) -> None:
        """After the execution: remove the cgroup once empty (a cgroup still populated is
        killed first). The ruleset may be shared with other executions (``_reuse``): it is
        closed when the last holder drops it."""
        if self.cgroup is not None:
            if self.cgroup.populated():
                self.cgroup.kill()
                self.cgroup.wait_empty(2.0)
            self.cgroup.remove()


def cgroup_name(supervisor_pid: int, start_ticks: int) -> str:  # see cgroup.NAME_RE
    """An execution cgroup's name: its supervisor (pid and start time, so the reaper can tell
    whether it is gone) and a random part."""
    return f"s{supervisor_pid}-{start_ticks}-{secrets.token_hex(6)}"


def prepare(settings: Settings, *, home: Path, cwd: Path, start_ticks: int = 0) -> Box:
    """Prepare the containment of one execution under ``settings`` (see the module doc).

    Raises:
        ContainmentUnavailable: the mode cannot be enforced here (no cgroup v2, no Landlock and
            no ``run_as``, an unknown user, a sandbox the kernel refused).
    """
    if settings.mode not in MODES:
        raise ContainmentUnavailable(f"unknown [exec] containment mode {settings.mode!r}")
    user = _user(settings.run_as) if settings.run_as is not None else None
    if user is not None and os.geteuid() != 0:
        raise ContainmentUnavailable("run_as needs the supervisor to run as root")
    home_real = Path(os.path.realpath(home))
    cwd_real = Path(os.path.realpath(cwd))
    if settings.mode != PROCESS_GROUP and (cwd_real == home_real or home_real in cwd_real.parents):
        # a working directory inside the home would be a way into it past the mask
        raise ContainmentUnavailable(
            f"the working directory {cwd_real} is inside the governance home: run the command"
            " from elsewhere"
        )
    if settings.mode == PROCESS_GROUP:
        return Box(PROCESS_GROUP, None, None, user, os.getpid())
    root = _cgroup(settings)
    ruleset: Ruleset | None = None
    mask: Path | None = None
    if settings.mode == FULL and user is None:
        if abi_version() < 1:
            raise ContainmentUnavailable(
                "no key isolation: this kernel offers no Landlock; run the command as another"
                " user (--run-as USER / [exec] run_as) or set [exec] containment ="
                f' "{NO_KEY_ISOLATION}" (weaker: the command can read the keys)'
            )
        mask = home_real if _can_mask() else None
        writable = [cwd, *settings.writable, *(Path(p) for p in DEFAULT_WRITABLE)]
        readable = [
            *(p for p in Path("/").iterdir() if p.name != "dev"),
            *(Path(p) for p in DEFAULT_DEVICES),
        ]
        # a masked home is hidden by the mount; otherwise Landlock leaves it out
        excluded = () if mask is not None else (home_real,)
        try:
            ruleset = _reuse(
                ("landlock", excluded, tuple(readable), tuple(writable)),
                lambda: Ruleset.build(
                    plan_rules(
                        excluded=excluded,
                        readable=[p for p in readable if os.path.lexists(p)],
                        writable=[p for p in writable if os.path.lexists(p)],
                    )
                ),
            )
        except (LandlockError, OSError) as exc:
            raise ContainmentUnavailable(f"the Landlock sandbox could not be built: {exc}") from exc
    pid = os.getpid()
    try:
        cg = ExecCgroup.create(root, cgroup_name(pid, start_ticks), settings.limits)
    except (CgroupError, ValueError) as exc:
        raise ContainmentUnavailable(f"the execution cgroup could not be made: {exc}") from exc
    try:
        return Box(settings.mode, cg, ruleset, user, pid, mask)
    except OSError as exc:
        with contextlib.suppress(OSError):
            cg.remove()
        raise ContainmentUnavailable(f"the execution cgroup could not be joined: {exc}") from exc
