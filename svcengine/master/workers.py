"""The reconciler: keep the pool at its target through a launcher, and turn what
workers say (status lines) and how they end (ExitStatus) into pool records.

It decides nothing about the master's phase: ready, boot failures and exits go
on to the lifecycle (WorkerEvents), which decides what they mean.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import TYPE_CHECKING, Protocol

from .. import channel
from ..timers import Timer
from .handles import ExitStatus, Key, label
from .launchers import Launcher
from .phase import Phase
from .pool import Pool, SlotState, WorkerRecord

if TYPE_CHECKING:
    from ..config import Config
    from ..hooks import Hooks
    from .loop import Loop

log = logging.getLogger("svcengine.master")

START_BATCH = 32  # workers asked of the launcher at once (a mold forks them back to back)


class WorkerEvents(Protocol):
    """What the lifecycle hears from the reconciler."""

    @property
    def phase(self) -> Phase: ...
    def worker_ready(self, w: WorkerRecord) -> None: ...
    def boot_failed(self, w: WorkerRecord, text: str) -> None: ...
    def worker_exited(self, w: WorkerRecord, cause: str, expected: bool) -> None: ...
    def update_status(self) -> None: ...


class WorkersHost(Protocol):
    loop: Loop

    @property
    def cfg(self) -> Config: ...
    @property
    def hooks(self) -> Hooks: ...
    @property
    def hook_server(self) -> object: ...
    def clock(self) -> float: ...


class Workers:
    def __init__(self, host: WorkersHost, pool: Pool, events: WorkerEvents) -> None:
        self.host = host
        self.pool = pool
        self.events = events
        self.launcher: Launcher | None = None  # set by the master before the first spawn
        self.life: channel.LifePipe | None = None
        self.heartbeats: channel.Heartbeats | None = None
        self._status_fds: dict[Key, tuple[int, bytearray]] = {}  # key -> (fd, partial line)
        self._maintain_timer: Timer | None = None
        self._next_spawn_at = 0.0

    def open(self) -> None:
        """The life pipe and the heartbeat cells: made before the first fork."""
        self.life = channel.LifePipe.create()
        self.heartbeats = channel.Heartbeats()

    def close(self) -> None:
        if self.launcher is not None:
            self.launcher.close()
        for fd, _ in self._status_fds.values():
            _close_fd(fd)
        self._status_fds.clear()
        if self.life is not None:
            self.life.close()
        if self.heartbeats is not None:
            self.heartbeats.close()

    def fds(self) -> list[int]:
        """The status pipes' read ends (and a mold's socket): the master's alone, closed
        in every worker."""
        own = self.launcher.fds() if self.launcher is not None else []
        return [fd for fd, _ in self._status_fds.values()] + own

    def reaped(self, pid: int, status: ExitStatus) -> None:
        """A child of the master ended: the launcher's own (a mold) or a worker."""
        if self.launcher is None or not self.launcher.reaped(pid, status):
            self.on_exit(pid, status)

    def last_beat(self, index: int) -> float:
        assert self.heartbeats is not None
        return self.heartbeats.last(index)

    # --- keeping the pool at its target --------------------------------------------
    def maintain(self) -> None:
        """Start whatever workers the pool is missing, pacing and backing off."""
        if self.events.phase in (Phase.STOPPING, Phase.PAUSED):
            return
        assert self.launcher is not None
        if not self.launcher.can_start():
            return  # a mold still importing: it calls maintain() again once it can fork
        cfg = self.host.cfg
        now = self.host.clock()
        wanted = self.pool.wanted(now)
        size = 1 if cfg.start_worker_delay else START_BATCH
        for batch in (wanted[i : i + size] for i in range(0, len(wanted), size)):
            if now < self._next_spawn_at:
                self._arm_maintain(self._next_spawn_at)
                return
            self.spawn(batch)
            if cfg.start_worker_delay:
                import random

                jitter = random.uniform(-1, 1) * cfg.start_worker_delay_rand
                self._next_spawn_at = now + cfg.start_worker_delay * (1 + jitter)
        retry = self.pool.next_retry(self.host.clock())
        if retry is not None:
            self._arm_maintain(retry)

    def _arm_maintain(self, at: float) -> None:
        timers = self.host.loop.timers
        t = self._maintain_timer
        if t is not None and not t.cancelled and t.deadline <= at:
            return
        if t is not None:
            t.cancel()
        self._maintain_timer = timers.after(at - self.host.clock(), self.maintain)

    def spawn(self, worker_ids: list[int]) -> None:
        """Start these slots' workers, as one batch (before_fork runs for each first)."""
        assert self.launcher is not None and self.heartbeats is not None
        host = self.host
        orders = []
        for worker_id in worker_ids:
            host.hooks.call("before_fork", host.hook_server, self.pool.slots[worker_id])
            orders.append((worker_id, self.heartbeats.allocate()))
        for (worker_id, beat), started in zip(
            orders, self.launcher.start_many(orders), strict=True
        ):
            if isinstance(started, Exception):
                self.heartbeats.release(beat)
                at = self.pool.spawn_failed(worker_id, host.clock())
                log.error(
                    "cannot fork worker %d: %s; retrying in %.1fs",
                    worker_id,
                    started,
                    at - host.clock(),
                )
                self._arm_maintain(at)
                continue
            key = started.key
            w = self.pool.spawned(worker_id, key, host.clock())
            w.beat_index = beat
            self._watch(key, started.status_fd)
            log.debug("worker %d started (%s)", worker_id, w.label)
        self.events.update_status()  # once a batch: the first says "0/N workers ready"

    def _watch(self, key: Key, status_fd: int) -> None:
        self._status_fds[key] = (status_fd, bytearray())
        self.host.loop.register(status_fd, lambda _fd: self.on_status(key))

    def stop(self, w: WorkerRecord, signum: int) -> None:
        w.state = SlotState.STOPPING
        w.stop_sent_at = self.host.clock()
        self.kill(w.key, signum)

    def kill(self, key: Key, signum: int) -> None:
        assert self.launcher is not None
        if not self.launcher.signal(key, signum):  # abandoned (a thread cannot be killed)
            self._drop_status_fd(key)
            self.on_exit(key, ExitStatus.killed(signal.SIGKILL))  # counted as killed

    def kill_group(self, key: Key, signum: int) -> bool:
        assert self.launcher is not None
        return self.launcher.kill_group(key, signum)

    def signal_all(self, signum: int, workers: list[WorkerRecord] | None = None) -> None:
        for w in self.pool.workers() if workers is None else workers:
            self.kill(w.key, signum)

    # --- what workers say and how they end -------------------------------------------
    def on_status(self, key: Key) -> None:
        entry = self._status_fds.get(key)
        if entry is None:
            return
        fd, buf = entry
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop_status_fd(key)
            return
        buf += data
        messages, rest = channel.parse(bytes(buf))
        buf[:] = rest
        for kind, text in messages:
            if kind == channel.READY:
                self._on_ready(key)
            elif kind == channel.BOOT_FAILED:
                w = self.pool.by_key.get(key)
                if w is not None:
                    w.boot_error = text
                    self.events.boot_failed(w, text)
            elif kind == channel.EXITED:
                assert self.launcher is not None
                status = self.launcher.exit_line(key, text)
                if status is not None:
                    self.on_exit(key, status)

    def _on_ready(self, key: Key) -> None:
        w = self.pool.ready(key, self.host.clock())
        if w is None:
            return
        self.host.hooks.call("after_worker_ready", self.host.hook_server, w)
        self.events.worker_ready(w)

    def on_exit(self, key: Key, status: ExitStatus) -> None:
        """A worker ended (reaped, or its thread said so): record it, tell the lifecycle."""
        if key in self._status_fds:
            self.on_status(key)  # what it said last (a boot failure) before how it ended
        w0 = self.pool.by_key.get(key)
        was_stopping = w0 is not None and (w0.state is SlotState.STOPPING or w0.superseded)
        w = self.pool.exited(key, status, self.host.clock())
        if w is None:
            log.debug("reaped orphan %s (%s)", label(key), status)
            return
        self._drop_status_fd(key)
        assert self.heartbeats is not None
        self.heartbeats.release(w.beat_index)
        cause = str(status)
        expected = was_stopping or self.events.phase is Phase.STOPPING
        level = logging.INFO if expected else logging.WARNING
        log.log(level, "worker %d (%s) %s", w.worker_id, w.label, cause)
        if self.kill_group(key, signal.SIGKILL):
            log.info("worker %d (%s) left processes in its group: killed", w.worker_id, w.label)
        # the hook's `status` stays the waitpid-style int it always was (docs/hooks.md)
        hooks = self.host.hooks
        hooks.call("after_worker_exit", self.host.hook_server, w, status.wait_status())
        self.events.worker_exited(w, cause, expected)

    def _drop_status_fd(self, key: Key) -> None:
        entry = self._status_fds.pop(key, None)
        if entry is not None:
            self.host.loop.unregister(entry[0])
            _close_fd(entry[0])


def _close_fd(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
