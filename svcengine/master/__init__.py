"""The master: one single-threaded event loop that sleeps until something happens.

Master is the composition root: it builds Loop (the only select()), Workers (the
reconciler, with a launcher per worker type), Lifecycle and Changes (the phase,
READY=1, stop, reload, scale, pause) and Health, and hands every signal and control
request to commands.TABLE. Each turn is `step()`, which tests/unit/test_master_step.py
drives one at a time on a fake clock with a fake launcher.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import config
from ..signals import PRESETS, Command, SignalPipe
from ..timers import MIN_EVERY, Timer, Timers, checked_delay, now
from ..unix import linux as _linux
from ..unix import log as logsetup
from ..unix import proctitle
from ..unix.privileges import Identity
from ..unix.systemd import Notifier, watchdog_interval
from . import commands, mold, requests
from .changes import Changes
from .handles import ExitStatus
from .health import Health, heartbeat_interval
from .host import Server
from .launchers import Launcher
from .lifecycle import Lifecycle
from .loop import MAX_FAILED_TURNS, Loop, LoopStuck, guarded
from .phase import Phase
from .pool import Pool
from .workers import Workers

if TYPE_CHECKING:
    from ..control import ControlServer
    from ..hooks import Hooks
    from ..unix.sockets import Listener
    from ..upgrade import Upgrader

__all__ = ["MAX_FAILED_TURNS", "LoopStuck", "Master", "Phase"]

log = logging.getLogger("svcengine.master")

NOTIFY_RETRY = 0.05  # seconds between retries while systemd's notify queue is full


class Master:
    def __init__(
        self,
        server: Server,
        cfg: config.Config,
        sockets: list[Listener],
        notifier: Notifier,
        reload_config: Callable[[], config.Config],
        launcher: Launcher | None = None,
        clock: Callable[[], float] = now,
    ) -> None:
        self.server = server
        self._cfg = cfg
        self.sockets = sockets
        self.notify = notifier
        self.reload_config = reload_config
        self.loop = Loop(Timers(clock))
        self.clock = clock
        self.pid = os.getpid()
        self.exit_code: int | None = None
        self.failure: str | None = None  # why the master gave up, for the daemon launcher
        self.started_at = clock()
        self.commands = PRESETS[cfg.signal_map]
        self.control: ControlServer | None = None
        self.identity: Identity | None = Identity.resolve(cfg.chuser, cfg.chgroup)
        self.upgrader: Upgrader | None = None  # made on the first USR2
        self.signals: SignalPipe | None = None
        self._notify_retry: Timer | None = None
        self.pool = Pool.of(cfg)
        self.lifecycle = Lifecycle(self)
        self.changes = Changes(self, self.lifecycle)
        self.lifecycle.changes = self.changes
        self.workers = Workers(self, self.pool, self.lifecycle)
        self.workers.launcher = launcher
        self.health = Health(self)

    # --- what the pieces share ----------------------------------------------------------
    @property
    def cfg(self) -> config.Config:
        return self._cfg

    def set_config(self, new: config.Config, server: bool = True) -> None:
        self._cfg = new
        if server:
            self.server.config = new
        self.health.arm_heartbeats(heartbeat_interval(new))

    @property
    def hooks(self) -> Hooks:
        return self.server.hooks

    @property
    def hook_server(self) -> object:
        return self.server

    @property
    def selector(self) -> Any:  # upgrade.py, handover and control register here
        return self.loop.selector

    @property
    def timers(self) -> Timers:
        return self.loop.timers

    @property
    def wakeups(self) -> int:
        return self.loop.wakeups

    @property
    def phase(self) -> Phase:
        return self.lifecycle.phase

    @property
    def announced_ready(self) -> bool:
        return self.lifecycle.announced_ready

    def first_ready(self, before_ready: bool) -> None:
        """The first READY=1: when_ready and a new master's take-over come before it,
        telling an old master (or the daemon launcher) after it."""
        if before_ready:
            self.server.hooks.call("when_ready", self.server)
            self.server.take_over()
        else:
            self.server.announce_ready()

    # --- set-up and the loop --------------------------------------------------------------
    def start(self) -> None:
        """Everything before the first turn: pipes, signal handlers, timers, first workers."""
        self.workers.open()
        self.signals = SignalPipe(self.commands)
        if self.workers.launcher is None:
            self.workers.launcher = mold.launcher_for(self)
        self.loop.register(self.signals.rfd, self._on_signals)
        if self.cfg.subreaper and self.pid != 1 and _linux.set_child_subreaper():
            log.info("child subreaper: orphaned descendants are reaped here")
        self.health.arm(watchdog_interval(), heartbeat_interval(self.cfg))
        self.attach_control(self.control)
        log.info(
            "master started (pid %d): %d %s worker(s) of %s",
            self.pid,
            self.cfg.workers,
            self.cfg.worker_type,
            self._worker_name(),
        )
        self.workers.maintain()
        self.lifecycle.check_ready()
        self._flush_notifications()

    def run(self) -> int:
        proctitle.set_title(proctitle.master_title(self.cfg.name, self.cfg.daemon_process_name))
        try:
            self.start()
            while self.exit_code is None:
                self.step()
        except Exception as exc:
            # a broken invariant (see Loop.turn()): say so where the operator looks, then go;
            # the workers follow (PDEATHSIG, the life pipe)
            log.critical("the master's loop cannot go on (%s); exiting", exc, exc_info=True)
            self.failure = f"the master's loop failed: {exc}"
            self.notify.status(self.failure)
            self.notify.flush()
            self.exit_code = 1
        finally:
            self.close()
        return self.exit_code

    def step(self, timeout: float | None = None) -> None:
        """One turn: wait for the next event or deadline (at most `timeout`), handle it."""
        self.loop.turn(timeout)
        if self.phase is Phase.STOPPING:
            self.lifecycle.check_stopped()
        self._flush_notifications()

    def _flush_notifications(self) -> None:
        """Once per turn: coalesced STATUS=, and a retry while systemd's queue is full."""
        self.notify.flush()
        if self.notify.pending and (self._notify_retry is None or self._notify_retry.cancelled):
            self._notify_retry = self.loop.timers.after(NOTIFY_RETRY, self._retry_notify)

    def _retry_notify(self) -> None:
        """Does nothing: its timer only ends the select() so the next turn flushes."""
        self._notify_retry = None

    def close(self) -> None:
        self.workers.close()
        if self.signals is not None:
            self.signals.close()
        if self.control is not None:
            self.control.close()
        self.loop.close()

    def _worker_name(self) -> str:
        cls = self.server.worker_class
        return f"{cls.__module__}:{cls.__qualname__}" if cls else self.cfg.worker

    def master_fds(self) -> list[int]:
        """Descriptors a forked worker must close: they belong to the master alone."""
        fds = [self.loop.fileno()]  # life.wfd: LifePipe.child_side(); heartbeats.fd: spawn
        fds += self.workers.fds()
        fds += self.server.master_fds()
        if self.control is not None:
            fds.append(self.control.fileno())
            fds += [c.fileno() for c in self.control.buffers]
        if self.upgrader is not None:
            fds += self.upgrader.fds()
        return fds

    # --- commands: signals and the control socket end in commands.dispatch() --------------
    def _on_signals(self, fd: int) -> None:
        assert self.signals is not None
        for sig in self.signals.read():
            command = self.commands.get(sig, Command.IGNORE)
            if command is not Command.CHILD:
                log.debug("%s: %s", sig.name, command.value)
            self.handle(command, sig)

    def handle(self, command: Command, sig: signal.Signals | None = None) -> None:
        """Carry out one command from a signal (upgrade.py forwards its signals here)."""
        commands.dispatch(self, command)

    def control_request(self, req: dict[str, Any]) -> dict[str, Any]:
        return requests.answer(self, req)

    def snapshot(self) -> dict[str, Any]:
        return requests.snapshot(self)

    def attach_control(self, control: ControlServer | None) -> None:
        self.control = control
        if control is not None:
            control.attach(self.loop.selector, self.loop.timers)

    # --- the table's handlers (commands.Host) ------------------------------------------------
    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.upgrader is not None and self.upgrader.owns(pid):
                self.upgrader.child_exited(status)
            else:
                self.workers.reaped(pid, ExitStatus.from_wait(status))

    def settle_children(self) -> None:  # upgrade.py, before its double fork
        if self.workers.launcher is not None:
            self.workers.launcher.settle()

    def begin_stop(self, quick: bool) -> None:  # upgrade.py and the hand-over call it
        self.lifecycle.begin_stop(quick)

    def reopen_logs(self) -> None:
        try:
            logsetup.reopen(self.cfg.log)
            self.server.chown_log()  # a file the reopen created: the workers reopen it next
            log.info("reopened log file; telling workers")
        except OSError as exc:  # keeps writing to the file it has
            log.error("cannot reopen the log file %s: %s", self.cfg.log, exc.strerror)
        self.workers.signal_all(signal.SIGUSR1)

    def upgrade(self) -> None:
        if not self.announced_ready:
            log.warning("%s ignored: this master is not ready yet", Command.UPGRADE.value)
            return
        if self.upgrader is None:
            from ..upgrade import Upgrader

            self.upgrader = Upgrader(self)
        self.upgrader.begin()

    # --- what others ask ------------------------------------------------------------------
    def healthy(self) -> tuple[bool, str]:
        return self.health.healthy()

    def status_text(self) -> str:
        return self.lifecycle.status_text()

    # --- periodic work for users ----------------------------------------------------------
    def every(self, seconds: float, fn: Callable[[], object]) -> Timer:
        return self.loop.timers.every(
            checked_delay(seconds, MIN_EVERY, config.MAX_SECONDS), guarded(fn)
        )

    def after(self, seconds: float, fn: Callable[[], object]) -> Timer:
        return self.loop.timers.after(checked_delay(seconds, 0.0, config.MAX_SECONDS), guarded(fn))
