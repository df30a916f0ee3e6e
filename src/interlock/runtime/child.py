"""The supervised child process: its cgroup (or, in the weakest containment mode, its own
process group), signals to all of it, the output pump, and death with its supervisor (Linux
prctl)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import threading
import time
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from interlock.containment.cgroup import ExecCgroup


#: a shell's codes for "denied / could not execute" and "command not found"
__all__ = ["EXIT_CANNOT_EXECUTE"]


EXIT_CANNOT_EXECUTE = 126


_CHUNK = 64 * 1024


class _Pump(threading.Thread):
    """Copy a pipe to a sink while hashing it. A sink that fails (a closed terminal) stops
    receiving, but the pipe is still drained and hashed: the command must not block on it."""

    def __init__(self, fd: int, sink: IO[bytes] | None) -> None:
        super().__init__(name="interlock-pump", daemon=True)
        self.fd = fd
        self.sink = sink
        self.sha = hashlib.sha256()
        self.size = 0

    def run(self) -> None:
        try:
            while True:
                chunk = os.read(self.fd, _CHUNK)
                if not chunk:
                    return
                self.sha.update(chunk)
                self.size += len(chunk)
                if self.sink is not None:
                    try:
                        self.sink.write(chunk)
                        self.sink.flush()
                    except (OSError, ValueError):
                        self.sink = None
        except OSError:
            return


def _signal_group(pgid: int, sig: int) -> bool:
    """Signal a process group; False if it no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


def _signal_name(returncode: int) -> str | None:
    if returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"SIG{-returncode}"


class _Child:
    """A spawned command and everything it starts.

    With a cgroup (``full`` and ``unsafe-no-key-isolation`` containment) "everything" is the
    cgroup: signals go to each of its processes, SIGKILL is ``cgroup.kill``, and the execution
    is over at ``populated 0`` — not when the first process exits. Without one it is the
    process group; the leader's exit is observed without reaping it (``waitid`` with
    ``WNOWAIT``), so its process-group id stays reserved until the group has been swept."""

    def __init__(self, proc: subprocess.Popen[bytes], cgroup: ExecCgroup | None = None) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.cgroup = cgroup
        self.exited = threading.Event()
        #: the signal that killed the leader, once it exited that way
        self.killed_by: int | None = None
        self._swept = False
        self._waiter = threading.Thread(target=self._wait, name="interlock-waiter", daemon=True)
        self._waiter.start()

    def _wait(self) -> None:
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
            if info is not None and info.si_code in (os.CLD_KILLED, os.CLD_DUMPED):
                self.killed_by = info.si_status
        except ChildProcessError:
            pass
        except OSError:
            pass
        finally:
            self.exited.set()

    def alive(self) -> bool:
        """Whether anything of the execution still runs (the leader excepted when it exited)."""
        if self.cgroup is not None:
            return self.cgroup.populated()
        return _group_alive(self.pid)

    def settled(self) -> bool:
        """The leader exited and nothing else of the execution is alive."""
        return self.exited.is_set() and not self.alive()

    def signal(self, sig: int) -> bool:
        """Send ``sig`` to every process of the execution; False if none was found."""
        if self.cgroup is None:
            return _signal_group(self.pid, sig)
        if sig == signal.SIGKILL:
            return self.cgroup.kill()
        sent = False
        for pid in self.cgroup.procs():
            try:
                os.kill(pid, sig)
                sent = True
            except OSError:
                continue
        return sent

    def terminate(self, grace: float, *, freeze: bool = False) -> tuple[str, ...]:
        """SIGTERM to every process; SIGKILL to all of them (``cgroup.kill``) once ``grace``
        passed without the execution settling (a nested supervisor gets the grace to record its
        own termination). Returns the signals sent.

        ``freeze`` (a quarantined principal, a boundary violation): no grace at all — the
        cgroup is frozen first (``cgroup.freeze``: every process stops at once, none runs a
        SIGTERM handler), then killed; reported as ``FREEZE``, ``SIGKILL``."""
        if freeze and self.cgroup is not None:
            sent = []
            with contextlib.suppress(OSError):
                self.cgroup.freeze()
                sent.append("FREEZE")
            self.signal(signal.SIGKILL)
            sent.append("SIGKILL")
            self.cgroup.wait_empty(max(grace, 1.0))
            self._swept = True
            return tuple(sent)
        sent = ["SIGTERM"] if self.signal(signal.SIGTERM) else []
        deadline = time.monotonic() + grace
        while not self.settled():
            if time.monotonic() >= deadline:
                sent.append("SIGKILL")
                break
            self.exited.wait(0.02)
            if self.exited.is_set():
                time.sleep(0.02)
        self.signal(signal.SIGKILL)
        if self.cgroup is not None:
            self.cgroup.wait_empty(max(grace, 1.0))
        self._swept = True
        return tuple(sent)

    def reap(self, grace: float) -> int:
        """After the leader exited: stop what is left of the execution (SIGTERM, SIGKILL after
        ``grace``), then reap the leader. Returns its return code (negative: killed by that
        signal)."""
        if not self._swept and self.alive():
            self.terminate(grace)
        self.signal(signal.SIGKILL)
        return self.proc.wait()


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` other than a zombie is alive. Reads ``/proc``
    (Linux); elsewhere answers False, so what is left is killed at once."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return False
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and fields[2] == str(pgid).encode() and fields[0] != b"Z":
            return True
    return False
