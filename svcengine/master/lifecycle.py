"""The master's lifecycle: its phase (moved only along phase.TRANSITIONS), READY=1
sent once as a stored fact, what worker events mean in each phase, and the stop.

Reloads, scaling and pausing are in changes.py; both talk to systemd through the
one Notifier, and only this module sends READY=1, STOPPING=1 and the STATUS= of a
phase change.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from .. import config
from . import report
from .phase import TRANSITIONS, IllegalTransition, Phase
from .pool import WorkerRecord
from .stopping import Stopper

if TYPE_CHECKING:
    from ..hooks import Hooks
    from ..unix.systemd import Notifier
    from ..upgrade import Upgrader
    from .loop import Loop
    from .pool import Pool
    from .workers import Workers

log = logging.getLogger("svcengine.master")

EXTEND_START_BY = 30.0  # seconds of start-up granted per worker that becomes ready
# a new-generation worker that dies this many times in a row before it is ready: the
# reload is abandoned (a boot failure it reports abandons it at once)
RELOAD_MAX_FAILURES = 3


class LifecycleHost(Protocol):
    """What the lifecycle reads from, and tells, the master that holds it."""

    loop: Loop
    pool: Pool
    workers: Workers
    notify: Notifier
    pid: int
    started_at: float
    exit_code: int | None
    failure: str | None
    upgrader: Upgrader | None

    @property
    def cfg(self) -> config.Config: ...
    @property
    def hooks(self) -> Hooks: ...
    @property
    def hook_server(self) -> object: ...
    def clock(self) -> float: ...
    def first_ready(self, before_ready: bool) -> None: ...


class ReloadState(Protocol):
    """The part of changes.Changes the lifecycle calls back into."""

    def abandon_reload(self, why: str) -> None: ...
    def run_pending_reload(self) -> None: ...


class Lifecycle:
    def __init__(self, host: LifecycleHost) -> None:
        self.host = host
        self.changes: ReloadState  # set by the master: changes.Changes(host, self)
        self.phase = Phase.STARTING
        # READY=1 was sent once (a fact, not a phase: a HUP or WINCH may come first)
        self.announced_ready = False
        self.stopper: Stopper | None = None
        self.final_code = 0
        self.reload_failure: str | None = None  # shown in STATUS= until a reload succeeds
        self.previous_cfg: config.Config | None = None  # while a reload may be abandoned
        self.pending_reload: Callable[[], None] | None = None  # a HUP during a reload

    def enter(self, phase: Phase) -> None:
        """The one place the phase changes: checked against TRANSITIONS, logged, and
        STATUS= updated."""
        old = self.phase
        if phase not in TRANSITIONS[old]:
            raise IllegalTransition(f"{old.value} -> {phase.value}")
        if phase is not old:
            log.debug("phase: %s -> %s", old.value, phase.value)
        self.phase = phase
        if phase is Phase.STOPPING:
            self.host.notify.stopping()
            self.host.notify.status("stopping")
        else:
            self.update_status()

    # --- STATUS= ---------------------------------------------------------------------
    def status_text(self, ready: int | None = None) -> str:
        text = report.status_text(self.host.pool, self.phase, ready)
        if self.reload_failure and self.phase is not Phase.RELOADING:
            return f"{self.reload_failure} ({text})"
        return text

    def update_status(self, ready: int | None = None) -> None:
        if self.phase is not Phase.STOPPING:
            self.host.notify.status(self.status_text(ready))

    # --- what worker events mean (WorkerEvents) -------------------------------------------
    def worker_ready(self, w: WorkerRecord) -> None:
        h = self.host
        # at start the "ready: N/N workers" line says it for all; later each one is news
        level = logging.INFO if self.announced_ready else logging.DEBUG
        log.log(level, "worker %d (%s) ready", w.worker_id, w.label)
        for old in h.pool.superseded(w.worker_id):
            h.workers.stop(old, signal.SIGTERM)
        ready = h.pool.ready_count()  # nothing below changes it: counted once (O(workers))
        if not self.announced_ready and ready < h.pool.target:
            # a start that makes progress may take longer than TimeoutStartSec= alone allows
            h.notify.extend_timeout(EXTEND_START_BY)
        self.update_status(ready)
        self.check_ready(ready)

    def boot_failed(self, w: WorkerRecord, text: str) -> None:
        h = self.host
        if self.phase is Phase.STOPPING:
            return
        if not self.announced_ready:
            log.error("worker %d failed to boot (%s); giving up", w.worker_id, text)
            h.failure = f"worker {w.worker_id} failed to boot: {text}"
            h.notify.status(h.failure)
            self.final_code = 1
            self.begin_stop(quick=True)
        elif self.phase is Phase.RELOADING and w.generation == h.pool.generation:
            self.changes.abandon_reload(f"worker {w.worker_id} failed to boot: {text}")

    def worker_exited(self, w: WorkerRecord, cause: str, expected: bool) -> None:
        h = self.host
        slot = h.pool.slots.get(w.worker_id)
        if slot is not None and slot.retired_code is not None and slot.current is None:
            log.error(
                "worker %d exited with unrecoverable status %d; not restarting it",
                w.worker_id,
                slot.retired_code,
            )
            code = h.pool.all_retired()
            if code is not None and self.phase is not Phase.STOPPING:
                log.error("every worker exited with an unrecoverable status; master exits %d", code)
                h.failure = f"every worker exited with unrecoverable status {code}"
                self.final_code = code
                self.begin_stop(quick=False)
        elif (
            self.phase is Phase.RELOADING
            and self.announced_ready
            and not expected
            and w.ready_at is None
            and w.generation == h.pool.generation
            and slot is not None
            and slot.fast_failures >= RELOAD_MAX_FAILURES
        ):
            self.changes.abandon_reload(
                f"worker {w.worker_id} {cause} {slot.fast_failures} times before it was ready"
            )
            return
        elif slot is not None and slot.current is None and slot.not_before > h.clock():
            log.warning(
                "worker %d is crashing in a loop; next start in %.1fs",
                w.worker_id,
                slot.not_before - h.clock(),
            )
        h.workers.maintain()
        self.update_status()
        self.check_ready()

    def check_ready(self, ready: int | None = None) -> None:
        """READY=1 once every worker of the (new) generation is ready."""
        h = self.host
        if self.phase not in (Phase.STARTING, Phase.RELOADING):
            return
        if ready is None:
            ready = h.pool.ready_count()
        if ready < h.pool.target or h.pool.superseded():
            return
        first = not self.announced_ready
        self.announced_ready = True
        self.enter(Phase.RUNNING)
        self.previous_cfg = None
        self.reload_failure = None
        status = self.status_text()
        if first:
            log.info("ready: %s (%.0f ms after start)", status, (h.clock() - h.started_at) * 1000)
            h.first_ready(before_ready=True)
        else:
            log.info("reload complete: %s", status)
            if h.workers.launcher is not None:
                h.workers.launcher.commit_generation()
        h.notify.ready(status=status, mainpid=h.pid)
        if first:
            h.first_ready(before_ready=False)
        self.changes.run_pending_reload()

    # --- the stop ----------------------------------------------------------------------
    def begin_stop(self, quick: bool) -> None:
        h = self.host
        if self.stopper is not None:
            if quick and not self.stopper.quick:
                log.info("quick stop requested during graceful stop")
                for w, signum in self.stopper.escalate(h.pool.workers(), h.clock()):
                    h.workers.kill(w.key, signum)
                self._arm_stopper()
            return
        if h.upgrader is not None:
            h.upgrader.stop_new_master(quick)  # if an upgrade is running: no successor
        log.info(
            "%s stop: stopping %d worker(s)",
            "quick" if quick else "graceful",
            len(h.pool.workers()),
        )
        self.enter(Phase.STOPPING)
        cfg = h.cfg
        timeout = cfg.worker_immediate_kill_timeout if quick else cfg.worker_graceful_kill_timeout
        self.stopper = Stopper(
            quick=quick, timeout=timeout, quick_timeout=cfg.worker_immediate_kill_timeout
        )
        for w in self.stopper.start(h.pool.workers(), h.clock()):
            h.workers.kill(w.key, self.stopper.signal_for(w))
        self._arm_stopper()
        self.check_stopped()

    def _arm_stopper(self) -> None:
        assert self.stopper is not None
        deadline = self.stopper.deadline
        if deadline is not None:
            self.host.loop.timers.after(deadline - self.host.clock(), self._stopper_tick)

    def _stopper_tick(self) -> None:
        h = self.host
        assert self.stopper is not None
        for w, signum in self.stopper.tick(h.pool.workers(), h.clock()):
            log.warning(
                "worker %d (%s) did not stop in time; sending %s",
                w.worker_id,
                w.label,
                signal.Signals(signum).name,
            )
            if not h.workers.kill_group(w.key, signum):  # worker and its group
                h.workers.kill(w.key, signum)
        self._arm_stopper()

    def check_stopped(self) -> None:
        h = self.host
        if self.phase is Phase.STOPPING and not h.pool.by_key and h.exit_code is None:
            if h.upgrader is not None and h.upgrader.holds_exit:
                return  # the new master it started is still stopping
            log.info("all workers stopped; master exits %d", self.final_code)
            h.exit_code = self.final_code
