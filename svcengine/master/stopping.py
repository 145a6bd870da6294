"""Graceful-then-forceful stopping, as a small clocked object.

It never sleeps and never sends a signal itself: the master gives it `now`
and the live workers, and it answers which signals are due. That keeps the
escalation (TERM, then KILL after the timeout; QUIT for a quick stop) testable
without processes.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

from .pool import SlotState, WorkerRecord


@dataclass
class Stopper:
    quick: bool
    timeout: float
    quick_timeout: float
    deadline: float | None = None
    killed: bool = False

    def signal_for(self, w: WorkerRecord) -> int:
        return signal.SIGQUIT if self.quick else signal.SIGTERM

    def start(self, workers: list[WorkerRecord], now: float) -> list[WorkerRecord]:
        """Mark every worker stopping; the caller sends each signal_for(w)."""
        for w in workers:
            w.state = SlotState.STOPPING
            w.stop_sent_at = now
        self.deadline = now + self.timeout
        return list(workers)

    def escalate(self, workers: list[WorkerRecord], now: float) -> list[tuple[WorkerRecord, int]]:
        """A quick stop asked for during a graceful one: QUIT now, shorter deadline."""
        self.quick = True
        if self.deadline is None or now + self.quick_timeout < self.deadline:
            self.deadline = now + self.quick_timeout
        return [(w, signal.SIGQUIT) for w in workers]

    def tick(self, workers: list[WorkerRecord], now: float) -> list[tuple[WorkerRecord, int]]:
        """KILL for everyone still alive once the deadline has passed."""
        if self.killed or self.deadline is None or now < self.deadline:
            return []
        self.killed = True
        self.deadline = None
        return [(w, signal.SIGKILL) for w in workers]
