"""What "healthy" means, decided in one place: the watchdog pings only while it holds.

Healthy: the master's loop turns (the ping itself is a timer on that loop, so
a wedged loop sends none); no worker slot has reached the restart-backoff cap
unless its current worker has since stayed up for `worker_min_uptime` (a pool
that cannot be kept up); and no ready worker is past its heartbeat timeout.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Protocol

from ..child import DUMP_SIGNAL
from .phase import Phase
from .pool import Pool, SlotState, WorkerRecord

if TYPE_CHECKING:
    from ..config import Config
    from ..timers import Timer
    from ..unix.systemd import Notifier
    from .loop import Loop
    from .workers import Workers

log = logging.getLogger("svcengine.master")

HUNG_KILL_AFTER = 0.5  # seconds between a hung worker's stack dump and its SIGKILL


class HealthHost(Protocol):
    """What Health reads from the master."""

    loop: Loop
    pool: Pool
    workers: Workers
    notify: Notifier

    @property
    def cfg(self) -> Config: ...
    @property
    def phase(self) -> Phase: ...
    def clock(self) -> float: ...


def silent_workers(
    pool: Pool, last_beat: Callable[[int], float], timeout: float, now: float
) -> list[tuple[WorkerRecord, float]]:
    """Ready workers that showed no progress for longer than `timeout`, with how long."""
    out = []
    for w in pool.workers():
        if w.state is not SlotState.READY or w.beat_index < 0:
            continue
        silent = now - max(last_beat(w.beat_index), w.ready_at or 0.0)
        if silent > timeout:
            out.append((w, silent))
    return out


def assess(
    pool: Pool, last_beat: Callable[[int], float], heartbeat_timeout: float | None, now: float
) -> tuple[bool, str]:
    backoff = pool.backoff
    for slot in pool.slots.values():
        if slot.worker_id >= pool.target or slot.retired_code is not None:
            continue
        w = slot.current
        if w is not None and w.ready_at is not None and now - w.ready_at >= backoff.min_uptime:
            continue  # up and stable, whatever its history
        if backoff.delay(slot.fast_failures) >= backoff.maximum:
            return False, f"worker {slot.worker_id} keeps crashing ({slot.last_exit})"
    if heartbeat_timeout:
        silent = silent_workers(pool, last_beat, heartbeat_timeout, now)
        if silent:
            return False, f"worker {silent[0][0].worker_id} sends no heartbeat"
    return True, "ok"


def serving(pool: Pool, phase: Phase) -> tuple[bool, str]:
    """`ctl status --check` asks more than the watchdog does: is anything serving?
    A paused pool or a lone worker waiting out its backoff keeps the watchdog fed (the
    master is working as asked), but a health check must not call it healthy."""
    if any(w.state is SlotState.READY for w in pool.workers()):
        return True, "ok"
    if phase is Phase.PAUSED:
        return False, "no worker is ready (workers stopped on request)"
    return False, "no worker is ready"


def heartbeat_interval(cfg: Config) -> float | None:
    """How often the master reads the heartbeat cells: never without a timeout to check."""
    return cfg.worker_heartbeat_interval if cfg.worker_heartbeat_timeout else None


class Health:
    """The heartbeat check and the watchdog ping: two timers, armed only when configured
    (no timer, no wakeup), both asking assess()."""

    def __init__(self, m: HealthHost) -> None:
        self.m = m
        self._beats: Timer | None = None
        self._beat_interval: float | None = None

    def arm(self, watchdog: float | None, heartbeat_interval: float | None) -> None:
        if watchdog:
            self.m.loop.timers.every(watchdog, self.watchdog)
        self.arm_heartbeats(heartbeat_interval)

    def arm_heartbeats(self, interval: float | None) -> None:
        """(Re)arm the heartbeat check: at start, and when a reload changes its settings."""
        if interval == self._beat_interval:
            return
        if self._beats is not None:
            self._beats.cancel()
            self._beats = None
        self._beat_interval = interval
        if interval:
            self._beats = self.m.loop.timers.every(interval, self.check_heartbeats)

    def check_heartbeats(self) -> None:
        m = self.m
        timeout = m.cfg.worker_heartbeat_timeout
        if not timeout:
            return
        for w, silent in silent_workers(m.pool, m.workers.last_beat, timeout, m.clock()):
            log.error(
                "worker %d (%s) hung: no heartbeat for %.1fs; dumping its stacks, killing it",
                w.worker_id,
                w.label,
                silent,
            )
            w.state = SlotState.HUNG  # not READY: not checked again, not counted as serving
            m.workers.kill(w.key, DUMP_SIGNAL)
            m.loop.timers.after(HUNG_KILL_AFTER, partial(m.workers.kill, w.key, signal.SIGKILL))

    def healthy(self) -> tuple[bool, str]:
        """The watchdog's question; assess() says what it means."""
        m = self.m
        if m.phase is Phase.STOPPING:
            return True, "stopping"
        if m.phase is Phase.PAUSED:
            return True, "workers stopped on request"
        return assess(m.pool, m.workers.last_beat, m.cfg.worker_heartbeat_timeout, m.clock())

    def watchdog(self) -> None:
        ok, why = self.healthy()
        if ok:
            self.m.notify.watchdog()
        else:
            log.warning("not pinging the watchdog: %s", why)
