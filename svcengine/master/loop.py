"""The master's one event loop: a selector, the timer heap and an fd registry.

This is the only place that calls select(). Everything else that wants to be
woken (worker status pipes, the signal pipe, the control socket, an upgrade's
channel) registers a callback for its fd here. The timeout is the next timer
deadline, or none at all: an idle master makes no wakeups.
"""

from __future__ import annotations

import logging
import selectors
from collections.abc import Callable

from .. import timers

log = logging.getLogger("svcengine.master")

# turns in a row in which a callback raised: the loop cannot make progress (a callback
# that raises before it consumes its event would spin), a broken invariant: exit
MAX_FAILED_TURNS = 100


class LoopStuck(Exception):
    """The loop cannot go on; the master exits (the only exception that may end it)."""


def guarded(fn: Callable[[], object]) -> Callable[[], None]:
    """A user's timer job (server.every/after): its exception is logged, the timer goes on."""

    def run() -> None:
        try:
            fn()
        except Exception:
            log.exception("timer callback %r raised; the timer keeps going", fn)

    return run


class Loop:
    def __init__(self, timer_heap: timers.Timers | None = None) -> None:
        self.timers = timer_heap if timer_heap is not None else timers.Timers()
        self.selector = selectors.DefaultSelector()
        self.wakeups = 0  # turns, shown by `ctl status --json`
        self._failed_turns = 0

    def register(self, fd: int, callback: Callable[[int], object]) -> None:
        """Call `callback(fd)` whenever fd is readable."""
        self.selector.register(fd, selectors.EVENT_READ, callback)

    def unregister(self, fd: int) -> None:
        self.selector.unregister(fd)

    def fileno(self) -> int:
        return self.selector.fileno()

    def turn(self, timeout: float | None = None) -> None:
        """Wait for the next event or deadline, then run what is due.

        An exception from one callback is logged with its traceback and the turn goes
        on: one bad event must not end the master. Only a broken invariant does: select()
        itself failing, or MAX_FAILED_TURNS turns in a row with a failing callback."""
        t = self.timers.timeout()
        if timeout is not None:
            t = timeout if t is None else min(t, timeout)
        failed = False
        for key, _ in self.selector.select(t):
            try:
                key.data(key.fd)
            except Exception:
                log.exception("event callback for fd %d raised; the master serves on", key.fd)
                failed = True
        while True:
            try:
                self.timers.run_due()  # a raising timer is already off the heap (or re-armed)
                break
            except Exception:
                log.exception("timer callback raised; the master serves on")
                failed = True
        self._failed_turns = self._failed_turns + 1 if failed else 0
        if self._failed_turns >= MAX_FAILED_TURNS:
            raise LoopStuck(f"a callback raised in each of the last {MAX_FAILED_TURNS} turns")
        self.wakeups += 1

    def close(self) -> None:
        self.selector.close()
