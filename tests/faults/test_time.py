"""Fault matrix, time: the clock jumps back, and forward then back, under a running gate.

The gate reads time only through the clock it was opened with (``Gate.open(home,
clock_ns=...)``); the test opens it with a clock whose offset it moves while the gate runs and
a governed execution is in progress."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from interlock.gate import Gate
from tests.conftest import RESEARCHER, tool_request
from tests.faults.harness import decide_in, governed, on_ledger, record

HOUR_NS = 3600 * 10**9


class Clock:
    """The system clock plus an offset the test moves."""

    def __init__(self) -> None:
        self.offset = 0

    def __call__(self) -> int:
        return time.time_ns() + self.offset


def test_clock_jumps_back(home: Path, issue: Any) -> None:
    # expired on the real clock; an hour back it would look valid again
    expired = issue(RESEARCHER, "tool.call:Tool::*", ttl=timedelta(seconds=-30))
    valid = issue(RESEARCHER, "tool.call:Tool::*")
    clock = Clock()
    with Gate.open(home, clock_ns=clock) as gate:
        assert gate.decide(tool_request(valid)).allowed
        assert gate.decide(tool_request(expired)).codes == ("CAPABILITY_EXPIRED",)
        clock.offset = -HOUR_NS
        attempts = [
            decide_in(gate, tool_request(expired), "decide (expired token)"),
            decide_in(gate, tool_request(valid), "decide (valid token)"),
            governed(gate, tool_request(valid)),
        ]
    record(
        "time.clock-back",
        "time",
        "the running gate's clock set back one hour (an expired token would look valid)",
        ("ENVIRONMENT_UNTRUSTED",),
        attempts,
        recorded=on_ledger(
            home, attempts, why_not="its timestamp would go backwards on the log (DESIGN I8)"
        ),
    )


def test_clock_jumps_forward_then_back(home: Path, issue: Any) -> None:
    token = issue(RESEARCHER, "tool.call:Tool::*", ttl=timedelta(minutes=15))
    clock = Clock()
    with Gate.open(home, clock_ns=clock) as gate:
        assert gate.decide(tool_request(token)).allowed
        clock.offset = 24 * HOUR_NS  # a day ahead: the token has expired on this clock
        forward = [decide_in(gate, tool_request(token), "decide (a day ahead)")]
        forward.append(governed(gate, tool_request(token), "execution (a day ahead)"))
        clock.offset = 0  # and back: now behind the log's last timestamp
        back = [decide_in(gate, tool_request(token), "decide (back to real time)")]
        back.append(governed(gate, tool_request(token), "execution (back to real time)"))
    ahead = on_ledger(home, forward)
    assert ahead == "yes", ahead
    record(
        "time.clock-forward",
        "time",
        "the running gate's clock jumped a day ahead (past the token's expiry), then back to"
        " real time (behind the log's last timestamp)",
        ("CAPABILITY_EXPIRED", "ENVIRONMENT_UNTRUSTED"),
        forward + back,
        recorded="yes while ahead; not possible once back: a timestamp behind the log's is"
        " never written (DESIGN I8)",
    )
