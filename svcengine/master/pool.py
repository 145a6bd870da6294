"""Worker slots and their states: pure bookkeeping, no processes, no clock of its own.

The master asks the pool what to do (which slots need a worker, how long a
crashing slot must wait) and tells it what happened (spawned, ready, exited).
Keeping this free of fork and time makes it testable with a fake clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .handles import ExitStatus, Key
from .handles import label as key_label

if TYPE_CHECKING:
    from ..config import Config


class SlotState(enum.Enum):
    EMPTY = "empty"  # no process; may be waiting out a restart backoff
    STARTING = "starting"  # forked, not yet ready
    READY = "ready"
    HUNG = "hung"  # was ready, sent no heartbeat in time: its stacks dumped, being killed
    STOPPING = "stopping"  # asked to stop; waiting for it to exit
    RETIRED = "retired"  # exited with an unrecoverable code; never restarted


def describe_status(status: int) -> str:
    """'killed by SIGKILL' / 'exited with status 3', from a waitpid status."""
    try:
        return str(ExitStatus.from_wait(status))
    except ValueError:  # stopped or continued: never reaped as an end
        return f"changed state ({status:#x})"


@dataclass
class WorkerRecord:
    """One running (or once running) worker, as the master sees it: not the user's
    svcengine.Worker (the code that runs in it), but the master's handle on it. `key` is
    how the master knows it; `pid` is None for a thread worker (no process of its own)."""

    worker_id: int
    key: Key
    generation: int
    started_at: float
    ready_at: float | None = None
    stop_sent_at: float | None = None
    state: SlotState = SlotState.STARTING
    boot_error: str | None = None
    exit_status: ExitStatus | None = None
    superseded: bool = False  # replaced by a reload; stopped once its successor is ready
    beat_index: int = -1

    @property
    def pid(self) -> int | None:
        return self.key if isinstance(self.key, int) else None

    @property
    def label(self) -> str:
        """`pid 1234` or `thread 3`, for the log."""
        return key_label(self.key)

    @property
    def alive(self) -> bool:
        return self.exit_status is None


@dataclass
class Slot:
    """A worker id: the place a worker lives in, across restarts."""

    worker_id: int
    current: WorkerRecord | None = None
    restarts: int = 0
    fast_failures: int = 0
    not_before: float = 0.0
    last_exit: str | None = None
    retired_code: int | None = None

    @property
    def state(self) -> SlotState:
        if self.retired_code is not None:
            return SlotState.RETIRED
        return self.current.state if self.current else SlotState.EMPTY


@dataclass
class Backoff:
    """Crash-loop policy: first restart at once, then min * 2**k up to max."""

    min_uptime: float = 1.0
    minimum: float = 0.1
    maximum: float = 30.0

    @classmethod
    def of(cls, cfg: Config) -> Backoff:
        return cls(
            cfg.worker_min_uptime, cfg.worker_restart_backoff_min, cfg.worker_restart_backoff_max
        )

    def delay(self, fast_failures: int) -> float:
        if fast_failures <= 1:
            return 0.0
        return min(self.maximum, self.minimum * 2.0 ** (fast_failures - 2))


@dataclass
class Pool:
    target: int
    backoff: Backoff = field(default_factory=Backoff)
    unrecoverable: frozenset[int] = frozenset()
    slots: dict[int, Slot] = field(default_factory=dict)
    by_key: dict[Key, WorkerRecord] = field(default_factory=dict)
    generation: int = 0
    total_restarts: int = 0

    @classmethod
    def of(cls, cfg: Config) -> Pool:
        return cls(cfg.workers, Backoff.of(cfg), frozenset(cfg.unrecoverable_exit_codes))

    def __post_init__(self) -> None:
        self.resize(self.target)

    def resize(self, target: int) -> list[WorkerRecord]:
        """Set the worker count; return the workers that must now be stopped."""
        self.target = max(0, target)
        for wid in range(self.target):
            self.slots.setdefault(wid, Slot(wid))
        surplus = []
        for wid in sorted(self.slots):
            if wid >= self.target:
                slot = self.slots[wid]
                if slot.current is None:
                    del self.slots[wid]
                elif slot.current.state is not SlotState.STOPPING:
                    surplus.append(slot.current)
        return surplus

    def wanted(self, now: float) -> list[int]:
        """Slot ids that need a new worker now (empty, not retired, backoff over)."""
        return [
            s.worker_id
            for s in sorted(self.slots.values(), key=lambda s: s.worker_id)
            if s.worker_id < self.target
            and s.current is None
            and s.retired_code is None
            and s.not_before <= now
        ]

    def next_retry(self, now: float) -> float | None:
        """Earliest moment a backing-off slot may restart, if one is waiting."""
        waits = [
            s.not_before
            for s in self.slots.values()
            if s.worker_id < self.target
            and s.current is None
            and s.retired_code is None
            and s.not_before > now
        ]
        return min(waits) if waits else None

    def spawned(self, worker_id: int, key: Key, now: float) -> WorkerRecord:
        w = WorkerRecord(worker_id, key, self.generation, now)
        self.slots[worker_id].current = w
        self.by_key[key] = w
        return w

    def spawn_failed(self, worker_id: int, now: float) -> float:
        """fork() itself failed (EAGAIN, ENOMEM): back off like a crash."""
        slot = self.slots[worker_id]
        slot.fast_failures += 1
        slot.not_before = now + max(self.backoff.minimum, self.backoff.delay(slot.fast_failures))
        return slot.not_before

    def supersede_generation(self) -> list[WorkerRecord]:
        """Start a new generation: every current worker keeps serving until replaced."""
        self.generation += 1
        old = []
        for slot in self.slots.values():
            w = slot.current
            if w is not None and w.state in (SlotState.STARTING, SlotState.READY):
                w.superseded = True
                slot.current = None
                slot.fast_failures = 0
                slot.not_before = 0.0
                old.append(w)
        return old

    def abandon_generation(self) -> list[WorkerRecord]:
        """Undo supersede_generation() for a reload that cannot boot: each slot whose new
        worker is not ready gets its superseded worker back (if that one still serves).
        Return the new generation's workers that are not ready: the master stops them."""
        superseded = {w.worker_id: w for w in self.superseded()}
        doomed = []
        for slot in self.slots.values():
            w = slot.current
            if w is not None and w.generation == self.generation and w.state is SlotState.STARTING:
                doomed.append(w)
                slot.current = None
            old = superseded.get(slot.worker_id)
            if old is not None and slot.current is None:
                old.superseded = False
                slot.current = old
                slot.fast_failures = 0
                slot.not_before = 0.0
        return doomed

    def superseded(self, worker_id: int | None = None) -> list[WorkerRecord]:
        return [
            w
            for w in self.by_key.values()
            if w.superseded
            and w.state is not SlotState.STOPPING
            and (worker_id is None or w.worker_id == worker_id)
        ]

    def ready(self, key: Key, now: float) -> WorkerRecord | None:
        w = self.by_key.get(key)
        if w is None or w.state is not SlotState.STARTING:
            return None
        w.state = SlotState.READY
        w.ready_at = now
        return w

    def exited(self, key: Key, status: ExitStatus, now: float) -> WorkerRecord | None:
        """Record an exit; decide restart delay or retirement for its slot."""
        w = self.by_key.pop(key, None)
        if w is None:
            return None
        w.exit_status = status
        slot = self.slots.get(w.worker_id)
        if slot is None or slot.current is not w:
            return w  # an old-generation worker being replaced
        slot.current = None
        slot.last_exit = str(status)
        if w.worker_id >= self.target:
            del self.slots[w.worker_id]
            return w
        if w.state is SlotState.STOPPING:
            return w  # asked to stop; restarts follow whatever the master wants
        code = status.code
        if code is not None and code in self.unrecoverable:
            slot.retired_code = code
            return w
        slot.restarts += 1
        self.total_restarts += 1
        uptime = now - (w.ready_at or w.started_at)
        if w.ready_at is None or uptime < self.backoff.min_uptime:
            slot.fast_failures += 1
        else:
            slot.fast_failures = 1
        slot.not_before = now + self.backoff.delay(slot.fast_failures)
        return w

    def workers(self) -> list[WorkerRecord]:
        return list(self.by_key.values())

    def current(self) -> list[WorkerRecord]:
        return [s.current for s in self.slots.values() if s.current is not None]

    def count(self, state: SlotState) -> int:
        return sum(1 for w in self.by_key.values() if w.state is state)

    def ready_count(self) -> int:
        """Slots (of the target) whose current worker is ready. A plain loop: at start it
        runs once per worker that gets ready, over every slot."""
        n = 0
        target, ready = self.target, SlotState.READY
        for s in self.slots.values():
            c = s.current
            if c is not None and c.state is ready and s.worker_id < target:
                n += 1
        return n

    def all_retired(self) -> int | None:
        """The unrecoverable exit code, when every slot has retired with one."""
        codes = [s.retired_code for s in self.slots.values() if s.worker_id < self.target]
        if self.target and codes and all(c is not None for c in codes):
            return codes[-1]
        return None
