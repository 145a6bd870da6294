"""How the master describes itself: systemd's STATUS= line and `ctl status`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import timers
from ..unix import linux as _linux
from . import health
from .phase import Phase
from .pool import Pool


@dataclass(frozen=True)
class StatusView:
    """What `ctl status` shows, handed in by the master (report never sees the Master)."""

    pid: int
    name: str
    phase: Phase
    pool: Pool
    health: tuple[bool, str]  # the watchdog's answer
    announced_ready: bool
    started_at: float
    wakeups: int
    upgrade: dict[str, Any] | None
    mold: dict[str, object] | None = None  # the launcher's mold: pid, generation, retry_in


def status_text(pool: Pool, phase: Phase, ready: int | None = None) -> str:
    """STATUS=; `ready` is pool.ready_count() when the caller has just counted it."""
    if phase is Phase.PAUSED:
        return f"workers stopped on request; {pool.total_restarts} restarts"
    if ready is None:
        ready = pool.ready_count()
    text = f"{ready}/{pool.target} workers ready; {pool.total_restarts} restarts"
    if phase is Phase.RELOADING:
        text += "; reloading"
    return text


def snapshot(master: StatusView, now: float | None = None) -> dict[str, Any]:
    """Everything `svcengine ctl status` shows, as plain data."""
    now = timers.now() if now is None else now
    pool = master.pool
    healthy, why = master.health
    if healthy:
        healthy, why = health.serving(pool, master.phase)
    starting = not master.announced_ready
    workers = []
    for slot in sorted(pool.slots.values(), key=lambda s: s.worker_id):
        w = slot.current
        workers.append(
            {
                "id": slot.worker_id,
                "pid": w.pid if w else None,
                "state": slot.state.value,
                "uptime": round(now - w.started_at, 3) if w else None,
                "restarts": slot.restarts,
                "last_exit": slot.last_exit,
                "rss": _linux.rss_bytes(w.pid) if w and w.pid is not None else None,
            }
        )
    for w in pool.superseded():
        workers.append(
            {
                "id": w.worker_id,
                "pid": w.pid,
                "state": "retiring",
                "uptime": round(now - w.started_at, 3),
                "restarts": None,
                "last_exit": None,
                "rss": _linux.rss_bytes(w.pid) if w.pid is not None else None,
            }
        )
    return {
        "pid": master.pid,
        "name": master.name,
        "phase": master.phase.value,
        "status": status_text(pool, master.phase),
        "healthy": healthy and not starting,
        "health": "starting" if starting else why,
        "target": pool.target,
        "restarts": pool.total_restarts,
        "uptime": round(now - master.started_at, 3),
        "loop_turns": master.wakeups,  # an idle master's stays put: it sleeps until an event
        "workers": workers,
        "upgrade": master.upgrade,
        "mold": master.mold,
    }
