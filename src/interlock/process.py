"""Process identity from ``/proc`` (Linux): who supervises an execution, and whether that
process is still the same one (boot id, pid and start time, so a reused pid is not mistaken
for it)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["process_alive", "process_identity", "start_ticks"]


_IDENTITY: dict[int, dict[str, Any] | None] = {}


def process_identity() -> dict[str, Any] | None:
    """This process as ``{"boot_id", "pid", "start"}`` (Linux: the kernel's boot id and the
    process start time in clock ticks since boot, so a reused pid is not mistaken for it);
    None where /proc does not say. Read once per process (keyed by pid: a fork is another)."""
    pid = os.getpid()
    if pid not in _IDENTITY:
        try:
            boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
            _IDENTITY[pid] = {"boot_id": boot, "pid": pid, "start": start_ticks(pid)}
        except (OSError, ValueError, IndexError):
            _IDENTITY[pid] = None
    found = _IDENTITY[pid]
    return None if found is None else dict(found)


def start_ticks(pid: int) -> int:
    """Field 22 of /proc/PID/stat (after the parenthesised command name).

    Raises:
        OSError: no such process. ValueError/IndexError: an unreadable stat line.
    """
    stat = Path(f"/proc/{pid}/stat").read_bytes()
    return int(stat[stat.rfind(b")") + 2 :].split()[19])


def process_alive(proc: Mapping[str, Any], me: Mapping[str, Any]) -> bool:
    """Whether the process ``proc`` (from an exec.start) still runs: same boot, pid present,
    same start time, not a zombie."""
    if proc.get("boot_id") != me["boot_id"]:
        return False
    pid = proc.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return True  # not ours to judge: leave it
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return fields[0] != b"Z" and int(fields[19]) == proc.get("start")
    except (ValueError, IndexError):
        return True
