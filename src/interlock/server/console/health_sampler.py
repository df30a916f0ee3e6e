"""The Health Dashboard's sampler (:mod:`.health`): this node's decision-latency histogram and
ledger size, read every :data:`BASE_S` on wall-clock bucket boundaries and kept for
:data:`MAX_WINDOW_S`; latency percentiles per bucket estimated from the difference of two
readings (:func:`quantile`, as Prometheus's ``histogram_quantile``), and the log's growth.
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from interlock.server.state import ServerState

if TYPE_CHECKING:
    from prometheus_client import Histogram

__all__ = [
    "BASE_S",
    "GROWTH_S",
    "MAX_WINDOW_S",
    "PERCENTILES",
    "Sample",
    "Sampler",
    "quantile",
]

_log = logging.getLogger("interlock.server")

#: the sampling interval, and the finest bucket of every series (seconds)
BASE_S = 10
#: how far back the series reach (seconds)
MAX_WINDOW_S = 3600
#: growth of the log is measured over about this long (seconds)
GROWTH_S = 60.0
#: the percentiles the latency chart draws
PERCENTILES = (0.5, 0.9, 0.99)


def quantile(q: float, bounds: Sequence[float], cumulative: Sequence[float]) -> float | None:
    """The ``q`` quantile of a histogram with upper ``bounds`` (the last ``inf``) and
    ``cumulative`` counts, interpolated linearly within the bucket it falls in (Prometheus's
    ``histogram_quantile``); in the ``+Inf`` bucket, the highest finite bound. None when the
    histogram is empty. Never raises on well-formed input.

        >>> quantile(0.5, [0.001, 0.01, math.inf], [2, 4, 4])
        0.001
        >>> round(quantile(0.75, [0.001, 0.01, math.inf], [2, 4, 4]), 6)
        0.0055
    """
    if not cumulative or cumulative[-1] <= 0:
        return None
    rank = q * cumulative[-1]
    i = bisect.bisect_left(list(cumulative), rank)
    i = min(i, len(cumulative) - 1)
    if math.isinf(bounds[i]):
        return bounds[i - 1] if i > 0 else None
    lower = bounds[i - 1] if i > 0 else 0.0
    below = cumulative[i - 1] if i > 0 else 0.0
    inside = cumulative[i] - below
    if inside <= 0:
        return bounds[i]
    return lower + (bounds[i] - lower) * (rank - below) / inside


def _histogram(hist: Histogram) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Bounds and cumulative counts of ``hist``, summed over its label values (endpoints)."""
    sums: dict[float, float] = {}
    for metric in hist.collect():
        for s in metric.samples:
            if s.name.endswith("_bucket"):
                le = float(s.labels["le"])
                sums[le] = sums.get(le, 0.0) + float(s.value)
    bounds = tuple(sorted(sums))
    return bounds, tuple(sums[b] for b in bounds)


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading: when (``at``: the bucket boundary it was taken for, epoch seconds; ``t``:
    when it was actually read), the latency histogram (cumulative) and the ledger size."""

    at: float
    t: float
    bounds: tuple[float, ...]
    counts: tuple[float, ...]
    size: int | None


def _delta(
    end: Sample | None, begin: Sample | None
) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    if end is None or begin is None or not end.bounds:
        return None
    if not begin.bounds:  # nothing was observed yet at ``begin``
        return end.bounds, end.counts
    if begin.bounds != end.bounds:
        return None
    return end.bounds, tuple(e - b for e, b in zip(end.counts, begin.counts, strict=True))


class Sampler:
    """Reads the decision-latency histogram and the ledger size every :data:`BASE_S`, on the
    boundaries of wall-clock buckets, and keeps :data:`MAX_WINDOW_S` of readings. ``start()``
    once, ``stop()`` with the app. Reading never raises: what cannot be read is None."""

    def __init__(
        self,
        state: ServerState,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._state = state
        self._clock = clock
        self._samples: deque[Sample] = deque(maxlen=MAX_WINDOW_S // BASE_S + 2)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def read(self, at: float | None = None) -> Sample:
        """A reading now (``at``: the boundary it stands for; default, now). Never raises."""
        t = self._clock()
        try:
            bounds, counts = _histogram(self._state.metrics.latency)
        except Exception:  # noqa: BLE001 - a view for operators: an unreadable histogram is a gap
            _log.exception("health sampler: the latency histogram cannot be read")
            bounds, counts = (), ()
        try:
            size: int | None = self._state.gate.ledger.size()
        except Exception:  # noqa: BLE001 - the node's own checks deny; here it is unknown
            size = None
        return Sample(at=t if at is None else at, t=t, bounds=bounds, counts=counts, size=size)

    def sample(self, at: float | None = None) -> Sample:
        """Take a reading and keep it."""
        s = self.read(at)
        with self._lock:
            self._samples.append(s)
        return s

    def samples(self) -> list[Sample]:
        with self._lock:
            return list(self._samples)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self.sample()  # the baseline of the first bucket
        self._thread = threading.Thread(target=self._run, name="console-health", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = self._clock()
            boundary = (math.floor(now / BASE_S) + 1) * BASE_S
            if self._stop.wait(max(0.0, boundary - now)):
                return
            self.sample(at=boundary)

    def growth(self, size: int | None, now: float) -> float | None:
        """Entries per second from the reading about :data:`GROWTH_S` ago (or the oldest one)
        to ``size`` at ``now``; None when unknown or less than a second apart."""
        if size is None:
            return None
        base: Sample | None = None
        for s in self.samples():
            if s.size is None:
                continue
            if base is None or s.t <= now - GROWTH_S:
                base = s
        if base is None or base.size is None or now - base.t < 1.0:
            return None
        return max(0.0, (size - base.size) / (now - base.t))

    def latency(
        self, starts: Sequence[int], bucket_s: int, now: float
    ) -> tuple[list[list[float | None]], list[int | None]]:
        """Per bucket starting at each of ``starts``: the :data:`PERCENTILES` in ms (None when
        unknown or empty), and the number of decisions the histogram observed (None when
        unknown). The bucket that holds ``now`` ends at a reading taken now."""
        samples = self.samples()
        ats = [s.at for s in samples]
        live: Sample | None = None
        out: list[list[float | None]] = [[] for _ in PERCENTILES]
        counts: list[int | None] = []
        for start in starts:
            end = start + bucket_s
            i = bisect.bisect_left(ats, start)
            begin = samples[i] if i < len(samples) and samples[i].at < end else None
            finish: Sample | None
            if end > now:
                live = live or self.read()
                finish = live
            else:
                j = bisect.bisect_left(ats, end)
                # a reading much later than the boundary would count the next bucket too
                finish = samples[j] if j < len(samples) and samples[j].at < end + BASE_S else None
            got = _delta(finish, begin)
            if got is None:
                for series in out:
                    series.append(None)
                counts.append(None)
                continue
            bounds, cumulative = got
            counts.append(round(cumulative[-1]))
            for series, q in zip(out, PERCENTILES, strict=True):
                v = quantile(q, bounds, cumulative)
                series.append(None if v is None else round(v * 1000, 4))
        return out, counts
