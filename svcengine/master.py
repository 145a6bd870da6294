"""The master: one single-threaded event loop that sleeps until something happens.

Everything that wakes it is an event: a signal byte on the wakeup pipe, a
status line from a worker, or the next deadline in the timer heap. With no
timer armed the select() has no timeout at all, so an idle master makes no
wakeups. Each turn of the loop is `step()`, which a test can drive one at a time.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import channel, config, health, report, spawn, timers
from .control import ControlServer
from .pool import Backoff, Phase, Pool, State, Worker, describe_status
from .signals import NAMED, PRESETS, Command, SignalPipe
from .stopping import Stopper
from .unix import linux as _linux
from .unix import log as logsetup
from .unix import proctitle
from .unix.privileges import Identity
from .unix.systemd import Notifier, watchdog_interval

if TYPE_CHECKING:
    from .server import Server
    from .threads import ThreadWorkers
    from .unix.sockets import Listener
    from .upgrade import Upgrader

log = logging.getLogger("svcengine.master")

EXTEND_START_BY = 30.0  # seconds of start-up granted per worker that becomes ready
NOTIFY_RETRY = 0.05  # seconds between retries while systemd's notify queue is full
# a new-generation worker that dies this many times in a row before it is ready: the
# reload is abandoned (a boot failure it reports abandons it at once)
RELOAD_MAX_FAILURES = 3
# turns in a row in which a callback raised: the loop cannot make progress (a callback
# that raises before it consumes its event would spin), a broken invariant: exit
MAX_FAILED_TURNS = 100


class LoopStuck(Exception):
    """The loop cannot go on; the master exits (the only exception that may end it)."""


def _has_terminal() -> bool:
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False
    os.close(fd)
    return True


class Master:
    def __init__(
        self,
        server: Server,
        cfg: config.Config,
        sockets: list[Listener],
        notifier: Notifier,
        reload_config: Callable[[], config.Config],
    ) -> None:
        self.server = server
        self.cfg = cfg
        self.sockets = sockets
        self.notify = notifier
        self.reload_config = reload_config
        self.timers = timers.Timers()
        self.selector = selectors.DefaultSelector()
        self.pid = os.getpid()
        self.phase = Phase.STARTING
        self.exit_code: int | None = None
        self._final_code = 0
        self._status_fds: dict[int, tuple[int, bytearray]] = {}  # pid -> (fd, partial line)
        self._maintain_timer: timers.Timer | None = None
        self._notify_retry: timers.Timer | None = None
        self._next_spawn_at = 0.0
        self.started_at = timers.now()
        self.stopper: Stopper | None = None
        self.pool = Pool(
            cfg.workers,
            Backoff(
                cfg.worker_min_uptime,
                cfg.worker_restart_backoff_min,
                cfg.worker_restart_backoff_max,
            ),
            frozenset(cfg.unrecoverable_exit_codes),
        )
        self.commands = PRESETS[cfg.signal_map]
        self.wakeups = 0  # loop turns, shown by `ctl status --json`
        self.failure: str | None = None  # why the master gave up, for the daemon launcher
        self.control: ControlServer | None = None
        self.identity = Identity.resolve(cfg.chuser, cfg.chgroup)
        self.upgrader: Upgrader | None = None  # made on the first USR2
        # READY=1 was sent once (a fact, not a phase: a HUP or WINCH may come first)
        self.announced_ready = False
        self._failed_turns = 0
        self._previous_cfg: config.Config | None = None  # while a reload may be abandoned
        self._pending_reload: Callable[[], None] | None = None  # a HUP during a reload
        self.reload_failure: str | None = None  # shown in STATUS= until a reload succeeds

    # --- set-up and the loop ----------------------------------------------
    def run(self) -> int:
        proctitle.set_title(proctitle.master_title(self.cfg.name, self.cfg.daemon_process_name))
        self.life = channel.LifePipe.create()
        self.heartbeats = channel.Heartbeats()
        self.signals = SignalPipe(self.commands)
        self.threads: ThreadWorkers | None = None
        if self.cfg.worker_type == "thread":
            # deferred, like random and upgrade below: only some configurations use them
            from .threads import ThreadWorkers

            self.threads = ThreadWorkers(
                lambda: self.cfg,
                self.server.worker_class,
                self.heartbeats,
                self.sockets,
                lambda w: self.server.hooks.call_strict("after_fork", self.server, w),
            )
        self.selector.register(self.signals.rfd, selectors.EVENT_READ, self._on_signals)
        if self.cfg.subreaper and self.pid != 1 and _linux.set_child_subreaper():
            log.info("child subreaper: orphaned descendants are reaped here")
        interval = watchdog_interval()
        if interval:
            self.timers.every(interval, self._watchdog)
        if self.cfg.worker_heartbeat_timeout:
            self.timers.every(self.cfg.worker_heartbeat_interval, self._check_heartbeats)
        self.attach_control(self.control)
        log.info(
            "master started (pid %d): %d %s worker(s) of %s",
            self.pid,
            self.cfg.workers,
            self.cfg.worker_type,
            self._worker_name(),
        )
        try:
            self._maintain()
            self._check_ready()
            self._flush_notifications()
            while self.exit_code is None:
                self.step()
        except Exception as exc:
            # a broken invariant (see step()): say so where the operator looks, then go;
            # the workers follow (PDEATHSIG, the life pipe)
            log.critical("the master's loop cannot go on (%s); exiting", exc, exc_info=True)
            self.failure = f"the master's loop failed: {exc}"
            self.notify.status(self.failure)
            self.notify.flush()
            self.exit_code = 1
        finally:
            self._teardown()
        return self.exit_code

    def step(self, timeout: float | None = None) -> None:
        """One turn: wait for the next event or deadline, then handle what is due.

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
        if self.phase is Phase.STOPPING:
            self._check_stopped()
        self._flush_notifications()

    def _flush_notifications(self) -> None:
        """Once per turn: coalesced STATUS=, and a retry while systemd's queue is full."""
        self.notify.flush()
        if self.notify.pending and (self._notify_retry is None or self._notify_retry.cancelled):
            self._notify_retry = self.timers.after(NOTIFY_RETRY, self._retry_notify)

    def _retry_notify(self) -> None:
        self._notify_retry = None

    def _teardown(self) -> None:
        for fd, _ in self._status_fds.values():
            self._close_fd(fd)
        self._status_fds.clear()
        self.signals.close()
        if self.control is not None:
            self.control.close()
        self.selector.close()
        self.life.close()
        self.heartbeats.close()

    def _worker_name(self) -> str:
        cls = self.server.worker_class
        return f"{cls.__module__}:{cls.__qualname__}" if cls else self.cfg.worker

    def master_fds(self) -> list[int]:
        """Descriptors a forked worker must close: they belong to the master alone."""
        fds = [self.selector.fileno()]  # life.wfd: LifePipe.child_side(); heartbeats.fd: spawn
        fds += [fd for fd, _ in self._status_fds.values()]
        fds += self.server.master_fds()
        if self.control is not None:
            fds.append(self.control.fileno())
            fds += [c.fileno() for c in self.control.buffers]
        if self.upgrader is not None:
            fds += self.upgrader.fds()
        return fds

    # --- spawning --------------------------------------------------------------
    def _fork_context(self) -> spawn.ForkContext:
        return spawn.ForkContext(
            master_pid=self.pid,
            config=self.cfg,
            worker_class=self.server.worker_class,
            life=self.life,
            heartbeats=self.heartbeats,
            sockets=self.sockets,
            master_fds=self.master_fds,
            restore_signals=self.signals.close,
            after_fork=lambda w: self.server.hooks.call_strict("after_fork", self.server, w),
            identity=self.identity,
        )

    def _maintain(self) -> None:
        """Start whatever workers the pool is missing, pacing and backing off."""
        if self.phase in (Phase.STOPPING, Phase.PAUSED):
            return
        now = timers.now()
        for worker_id in self.pool.wanted(now):
            if now < self._next_spawn_at:
                self._arm_maintain(self._next_spawn_at)
                return
            self._spawn(worker_id)
            if self.cfg.start_worker_delay:
                import random

                jitter = random.uniform(-1, 1) * self.cfg.start_worker_delay_rand
                self._next_spawn_at = now + self.cfg.start_worker_delay * (1 + jitter)
        retry = self.pool.next_retry(timers.now())
        if retry is not None:
            self._arm_maintain(retry)

    def _arm_maintain(self, at: float) -> None:
        t = self._maintain_timer
        if t is not None and not t.cancelled and t.deadline <= at:
            return
        if t is not None:
            t.cancel()
        self._maintain_timer = self.timers.after(at - timers.now(), self._maintain)

    def _spawn(self, worker_id: int) -> Worker | None:
        handle = self.pool.slots[worker_id]
        self.server.hooks.call("before_fork", self.server, handle)
        beat = self.heartbeats.allocate()
        try:
            if self.threads is not None:
                pid, status_fd = self.threads.start(worker_id, beat)
            else:
                pid, status_fd = spawn.fork_worker(self._fork_context(), worker_id, beat)
        except (OSError, RuntimeError) as exc:
            self.heartbeats.release(beat)
            at = self.pool.spawn_failed(worker_id, timers.now())
            log.error(
                "cannot fork worker %d: %s; retrying in %.1fs", worker_id, exc, at - timers.now()
            )
            self._arm_maintain(at)
            return None
        w = self.pool.spawned(worker_id, pid, timers.now())
        w.beat_index = beat
        self._status_fds[pid] = (status_fd, bytearray())
        self.selector.register(
            status_fd, selectors.EVENT_READ, lambda fd, pid=pid: self._on_status(pid)
        )
        log.debug("worker %d started (pid %d)", worker_id, pid)
        self._update_status()
        return w

    # --- events from workers --------------------------------------------------
    def _on_status(self, pid: int) -> None:
        entry = self._status_fds.get(pid)
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
            self._drop_status_fd(pid)
            return
        buf += data
        messages, rest = channel.parse(bytes(buf))
        buf[:] = rest
        for kind, text in messages:
            if kind == channel.READY:
                self._on_ready(pid)
            elif kind == channel.BOOT_FAILED:
                self._on_boot_failed(pid, text)
            elif kind == channel.EXITED and self.threads is not None:
                self.threads.exited(pid)
                code = int(text) if text.lstrip("-").isdigit() else 1
                self._on_exit(pid, (code & 0xFF) << 8)

    def _drop_status_fd(self, pid: int) -> None:
        entry = self._status_fds.pop(pid, None)
        if entry is not None:
            self.selector.unregister(entry[0])
            self._close_fd(entry[0])

    @staticmethod
    def _close_fd(fd: int) -> None:
        try:
            os.close(fd)
        except OSError:
            pass

    def _on_ready(self, pid: int) -> None:
        w = self.pool.ready(pid, timers.now())
        if w is None:
            return
        log.debug("worker %d (pid %d) ready", w.worker_id, pid)
        self.server.hooks.call("after_worker_ready", self.server, w)
        for old in self.pool.retiring(w.worker_id):
            self._stop_worker(old, signal.SIGTERM)
        if not self.announced_ready and self.pool.ready_count() < self.pool.target:
            # a start that makes progress may take longer than TimeoutStartSec= alone allows
            self.notify.extend_timeout(EXTEND_START_BY)
        self._update_status()
        self._check_ready()

    def _on_boot_failed(self, pid: int, text: str) -> None:
        w = self.pool.by_pid.get(pid)
        if w is None:
            return
        w.boot_error = text
        if self.phase is Phase.STOPPING:
            return
        if not self.announced_ready:
            log.error("worker %d failed to boot (%s); giving up", w.worker_id, text)
            self.failure = f"worker {w.worker_id} failed to boot: {text}"
            self.notify.status(self.failure)
            self._final_code = 1
            self.begin_stop(quick=True)
        elif self.phase is Phase.RELOADING and w.generation == self.pool.generation:
            self._abandon_reload(f"worker {w.worker_id} failed to boot: {text}")

    def _check_ready(self) -> None:
        """READY=1 once every worker of the (new) generation is ready."""
        if self.phase not in (Phase.STARTING, Phase.RELOADING):
            return
        if self.pool.ready_count() < self.pool.target or self.pool.retiring():
            return
        first = not self.announced_ready
        self.announced_ready = True
        self.phase = Phase.RUNNING
        self._previous_cfg = None
        self.reload_failure = None
        status = self.status_text()
        if first:
            log.info(
                "ready: %s (%.0f ms after start)", status, (timers.now() - self.started_at) * 1000
            )
            self.server.hooks.call("when_ready", self.server)
            self.server.take_over()
        else:
            log.info("reload complete: %s", status)
        self.notify.ready(status=status, mainpid=self.pid)
        if first:
            self.server.announce_ready()
        self._run_pending_reload()

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._on_exit(pid, status)

    def _on_exit(self, pid: int, status: int) -> None:
        if self.upgrader is not None and self.upgrader.owns(pid):
            self.upgrader.child_exited(status)
            return
        if pid > 0 and pid in self._status_fds:
            self._on_status(pid)  # what it said last (a boot failure) before how it ended
        was_stopping = (w0 := self.pool.by_pid.get(pid)) is not None and (
            w0.state is State.STOPPING or w0.retiring
        )
        w = self.pool.exited(pid, status, timers.now())
        if w is None:
            log.debug("reaped orphan pid %d (%s)", pid, describe_status(status))
            return
        self._drop_status_fd(pid)
        self.heartbeats.release(w.beat_index)
        cause = describe_status(status)
        expected = was_stopping or self.phase is Phase.STOPPING
        level = logging.INFO if expected else logging.WARNING
        log.log(level, "worker %d (pid %d) %s", w.worker_id, pid, cause)
        if pid > 0 and spawn.kill_group(pid, signal.SIGKILL):  # not a thread worker
            log.info("worker %d (pid %d) left processes in its group: killed", w.worker_id, pid)
        self.server.hooks.call("after_worker_exit", self.server, w, status)
        slot = self.pool.slots.get(w.worker_id)
        if slot is not None and slot.retired_code is not None and slot.current is None:
            log.error(
                "worker %d exited with unrecoverable status %d; not restarting it",
                w.worker_id,
                slot.retired_code,
            )
            code = self.pool.all_retired()
            if code is not None and self.phase is not Phase.STOPPING:
                log.error("every worker exited with an unrecoverable status; master exits %d", code)
                self.failure = f"every worker exited with unrecoverable status {code}"
                self._final_code = code
                self.begin_stop(quick=False)
        elif (
            self.phase is Phase.RELOADING
            and self.announced_ready
            and not expected
            and w.ready_at is None
            and w.generation == self.pool.generation
            and slot is not None
            and slot.fast_failures >= RELOAD_MAX_FAILURES
        ):
            self._abandon_reload(
                f"worker {w.worker_id} {cause} {slot.fast_failures} times before it was ready"
            )
            return
        elif slot is not None and slot.current is None and slot.not_before > timers.now():
            log.warning(
                "worker %d is crashing in a loop; next start in %.1fs",
                w.worker_id,
                slot.not_before - timers.now(),
            )
        self._maintain()
        self._update_status()
        self._check_ready()

    def _stop_worker(self, w: Worker, signum: int) -> None:
        w.state = State.STOPPING
        w.stop_sent_at = timers.now()
        self._kill(w.pid, signum)

    def _kill(self, pid: int, signum: int) -> None:
        if pid < 0 and self.threads is not None:  # a thread worker
            if not self.threads.signal(pid, signum):
                self._drop_status_fd(pid)
                self._on_exit(pid, signal.SIGKILL)  # abandoned: counted as killed
            return
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    # --- signals -------------------------------------------------------------------
    def _on_signals(self, fd: int) -> None:
        for sig in self.signals.read():
            command = self.commands.get(sig, Command.IGNORE)
            if command is not Command.CHILD:
                log.debug("%s: %s", sig.name, command.value)
            self.handle(command, sig)

    def handle(self, command: Command, sig: signal.Signals | None = None) -> None:
        """Carry out one command; signals and the control socket both end here."""
        if command is Command.CHILD:
            self._reap()
        elif command is Command.GRACEFUL_STOP:
            self.begin_stop(quick=False)
        elif command is Command.QUICK_STOP:
            self.begin_stop(quick=True)
        elif command is Command.RELOAD:
            self.reload()
        elif command is Command.RESTART_GRACEFUL:
            if not self._defer_reload(self.replace_workers):
                self.replace_workers()
        elif command is Command.RESTART_IMMEDIATE:
            for w in self.pool.current():
                self._kill(w.pid, signal.SIGQUIT)
        elif command is Command.REOPEN_LOGS:
            try:
                logsetup.reopen(self.cfg.log)
                self.server.chown_log()  # a file the reopen created: the workers reopen it next
                log.info("reopened log file; telling workers")
            except OSError as exc:  # keeps writing to the file it has
                log.error("cannot reopen the log file %s: %s", self.cfg.log, exc.strerror)
            for w in self.pool.workers():
                self._kill(w.pid, signal.SIGUSR1)
        elif command is Command.INCREMENT:
            self.scale(self.pool.target + 1)
        elif command is Command.DECREMENT:
            self.scale(self.pool.target - 1)
        elif command is Command.STOP_WORKERS:
            self.pause()
        elif command is Command.DUMP:
            self.dump()
        elif command is Command.UPGRADE:
            if not self.announced_ready and self.phase is not Phase.STOPPING:
                log.warning("%s ignored: this master is not ready yet", command.value)
            elif self.phase is not Phase.STOPPING:
                if self.upgrader is None:
                    from .upgrade import Upgrader

                    self.upgrader = Upgrader(self)
                self.upgrader.begin()

    # --- commands --------------------------------------------------------------------
    def begin_stop(self, quick: bool) -> None:
        if self.stopper is not None:
            if quick and not self.stopper.quick:
                log.info("quick stop requested during graceful stop")
                for w, signum in self.stopper.escalate(self.pool.workers(), timers.now()):
                    self._kill(w.pid, signum)
                self._arm_stopper()
            return
        if self.upgrader is not None:
            self.upgrader.stop_new_master(quick)  # if an upgrade is running: no successor
        log.info(
            "%s stop: stopping %d worker(s)",
            "quick" if quick else "graceful",
            len(self.pool.workers()),
        )
        self.phase = Phase.STOPPING
        self.notify.stopping()
        self.notify.status("stopping")
        timeout = (
            self.cfg.worker_immediate_kill_timeout
            if quick
            else self.cfg.worker_graceful_kill_timeout
        )
        self.stopper = Stopper(
            quick=quick, timeout=timeout, quick_timeout=self.cfg.worker_immediate_kill_timeout
        )
        for w in self.stopper.start(self.pool.workers(), timers.now()):
            self._kill(w.pid, self.stopper.signal_for(w))
        self._arm_stopper()
        self._check_stopped()

    def _arm_stopper(self) -> None:
        assert self.stopper is not None
        deadline = self.stopper.deadline
        if deadline is not None:
            self.timers.after(deadline - timers.now(), self._stopper_tick)

    def _stopper_tick(self) -> None:
        assert self.stopper is not None
        for w, signum in self.stopper.tick(self.pool.workers(), timers.now()):
            log.warning(
                "worker %d (pid %d) did not stop in time; sending %s",
                w.worker_id,
                w.pid,
                signal.Signals(signum).name,
            )
            if not (w.pid > 0 and spawn.kill_group(w.pid, signum)):  # worker and its group
                self._kill(w.pid, signum)
        self._arm_stopper()

    def _check_stopped(self) -> None:
        if self.phase is Phase.STOPPING and not self.pool.by_pid and self.exit_code is None:
            if self.upgrader is not None and self.upgrader.holds_exit:
                return  # the new master it started is still stopping
            log.info("all workers stopped; master exits %d", self._final_code)
            self.exit_code = self._final_code

    def reload(self) -> None:
        if self._defer_reload(self.reload):
            return
        try:
            new = self.reload_config()
        except Exception as exc:  # noqa: BLE001 - no file may end the master
            log.error("reload failed: %s; serving the previous config", exc)
            self._reload_refused(f"reload failed: {exc}; serving the previous config")
            return
        kept = config.start_only_changes(self.cfg, new)
        if kept:
            log.warning(
                "reload: %s changed in %s but not applied: an upgrade (USR2) applies them%s",
                ", ".join(kept),
                new.source or "the config",
                " (listen: a restart)" if "listen" in kept else "",
            )
            new = new.replace(**{k: getattr(self.cfg, k) for k in kept})
        if self.phase is Phase.STOPPING:
            return
        log.info("reloading: config re-read; replacing workers")
        self.reload_failure = None
        if self.announced_ready:  # before the first READY=1, systemd waits for that alone
            self.notify.reloading()
        self.server.hooks.call("on_reload", self.server)
        self._previous_cfg = self.cfg
        self.apply_config(new)
        self.replace_workers()

    def _defer_reload(self, again: Callable[[], None]) -> bool:
        """A reload while one is running is remembered once and run when it ends:
        a burst of HUPs forks one more generation, not one per signal."""
        if self.phase is not Phase.RELOADING:
            return False
        if self._pending_reload is None:
            log.info("reload already in progress; one more follows when it completes")
        if self._pending_reload != self.reload:  # a config re-read covers a restart
            self._pending_reload = again
        return True

    def _run_pending_reload(self) -> None:
        again, self._pending_reload = self._pending_reload, None
        if again is not None and self.phase is not Phase.STOPPING:
            again()

    def _reload_refused(self, why: str) -> None:
        """Tell systemd the reload is over even though nothing changed: a Type=notify-reload
        unit's `systemctl reload` waits for RELOADING=1 then READY=1, whatever happened."""
        if self.phase is Phase.STOPPING:
            return
        self.reload_failure = why
        if not self.announced_ready:
            self.notify.status(why)
            return
        self.notify.reloading()
        self.notify.ready(status=self.status_text())

    def _abandon_reload(self, why: str) -> None:
        """The new generation cannot boot: stop it, give each slot back its superseded
        worker (still serving), return to the previous config, and close the reload."""
        log.error("reload abandoned: %s; previous workers keep serving", why)
        for w in self.pool.abandon_generation():
            self._stop_worker(w, signal.SIGTERM)
        previous, self._previous_cfg = self._previous_cfg, None
        if previous is not None:
            self.apply_config(previous)
            for w in self.pool.resize(previous.workers):
                self._stop_worker(w, signal.SIGTERM)
        self.phase = Phase.RUNNING
        self._reload_refused(f"reload failed: {why}; previous workers keep serving")
        self._maintain()
        self._run_pending_reload()

    def apply_config(self, new: config.Config) -> None:
        old = self.cfg
        self.cfg = new
        self.pool.backoff = Backoff(
            new.worker_min_uptime, new.worker_restart_backoff_min, new.worker_restart_backoff_max
        )
        self.pool.unrecoverable = frozenset(new.unrecoverable_exit_codes)
        logsetup.set_level(new.log_level)
        self.server.config = new
        if new.workers != old.workers:
            log.info("workers: %d -> %d", old.workers, new.workers)

    def replace_workers(self) -> None:
        """New workers first; each old one gets TERM once its successor is ready."""
        if self.phase is Phase.STOPPING:
            return
        self._pending_reload = None  # this one covers it
        self.phase = Phase.RELOADING
        self.pool.retire_generation()
        for w in self.pool.resize(self.cfg.workers):
            self._stop_worker(w, signal.SIGTERM)
        for w in self.pool.retiring():
            if w.worker_id >= self.pool.target:
                self._stop_worker(w, signal.SIGTERM)
        self._maintain()
        self._update_status()
        self._check_ready()

    def scale(self, target: int) -> None:
        if self.phase is Phase.STOPPING:
            return
        target = max(0, target)
        if target > config.MAX_WORKERS:
            log.warning("workers: not more than %d (TTIN ignored)", config.MAX_WORKERS)
            return
        log.info("workers: %d -> %d", self.pool.target, target)
        self.cfg = self.cfg.replace(workers=target)
        for w in self.pool.resize(target):
            self._stop_worker(w, signal.SIGTERM)
        self._maintain()
        self._update_status()

    def pause(self) -> None:
        if self.phase is Phase.STOPPING:
            return
        if _has_terminal() and not self.cfg.daemonize:
            log.info("WINCH ignored: the master has a controlling terminal (a resize sends it)")
            return
        log.info("stopping all workers; the master stays (HUP starts them again)")
        self.phase = Phase.PAUSED
        for w in self.pool.workers():
            if w.state is not State.STOPPING:
                self._stop_worker(w, signal.SIGTERM)
        self._update_status()

    def dump(self) -> None:
        log.info("dumping the stacks of %d worker(s) to the log", len(self.pool.workers()))
        for w in self.pool.workers():
            self._kill(w.pid, spawn.child.DUMP_SIGNAL)

    # --- health ------------------------------------------------------------------------
    def _check_heartbeats(self) -> None:
        timeout = self.cfg.worker_heartbeat_timeout
        if not timeout:
            return
        for w, silent in health.silent_workers(
            self.pool, self.heartbeats.last, timeout, timers.now()
        ):
            log.error(
                "worker %d (pid %d) hung: no heartbeat for %.1fs; dumping its stacks, killing it",
                w.worker_id,
                w.pid,
                silent,
            )
            self._kill(w.pid, spawn.child.DUMP_SIGNAL)
            w.state = State.STARTING  # not READY: not checked again
            self.timers.after(0.5, lambda pid=w.pid: self._kill(pid, signal.SIGKILL))

    def healthy(self) -> tuple[bool, str]:
        """The watchdog's question; see health.py for what it means."""
        if self.phase is Phase.STOPPING:
            return True, "stopping"
        if self.phase is Phase.PAUSED:
            return True, "workers stopped on request"
        return health.assess(
            self.pool, self.heartbeats.last, self.cfg.worker_heartbeat_timeout, timers.now()
        )

    def _watchdog(self) -> None:
        ok, why = self.healthy()
        if ok:
            self.notify.watchdog()
        else:
            log.warning("not pinging the watchdog: %s", why)

    def status_text(self) -> str:
        text = report.status_text(self.pool, self.phase)
        if self.reload_failure and self.phase is not Phase.RELOADING:
            return f"{self.reload_failure} ({text})"
        return text

    def _update_status(self) -> None:
        if self.phase is not Phase.STOPPING:
            self.notify.status(self.status_text())

    # --- the control socket ---------------------------------------------------------
    def attach_control(self, control: ControlServer | None) -> None:
        self.control = control
        if control is not None:
            control.attach(self.selector, self.timers)

    def control_request(self, req: dict) -> dict:
        cmd = req.get("cmd")
        if cmd == "status":
            return {"ok": True, **self.snapshot()}
        if cmd == "pid":
            return {"ok": True, "pid": self.pid}
        command = NAMED.get(cmd) if isinstance(cmd, str) else None
        if command is not None:  # what a signal means under the default signal_map
            log.debug("control socket: %s: %s", cmd, command.value)
            self.handle(command)
            return {"ok": True, "pid": self.pid, "workers": len(self.pool.workers())}
        if cmd == "scale":
            arg = str(req.get("n", ""))
            try:
                n = int(arg)
            except ValueError:
                return {"ok": False, "error": f"scale needs N, +N or -N, got {arg!r}"}
            target = self.pool.target + n if arg[:1] in "+-" else n
            try:
                config.check_workers(target)
            except ValueError as exc:
                return {"ok": False, "error": f"cannot scale: workers {exc}"}
            self.scale(target)
            return {"ok": True, "workers": target}
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    def snapshot(self) -> dict:
        return report.snapshot(self)

    # --- periodic work for users --------------------------------------------------------
    def every(self, seconds: float, fn: Callable[[], object]) -> timers.Timer:
        return self.timers.every(seconds, self._guarded(fn))

    def after(self, seconds: float, fn: Callable[[], object]) -> timers.Timer:
        return self.timers.after(seconds, self._guarded(fn))

    @staticmethod
    def _guarded(fn: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except Exception:
                log.exception("timer callback %r raised; the timer keeps going", fn)

        return run
