"""The watchdog started beside each contained execution: if its supervisor dies, nothing of the
command survives it unsupervised (DESIGN I9).

The supervisor starts ``python -c WATCHDOG CGROUP HOME`` in a session of its own (a terminal's
Ctrl-C does not reach it), outside the execution's cgroup, with the read end of a pipe as its
standard input; only the supervisor holds the write end. The watchdog blocks on that pipe:

* ``done`` then end of file — the supervisor finished the execution itself: exit;
* end of file alone — the supervisor died (``SIGKILL``, a crash, the OOM killer): write
  ``cgroup.kill``, wait for ``populated 0``, remove the cgroup, then open a gate on the home,
  whose start-up reaper records ``exec.terminated`` for every running execution whose supervisor
  is gone (this one included).

Under ``full`` containment the command cannot signal or ptrace the watchdog (Landlock scopes
both to its own sandbox); under the weaker modes it can, and the reaper of the next gate on the
home (``interlock serve`` runs one every check interval) kills the cgroup instead.

Until the end of file the watchdog has imported nothing but ``os`` and ``sys``: it costs one
idle interpreter per running execution.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["DONE", "Watchdog", "start_watchdog"]

#: what the supervisor writes before closing the pipe when it ended the execution itself
DONE = b"done"

_SCRIPT = """
import os, signal, sys
for s in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
    signal.signal(s, signal.SIG_IGN)
data = b""
while True:
    try:
        chunk = os.read(0, 64)
    except InterruptedError:
        continue
    except OSError:
        break
    if not chunk:
        break
    data = (data + chunk)[-64:]
if not data.endswith(b"done"):
    from interlock.runtime.watchdog import supervisor_gone
    sys.exit(supervisor_gone(sys.argv[1], sys.argv[2]))
"""


def supervisor_gone(cgroup: str, home: str) -> int:
    """Kill what is left of the execution in ``cgroup`` and record its termination through a
    gate on ``home`` (its reaper). Returns the exit code: 0, or 1 if something could not be
    done (the next gate's reaper tries again)."""
    from interlock.containment.cgroup import kill_and_remove

    code = 0 if kill_and_remove(Path(cgroup)) else 1
    try:
        from interlock.engine import GateCore

        with GateCore.open(home):  # its start-up reaper records exec.terminated
            pass
    except Exception:  # noqa: BLE001 - the next gate on the home reaps it
        code = 1
    return code


class Watchdog:
    """The supervisor's end of one watchdog."""

    def __init__(self, proc: subprocess.Popen[bytes], fd: int) -> None:
        self.proc = proc
        self._fd: int | None = fd

    def done(self) -> None:
        """The execution is over and recorded: tell the watchdog to exit without acting."""
        if self._fd is None:
            return
        try:
            os.write(self._fd, DONE)
        except OSError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None
        try:
            self.proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_watchdog(cgroup: Path, home: Path) -> Watchdog:
    """Start the watchdog of the execution cgroup ``cgroup`` (see the module doc).

    Raises:
        OSError: it could not be started (the caller must not start the command).
    """
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", _SCRIPT, str(cgroup), str(home)],
            stdin=r,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
    except BaseException:
        os.close(w)
        raise
    finally:
        os.close(r)
    return Watchdog(proc, w)
