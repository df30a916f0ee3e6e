"""The supervised child process: its own process group, signals to the group, the output
pump, and death with its supervisor (Linux prctl)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass


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
    """A spawned command: its exit is observed without reaping it (``waitid`` with
    ``WNOWAIT``), so its process-group id stays reserved until the group has been swept."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.exited = threading.Event()
        self._swept = False
        self._waiter = threading.Thread(target=self._wait, name="interlock-waiter", daemon=True)
        self._waiter.start()

    def _wait(self) -> None:
        try:
            os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            pass
        except OSError:
            pass
        finally:
            self.exited.set()

    def _settled(self) -> bool:
        """The leader exited and nothing else of its group is alive."""
        return self.exited.is_set() and not _group_alive(self.pid)

    def terminate(self, grace: float) -> tuple[str, ...]:
        """SIGTERM to the group; SIGKILL to the group once ``grace`` passed without the whole
        group exiting (a nested supervisor in the group gets the grace to record its own
        termination). Returns the signals sent."""
        sent = ["SIGTERM"] if _signal_group(self.pid, signal.SIGTERM) else []
        deadline = time.monotonic() + grace
        while not self._settled():
            if time.monotonic() >= deadline:
                sent.append("SIGKILL")
                break
            self.exited.wait(0.02)
            if self.exited.is_set():
                time.sleep(0.02)
        _signal_group(self.pid, signal.SIGKILL)
        self._swept = True
        return tuple(sent)

    def reap(self, grace: float) -> int:
        """After the leader exited: stop what it left in its group (SIGTERM, SIGKILL after
        ``grace``) — the leader is an unreaped zombie, so its id still names the group — then
        reap it. Returns its return code (negative: killed by that signal)."""
        if not self._swept and _group_alive(self.pid):
            self.terminate(grace)
        _signal_group(self.pid, signal.SIGKILL)
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


_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Any:
    """libc's ``prctl``, resolved once before any fork (None where there is none)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def _die_with_supervisor(supervisor_pid: int) -> None:
    """In the forked child, before exec: ask Linux to SIGKILL the command when the supervising
    thread dies (a supervisor that is itself SIGKILLed must not leave its command running
    unwatched). Only the direct child is covered: its own children are killed with the group
    while the supervisor lives, but outlive a SIGKILLed supervisor (see SECURITY.md)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != supervisor_pid:  # it died before the prctl took effect
            os._exit(EXIT_CANNOT_EXECUTE)
