"""A heap of deadlines: the master's only source of time-driven work.

The master's select timeout is the next deadline here, so with no timer
armed the master sleeps until a signal or a pipe wakes it.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field


def now() -> float:
    return time.monotonic()


@dataclass(order=True)
class Timer:
    deadline: float
    seq: int
    callback: Callable[[], None] = field(compare=False)
    interval: float | None = field(default=None, compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class Timers:
    def __init__(self, clock: Callable[[], float] = now) -> None:
        self._heap: list[Timer] = []
        self._seq = itertools.count()
        self.clock = clock

    def after(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(self.clock() + max(0.0, delay), next(self._seq), callback)
        heapq.heappush(self._heap, timer)
        return timer

    def every(self, interval: float, callback: Callable[[], None]) -> Timer:
        if interval <= 0:
            raise ValueError("interval must be > 0")
        timer = Timer(self.clock() + interval, next(self._seq), callback, interval)
        heapq.heappush(self._heap, timer)
        return timer

    def timeout(self) -> float | None:
        """Seconds until the next live deadline, or None when nothing is armed."""
        while self._heap and self._heap[0].cancelled:
            heapq.heappop(self._heap)
        if not self._heap:
            return None
        return max(0.0, self._heap[0].deadline - self.clock())

    def run_due(self) -> int:
        """Run every timer whose deadline has passed; return how many ran."""
        ran = 0
        t = self.clock()
        while self._heap and (self._heap[0].cancelled or self._heap[0].deadline <= t):
            timer = heapq.heappop(self._heap)
            if timer.cancelled:
                continue
            if timer.interval is not None:
                # keep the cadence, but never run twice to catch up after a stall
                timer.deadline += timer.interval
                if timer.deadline <= t:
                    timer.deadline = t + timer.interval
                timer.seq = next(self._seq)
                heapq.heappush(self._heap, timer)
            else:
                timer.cancelled = True
            timer.callback()
            ran += 1
        return ran

    def __len__(self) -> int:
        return sum(1 for t in self._heap if not t.cancelled)


MIN_EVERY = 0.001  # a repeating timer of 0 s would leave the loop no time to sleep


def checked_delay(seconds: float, least: float, most: float) -> float:
    """A user's timer delay, checked where it is set: a NaN or a huge one would reach
    select() as its timeout, where the error would be the master's, not the caller's."""
    if not (math.isfinite(seconds) and least <= seconds <= most):
        raise ValueError(f"seconds must be in {least:g}..{most:g}, got {seconds}")
    return seconds
