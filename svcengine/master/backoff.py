"""How long to wait before the next mold (master/mold.py) when the last one died young.

A mold that dies before it is ready (its import segfaults, calls os._exit, is OOM-killed)
would die again at once: a crash loop. As systemd's RestartSteps or supervisor's backoff,
each quick death in a row doubles the delay (1 s, 2 s, 4 s, ... up to MAX_DELAY); a mold
that reaches `ready` ends the series, and one that was ready and lived is replaced at once.
"""

from __future__ import annotations

from collections.abc import Callable

from ..timers import Timer, Timers

QUICK_DEATH = 1.0  # s: a mold that lived less (or was never ready) died young
MAX_DELAY = 30.0  # s: the longest wait before the next try, however long the loop


class Backoff:
    """Consecutive quick deaths and the delay they call for; the last cause, for status."""

    def __init__(self, first: float = QUICK_DEATH, cap: float = MAX_DELAY) -> None:
        self.first = first
        self.cap = cap
        self.failures = 0  # quick deaths in a row since the last ready mold
        self.last_exit: str | None = None  # how the last mold ended (kept after a reset)

    def ready(self) -> None:
        """A mold got ready: the code imports; the next quick death starts over at `first`."""
        self.failures = 0

    def exited(self, cause: str, lived: float, was_ready: bool) -> float:
        """A mold died: the delay before the next one (0: at once, it lived)."""
        self.last_exit = cause
        if was_ready and lived >= QUICK_DEATH:
            self.failures = 0
            return 0.0
        return self.failed(cause)

    def failed(self, cause: str) -> float:
        """One more quick death (or a failed fork): the delay before the next try."""
        self.last_exit = cause
        delay = min(self.cap, self.first * 2.0 ** min(self.failures, 32))
        self.failures += 1
        return delay


class Retry:
    """A launcher's one pending retry (a timer) and the Backoff that sets its delay."""

    def __init__(self, timers: Timers, callback: Callable[[], object]) -> None:
        self.timers = timers
        self.callback = callback  # makes the next process
        self.backoff = Backoff()
        self._timer: Timer | None = None

    @property
    def pending(self) -> bool:
        return self._timer is not None

    def exited(self, cause: str, lived: float, was_ready: bool) -> float:
        """Arm the retry after a death; the delay, for the log line."""
        return self._arm(self.backoff.exited(cause, lived, was_ready))

    def failed(self, cause: str) -> float:
        return self._arm(self.backoff.failed(cause))

    def cancel(self) -> None:
        """No retry pending (the master leaves, or another process took the place); a new
        series of quick deaths starts at the first delay."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.backoff.ready()

    def status(self) -> dict[str, object]:
        """What `ctl status` shows of it: seconds to the retry, the crash loop's count."""
        t = self._timer
        return {
            "retry_in": round(t.deadline - self.timers.clock(), 3) if t else None,
            "retries": self.backoff.failures,  # quick deaths in a row
            "last_exit": self.backoff.last_exit,  # how the last one ended
        }

    def _arm(self, delay: float) -> float:
        self._timer = self.timers.after(delay, self._fire)
        return delay

    def _fire(self) -> None:
        self._timer = None
        self.callback()
