"""One cgroup v2 per governed execution: everything the command starts lives in it, whatever
session or process group it makes, and ``cgroup.kill`` ends all of it at once.

    >>> root = find_root()                                  # doctest: +SKIP
    >>> cg = ExecCgroup.create(root, cgroup_name(os.getpid(), 0))      # doctest: +SKIP
    >>> fd = cg.open_join()  # the child writes b"0" to it before exec  # doctest: +SKIP
    >>> cg.kill(); cg.wait_empty(1.0); cg.remove()           # doctest: +SKIP
    >>> NAME_RE.match("s1234-99887766-0123456789ab") is not None
    True

Where: a writable cgroup2 mount found at run time from ``/proc/self/mountinfo``; inside it the
cgroup this process is in (a delegated subtree on a systemd host) when that is writable, else
the mount's root. Executions are ``<base>/interlock/<execution id>``.

Limits (``pids.max``, ``memory.max``, ``cpu.max``) are written when their controller is
available to the execution's cgroup (enabled, or enabled here, in ``interlock/``'s
``cgroup.subtree_control``); which ones took is reported, never assumed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CONTAINER",
    "CgroupError",
    "CgroupRoot",
    "ExecCgroup",
    "Limits",
    "cgroup_of",
    "execution_cgroup",
    "find_root",
    "kill_and_remove",
    "mount_options",
    "sweep",
]

#: the directory under the base that holds one cgroup per execution
CONTAINER = "interlock"

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")


class CgroupError(OSError):
    """No writable cgroup v2, or a cgroup operation failed."""


@dataclass(frozen=True, slots=True)
class CgroupRoot:
    """Where execution cgroups are made: ``base / CONTAINER / <id>``."""

    mount: Path
    base: Path

    @property
    def container(self) -> Path:
        return self.base / CONTAINER


def _cgroup2_mounts(mountinfo: str) -> list[Path]:
    """The cgroup2 mount points in a ``/proc/self/mountinfo`` text, in order."""
    found: list[Path] = []
    for line in mountinfo.splitlines():
        pre, sep, post = line.partition(" - ")
        if not sep:
            continue
        fields = pre.split()
        if len(fields) >= 5 and post.split(" ", 1)[0] == "cgroup2":
            # octal escapes (\040 for a space) in the mount point
            found.append(Path(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[4])))
    return found


def mount_options(mount: Path) -> frozenset[str]:
    """The superblock options of the cgroup2 mount at ``mount`` (empty if not found).

    ``favordynmods`` matters for the start of each execution: without it the first move of a
    process into a new cgroup waits for an RCU grace period (~10-15 ms measured here);
    ``mount -o remount,favordynmods`` or the boot option ``cgroup_favordynmods=true`` removes
    that wait.
    """
    try:
        text = Path("/proc/self/mountinfo").read_text(encoding="utf-8")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        sup = line.partition(" - ")[2].split()
        if len(sup) >= 3 and _cgroup2_mounts(line) == [mount]:
            return frozenset(sup[2].split(","))
    return frozenset()


def cgroup_of(pid: int | str = "self") -> str | None:
    """The cgroup v2 path (``0::/...``) of a process, or None."""
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text(encoding="utf-8")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("0::"):
            return line[3:] or "/"
    return None


def _usable(directory: Path) -> bool:
    return (directory / "cgroup.procs").exists() and os.access(directory, os.W_OK | os.X_OK)


def find_root(configured: Path | None = None) -> CgroupRoot:
    """A writable cgroup v2 place for execution cgroups.

    ``configured`` (``[exec] cgroup_root``): use that directory of a cgroup2 mount. Otherwise
    each cgroup2 mount is tried: first this process's own cgroup in it (a delegated subtree),
    then the mount's root.

    Raises:
        CgroupError: none is writable (no cgroup2 mount, not root and nothing delegated),
            or the ``cgroup.kill`` file is missing (kernel older than 5.14).
    """
    try:
        mounts = _cgroup2_mounts(Path("/proc/self/mountinfo").read_text(encoding="utf-8"))
    except OSError as exc:
        raise CgroupError(exc.errno or errno.ENOENT, "cannot read /proc/self/mountinfo") from exc
    if configured is not None:
        top = Path(os.path.realpath(configured))
        owner = next((m for m in mounts if m == top or m in top.parents), None)
        if owner is None or not _usable(top):
            raise CgroupError(
                errno.EACCES, f"[exec] cgroup_root {top} is not a writable cgroup v2 directory"
            )
        return _checked(CgroupRoot(owner, top))
    own = cgroup_of()
    for mount in mounts:
        candidates = []
        if own is not None and own != "/":
            candidates.append(mount / own.lstrip("/"))
        candidates.append(mount)
        for base in candidates:
            if _usable(base):
                return _checked(CgroupRoot(mount, base))
    if not mounts:
        raise CgroupError(errno.ENOENT, "no cgroup v2 filesystem is mounted")
    raise CgroupError(
        errno.EACCES,
        "no writable cgroup v2 directory (tried "
        + ", ".join(str(m) for m in mounts)
        + "): run as root, or delegate a subtree and set [exec] cgroup_root",
    )


def _checked(root: CgroupRoot) -> CgroupRoot:
    try:
        root.container.mkdir(mode=0o755, exist_ok=True)
    except OSError as exc:
        raise CgroupError(exc.errno or errno.EACCES, f"cannot create {root.container}") from exc
    if not (root.container / "cgroup.kill").exists():
        raise CgroupError(
            errno.ENOTSUP, f"{root.container} has no cgroup.kill (Linux 5.14 or newer is needed)"
        )
    return root


def _enable_controllers(container: Path, wanted: tuple[str, ...]) -> set[str]:
    """Enable ``wanted`` controllers for the children of ``container`` where its parent offers
    them; returns those now enabled."""
    try:
        available = set((container / "cgroup.controllers").read_text().split())
        enabled = set((container / "cgroup.subtree_control").read_text().split())
    except OSError:
        return set()
    for name in wanted:
        if name in available and name not in enabled:
            with contextlib.suppress(OSError):
                (container / "cgroup.subtree_control").write_text(f"+{name}")
                enabled.add(name)
    return enabled & set(wanted)


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Resource limits for one execution (None: not set)."""

    pids_max: int | None = None
    memory_max: int | None = None
    #: ``"QUOTA PERIOD"`` in microseconds, e.g. ``"50000 100000"`` for half a core
    cpu_max: str | None = None


class ExecCgroup:
    """The cgroup of one execution."""

    def __init__(self, path: Path, limits_applied: tuple[str, ...]) -> None:
        self.path = path
        self.limits_applied = limits_applied
        self._join: int | None = None

    @classmethod
    def create(cls, root: CgroupRoot, exec_id: str, limits: Limits | None = None) -> ExecCgroup:
        """Make ``<container>/<exec_id>`` and apply ``limits`` where the controllers allow.

        Raises:
            CgroupError: the directory could not be made (or already exists).
            ValueError: ``exec_id`` is not a plain name.
        """
        if not _ID_RE.match(exec_id):
            raise ValueError(f"not a cgroup name: {exec_id!r}")
        path = root.container / exec_id
        try:
            path.mkdir(mode=0o755)
        except OSError as exc:
            raise CgroupError(exc.errno or errno.EIO, f"cannot create cgroup {path}") from exc
        applied: list[str] = []
        if limits is not None:
            wanted = {
                "pids": limits.pids_max,
                "memory": limits.memory_max,
                "cpu": limits.cpu_max,
            }
            asked = tuple(k for k, v in wanted.items() if v is not None)
            on = _enable_controllers(root.container, asked) if asked else set()
            for name in asked:
                if name not in on:
                    continue
                value = wanted[name]
                with contextlib.suppress(OSError):
                    (path / f"{name}.max").write_text(str(value))
                    applied.append(f"{name}.max")
        return cls(path, tuple(applied))

    def open_join(self) -> int:
        """An fd of this cgroup's ``cgroup.procs`` for the child: writing ``b"0"`` to it moves
        the writer (before exec) and so everything it will start. Kept until :meth:`close`."""
        if self._join is None:
            self._join = os.open(self.path / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
        return self._join

    def procs(self) -> list[int]:
        """The pids in the cgroup now (empty if it is gone)."""
        try:
            return [int(x) for x in (self.path / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return []

    def populated(self) -> bool:
        """``populated`` of ``cgroup.events``: a process lives in it or below it. A cgroup
        that cannot be read counts as populated (the caller keeps killing)."""
        try:
            text = (self.path / "cgroup.events").read_text()
        except FileNotFoundError:
            return False
        except OSError:
            return True
        return "populated 1" in text

    def kill(self) -> bool:
        """``cgroup.kill``: SIGKILL to every process in the cgroup and below, atomically with
        respect to forks. False if the cgroup is gone."""
        try:
            (self.path / "cgroup.kill").write_text("1")
        except FileNotFoundError:
            return False
        return True

    def freeze(self, frozen: bool = True) -> None:
        """``cgroup.freeze``: stop (or thaw) every process in the cgroup.

        Raises:
            CgroupError: the cgroup cannot be frozen.
        """
        try:
            (self.path / "cgroup.freeze").write_text("1" if frozen else "0")
        except OSError as exc:
            raise CgroupError(exc.errno or errno.EIO, f"cannot freeze {self.path}") from exc

    def wait_empty(self, timeout: float) -> bool:
        """Wait until nothing lives in the cgroup; True if it emptied within ``timeout``."""
        deadline = time.monotonic() + timeout
        delay = 0.001
        while self.populated():
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.02)
        return True

    def remove(self) -> bool:
        """Remove the (empty) cgroup directory; False if it still holds processes."""
        self.close()
        return _rmdir_tree(self.path)

    def close(self) -> None:
        if self._join is not None:
            with contextlib.suppress(OSError):
                os.close(self._join)
            self._join = None


def _rmdir_tree(path: Path) -> bool:
    """Remove an empty cgroup and the empty cgroups below it (a nested execution's), deepest
    first. False if one still holds a process."""
    try:
        below = [Path(d) for d, _subdirs, _files in os.walk(path, topdown=False)]
    except OSError:
        below = [path]
    ok = True
    for d in below:
        try:
            d.rmdir()
        except FileNotFoundError:
            continue
        except OSError:
            ok = False
    return ok


#: an execution cgroup's name: ``s<supervisor pid>-<its start time in ticks>-<random hex>``
NAME_RE = re.compile(r"^s([0-9]{1,10})-([0-9]{1,20})-[0-9a-f]{12}\Z")


def sweep(root: CgroupRoot, alive: Callable[[int, int], bool]) -> list[Path]:
    """Kill and remove every execution cgroup under ``root`` whose supervisor is gone
    (``alive(pid, start_ticks)`` is False): nothing of a command may run on unsupervised.
    Returns the cgroups swept. Never raises."""
    swept: list[Path] = []
    try:
        entries = list(root.container.iterdir())
    except OSError:
        return swept
    for entry in entries:
        m = NAME_RE.match(entry.name)
        if m is None or not entry.is_dir():
            continue
        try:
            if alive(int(m[1]), int(m[2])):
                continue
            kill_and_remove(entry)
            swept.append(entry)
        except Exception:  # noqa: BLE001, S112 - housekeeping: the next sweep tries again
            continue
    return swept


def execution_cgroup(path: str) -> Path | None:
    """``path`` if it names an execution cgroup (``…/interlock/<NAME_RE>``) inside a cgroup2
    mount, else None: a recorded path is checked before anything is killed through it."""
    p = Path(path)
    if not p.is_absolute() or ".." in p.parts or NAME_RE.match(p.name) is None:
        return None
    if p.parent.name != CONTAINER:
        return None
    try:
        mounts = _cgroup2_mounts(Path("/proc/self/mountinfo").read_text(encoding="utf-8"))
    except OSError:
        return None
    return p if any(m in p.parents for m in mounts) else None


def kill_and_remove(path: Path, timeout: float = 2.0) -> bool:
    """Kill everything in the execution cgroup at ``path`` and remove it: what the reaper and
    the watchdog do for a supervisor that is gone. True when the cgroup is gone."""
    cg = ExecCgroup(path, ())
    cg.kill()
    cg.wait_empty(timeout)
    return cg.remove()
