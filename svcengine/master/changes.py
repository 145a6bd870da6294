"""What an operator changes while the master runs: reload (HUP), the graceful
restart, scale (TTIN/TTOU, `ctl scale`) and pause (WINCH).

A reload during a reload is remembered once (a burst of HUPs forks one more
generation, not one per signal); a reload that cannot boot is abandoned and the
previous workers keep serving; a refused reload still ends with RELOADING=1 and
READY=1, which a Type=notify-reload unit's `systemctl reload` waits for.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from .. import config
from ..unix import log as logsetup
from .lifecycle import Lifecycle
from .phase import Phase
from .pool import Backoff, SlotState

if TYPE_CHECKING:
    from ..hooks import Hooks
    from ..timers import Timer
    from ..unix.systemd import Notifier
    from .loop import Loop
    from .pool import Pool
    from .workers import Workers

log = logging.getLogger("svcengine.master")


class ChangesHost(Protocol):
    pool: Pool
    workers: Workers
    notify: Notifier
    loop: Loop

    @property
    def cfg(self) -> config.Config: ...
    @property
    def hooks(self) -> Hooks: ...
    @property
    def hook_server(self) -> object: ...
    def set_config(self, new: config.Config, server: bool = True) -> None: ...

    reload_config: Callable[[], config.Config]


def _has_terminal() -> bool:
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False
    os.close(fd)
    return True


class Changes:
    def __init__(self, host: ChangesHost, life: Lifecycle) -> None:
        self.host = host
        self.life = life
        self._overdue: Timer | None = None  # reload_timeout of the reload under way

    def reload(self) -> None:
        h, life = self.host, self.life
        if self._defer(self.reload):
            return
        try:
            new = h.reload_config()
        except Exception as exc:  # noqa: BLE001 - no file may end the master
            log.error("reload failed: %s; serving the previous config", exc)
            self._refused(f"reload failed: {exc}; serving the previous config")
            return
        kept = config.start_only_changes(h.cfg, new)
        if kept:
            log.warning(
                "reload: %s changed in %s but not applied: an upgrade (USR2) applies them%s",
                ", ".join(kept),
                new.source or "the config",
                " (listen: a restart)" if "listen" in kept else "",
            )
            new = new.replace(**{k: getattr(h.cfg, k) for k in kept})
        if life.phase is Phase.STOPPING:
            return
        log.info("reloading: config re-read; replacing workers")
        life.reload_failure = None
        if life.announced_ready:  # before the first READY=1, systemd waits for that alone
            h.notify.reloading()
        h.hooks.call("on_reload", h.hook_server)
        life.previous_cfg = h.cfg
        self.apply_config(new)
        self.replace_workers()

    def restart_graceful(self) -> None:
        if not self._defer(self.replace_workers):
            self.replace_workers()

    def _defer(self, again: Callable[[], None]) -> bool:
        """A reload while one is running is remembered once and run when it ends:
        a burst of HUPs forks one more generation, not one per signal."""
        life = self.life
        if life.phase is not Phase.RELOADING:
            return False
        if life.pending_reload is None:
            log.info("reload already in progress; one more follows when it completes")
        if life.pending_reload != self.reload:  # a config re-read covers a restart
            life.pending_reload = again
        return True

    def run_pending_reload(self) -> None:
        """The reload under way ended (complete or abandoned): run the one that waited."""
        if self._overdue is not None:
            self._overdue.cancel()
            self._overdue = None
        life = self.life
        again, life.pending_reload = life.pending_reload, None
        if again is not None and life.phase is not Phase.STOPPING:
            again()

    def _refused(self, why: str) -> None:
        """Tell systemd the reload is over even though nothing changed: a Type=notify-reload
        unit's `systemctl reload` waits for RELOADING=1 then READY=1, whatever happened."""
        h, life = self.host, self.life
        if life.phase is Phase.STOPPING:
            return
        life.reload_failure = why
        if not life.announced_ready:
            h.notify.status(why)
            return
        h.notify.reloading()
        h.notify.ready(status=life.status_text())

    def abandon_reload(self, why: str) -> None:
        """The new generation cannot boot: stop it, give each slot back its superseded
        worker (still serving), return to the previous config, and close the reload."""
        h, life = self.host, self.life
        log.error("reload abandoned: %s; previous workers keep serving", why)
        if h.workers.launcher is not None:
            h.workers.launcher.abandon_generation()  # respawns fork the code that worked
        for w in h.pool.abandon_generation():
            h.workers.stop(w, signal.SIGTERM)
        previous, life.previous_cfg = life.previous_cfg, None
        if previous is not None:
            self.apply_config(previous)
            for w in h.pool.resize(previous.workers):
                h.workers.stop(w, signal.SIGTERM)
        life.enter(Phase.RUNNING)
        self._refused(f"reload failed: {why}; previous workers keep serving")
        h.workers.maintain()
        self.run_pending_reload()

    def apply_config(self, new: config.Config) -> None:
        h = self.host
        old = h.cfg
        h.set_config(new)
        h.pool.backoff = Backoff.of(new)
        h.pool.unrecoverable = frozenset(new.unrecoverable_exit_codes)
        logsetup.set_level(new.log_level)
        if new.workers != old.workers:
            log.info("workers: %d -> %d", old.workers, new.workers)

    def replace_workers(self) -> None:
        """New workers first; each old one gets TERM once its successor is ready."""
        h, life = self.host, self.life
        if life.phase is Phase.STOPPING:
            return
        life.pending_reload = None  # this one covers it
        life.enter(Phase.RELOADING)
        h.pool.supersede_generation()
        self._arm_overdue(h.pool.generation)
        if h.workers.launcher is not None:
            h.workers.launcher.begin_generation()  # a mold: the code as it is now
        for w in h.pool.resize(h.cfg.workers):
            h.workers.stop(w, signal.SIGTERM)
        for w in h.pool.superseded():
            if w.worker_id >= h.pool.target:
                h.workers.stop(w, signal.SIGTERM)
        h.workers.maintain()
        life.update_status()
        life.check_ready()

    def _arm_overdue(self, generation: int) -> None:
        """A generation that never gets ready (a hang in its import, say) would keep the
        master reloading for ever: after reload_timeout it is abandoned."""
        timeout = self.host.cfg.reload_timeout
        if self._overdue is not None:
            self._overdue.cancel()
            self._overdue = None
        if timeout:
            self._overdue = self.host.loop.timers.after(
                timeout, lambda: self._reload_overdue(generation, timeout)
            )

    def _reload_overdue(self, generation: int, timeout: float) -> None:
        self._overdue = None
        if self.life.phase is Phase.RELOADING and self.host.pool.generation == generation:
            self.abandon_reload(
                f"the new workers were not ready within {timeout:g}s (reload_timeout)"
            )

    def scale(self, target: int) -> None:
        h = self.host
        target = max(0, target)
        if target > config.MAX_WORKERS:
            log.warning("workers: not more than %d (TTIN ignored)", config.MAX_WORKERS)
            return
        log.info("workers: %d -> %d", h.pool.target, target)
        h.set_config(h.cfg.replace(workers=target), server=False)  # the file's count stays
        for w in h.pool.resize(target):
            h.workers.stop(w, signal.SIGTERM)
        h.workers.maintain()
        self.life.update_status()

    def pause(self) -> None:
        h = self.host
        if _has_terminal() and not h.cfg.daemonize:
            log.info("WINCH ignored: the master has a controlling terminal (a resize sends it)")
            return
        log.info("stopping all workers; the master stays (HUP starts them again)")
        self.life.enter(Phase.PAUSED)
        for w in h.pool.workers():
            if w.state is not SlotState.STOPPING:
                h.workers.stop(w, signal.SIGTERM)
        self.life.update_status()
