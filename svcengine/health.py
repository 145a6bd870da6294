"""What "healthy" means, decided in one place: the watchdog pings only while it holds.

Healthy: the master's loop turns (the ping itself is a timer on that loop, so
a wedged loop sends none); no worker slot has reached the restart-backoff cap
unless its current worker has since stayed up for `worker_min_uptime` (a pool
that cannot be kept up); and no ready worker is past its heartbeat timeout.
"""

from __future__ import annotations

from collections.abc import Callable

from .pool import Phase, Pool, State, Worker


def silent_workers(
    pool: Pool, last_beat: Callable[[int], float], timeout: float, now: float
) -> list[tuple[Worker, float]]:
    """Ready workers that showed no progress for longer than `timeout`, with how long."""
    out = []
    for w in pool.workers():
        if w.state is not State.READY or w.beat_index < 0:
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
    if any(w.state is State.READY for w in pool.workers()):
        return True, "ok"
    if phase is Phase.PAUSED:
        return False, "no worker is ready (workers stopped on request)"
    return False, "no worker is ready"
