"""create() and Server: the start-up and tear-down order around the master.

Order matters: config and logging first (so every later error is reported),
then the pidfile (a second start refuses before it touches anything), then
the listening sockets (before any fork, so workers inherit them), the control
socket, and the master loop; on the way out the on_exit hook, the sockets, the
pidfile. With `daemonize`, the launcher does the checks that can fail early,
and the daemon reports readiness (or its error) back through a pipe.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import config as configmod
from . import control as controlmod
from . import errors, starting
from .errors import StartError
from .hooks import Hooks
from .master import Master
from .protocol import env as protoenv
from .signals import PRESETS, Command, hold_until_handled
from .unix import daemon as daemonmod
from .unix import log as logsetup
from .unix import pidfile as pidfilemod
from .unix import sockets as socketmod
from .unix.systemd import Notifier
from .worker import Worker

if TYPE_CHECKING:
    from .upgrade import Successor

log = logging.getLogger("svcengine")


class Server:
    """A configured service, ready to run(). Hooks receive it as `server`."""

    def __init__(
        self,
        worker_class: type[Worker] | None,
        config: configmod.Config,
        hooks: Hooks | None = None,
        config_path: str | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> None:
        self.worker_class = worker_class
        self.config = config
        self.hooks = hooks or Hooks()
        self.config_path = os.path.abspath(config_path) if config_path else None
        self.overrides = overrides or {}
        self.master: Master | None = None
        self.listeners: list[socketmod.Listener] = []
        self.pidfile: pidfilemod.Pidfile | None = None
        self.readiness = daemonmod.Readiness()
        self.start_cwd = os.getcwd()  # an upgrade re-executes our command line from here
        self.upgrading_from = protoenv.upgraded_from()  # old master's pid, until take-over
        self.successor: Successor | None = None
        if self.upgrading_from is not None:
            from .upgrade import Successor  # only in a new master made by an upgrade

            self.successor = Successor(self.upgrading_from)
        self._handed_over = False
        self.boot_failure: str | None = None
        if self.upgrading_from is not None:
            self.config = self.config.replace(daemonize=False)  # already detached

    @property
    def pid(self) -> int:
        return os.getpid()

    def every(self, seconds: float, fn: Callable[[], object]) -> object:
        """Run fn in the master every `seconds`, from its own loop: no thread, fork-safe."""
        return self._require_master().every(seconds, fn)

    def after(self, seconds: float, fn: Callable[[], object]) -> object:
        return self._require_master().after(seconds, fn)

    def _require_master(self) -> Master:
        if self.master is None:
            raise RuntimeError("the master is not running yet; call this from a hook")
        return self.master

    def master_fds(self) -> list[int]:
        fds = [self.readiness.fd] if self.readiness.fd is not None else []
        if self.pidfile is not None and self.pidfile.fd >= 0:
            fds.append(self.pidfile.fd)
        if self.successor is not None:
            fds += self.successor.fds()
        return fds

    def reload_config(self) -> configmod.Config:
        if self.config_path is None:
            return self.config
        return starting.reload_config(self.config_path, self.overrides, self.config.daemonize)

    def take_over(self) -> None:
        """First READY of a new master from an upgrade: claim the pidfile and control socket."""
        if self.upgrading_from is None or self.successor is None:
            return
        self.pidfile = self.successor.take_over(self.config.pid_path, self.listeners)
        assert self.master is not None
        try:
            self.master.attach_control(
                starting.open_control(self.config, self._control_request, self.upgrading_from)
            )
        except controlmod.AlreadyServed as exc:  # a third process, not our predecessor
            log.error("upgrade: no control socket: %s", exc)

    def announce_ready(self) -> None:
        """READY has been sent: release a daemon launcher, or the master we replace."""
        self.readiness.ready()
        logsetup.forget_saved_stderr()  # start-up is over: errors go to the log alone
        if self.upgrading_from is None:
            return
        self.upgrading_from = None
        assert self.master is not None
        if self.successor is not None:
            self.successor.announce_ready(self.master.notify, self.master.commands)

    def handed_over(self) -> None:
        """An old master after a successful upgrade: its sockets are the new one's now
        (its pidfile, renamed to .oldbin, is still its own to remove)."""
        self._handed_over = True

    # --- running ---------------------------------------------------------------
    def run(self) -> int:
        """Run until stopped; return the exit status the process should end with.

        If a hook left a non-daemon thread running (a monitoring thread), the process
        could never end: then this warns and ends it with that status, as the command does.
        """
        if self.config.daemonize:
            return self._launch_daemon()
        before = set(threading.enumerate())
        try:
            code = self._serve()
        except StartError as exc:
            logsetup.tell_operator(str(exc))
            code = exc.code
        starting.end_despite_threads(before, code)
        return code

    def _launch_daemon(self) -> int:
        cfg = self.config = self.config.absolute()
        if cfg.pid_path and (pid := pidfilemod.is_locked(cfg.pid_path)):
            print(
                f"svcengine: already running: {cfg.pid_path} is locked by pid {pid}",
                file=sys.stderr,
            )
            return errors.EX_RUNNING
        try:
            starting.load_hooks(self.config, self.hooks)
            self.listeners = socketmod.open_all(cfg.listen, cfg.source)
        except configmod.ConfigError as exc:
            print(f"svcengine: config error: {exc}", file=sys.stderr)
            return errors.EX_CONFIG
        except OSError as exc:
            print(f"svcengine: {exc}", file=sys.stderr)
            return errors.EX_OTHER

        def in_daemon(readiness: daemonmod.Readiness) -> int:
            self.readiness = readiness
            readiness.started(os.getpid())  # for the launcher's start timeout
            try:
                code = self._serve(sockets_ready=True)
            except StartError as exc:
                readiness.failed(exc.code, str(exc))
                return exc.code
            if self.readiness.fd is not None:
                why = self.master.failure if self.master and self.master.failure else None
                why = why or self.boot_failure
                readiness.failed(code or 1, why or f"the master exited with status {code}")
            return code

        umask = cfg.chumask if cfg.chumask is not None else 0o022
        quick_stop = next(s for s, c in PRESETS[cfg.signal_map].items() if c is Command.QUICK_STOP)
        return daemonmod.launch(
            in_daemon,
            preserve=[s.fileno() for s in self.listeners],
            umask=umask,
            start_timeout=cfg.start_timeout,
            stop_signal=quick_stop,
        )

    def _serve(self, sockets_ready: bool = False) -> int:
        cfg = self.config
        hold_until_handled(PRESETS[cfg.signal_map])  # before the pidfile makes us visible
        if cfg.chumask is not None:
            os.umask(cfg.chumask)
        upgrading = self.upgrading_from is not None
        if not sockets_ready:
            starting.check_before_logging(cfg, self.hooks)
        try:
            logsetup.setup(cfg.log_level, cfg.log)
        except OSError as exc:  # missing directory, a symlink, not a regular file, not ours
            why = configmod.ConfigError(f"cannot open {cfg.log}: {exc.strerror}", "log", cfg.source)
            raise StartError(errors.EX_CONFIG, f"config error: {why}") from None
        starting.chown_log(cfg)
        try:
            if cfg.pid_path and not upgrading:
                self.pidfile = pidfilemod.Pidfile(cfg.pid_path)
                self.pidfile.acquire()
            if not sockets_ready:
                self.listeners = socketmod.open_all(cfg.listen, cfg.source)
            control = None if upgrading else starting.open_control(cfg, self._control_request, None)
        except (pidfilemod.AlreadyRunning, controlmod.AlreadyServed) as exc:
            self._cleanup()  # a unix socket the launcher bound for us: by inode, ours only
            raise StartError(errors.EX_RUNNING, str(exc)) from None
        except configmod.ConfigError as exc:
            self._cleanup()
            raise StartError(errors.EX_CONFIG, f"config error: {exc}") from None
        except (pidfilemod.PidfileError, OSError) as exc:
            self._cleanup()
            raise StartError(errors.EX_OTHER, str(exc)) from None
        for listener in self.listeners:
            log.info("listening on %s", listener.name)
        if cfg.preload and self.worker_class is None and cfg.worker_type == "process":
            try:
                self.worker_class = starting.preload(cfg)
            except StartError:
                self._cleanup()
                raise
        notifier = Notifier()
        notifier.standby = upgrading
        if cfg.worker_type == "embedded":
            from . import embedded  # imported only for its worker type

            if control is not None:
                control.close()  # no master loop to answer it
            try:
                return embedded.run(self, self.listeners, notifier)
            finally:
                self.hooks.call("on_exit", self)
                notifier.close()
                self._cleanup()
        self.master = Master(self, cfg, self.listeners, notifier, self.reload_config)
        self.master.control = control
        if self.successor is not None:
            self.successor.attach(self.master.selector, self.master.begin_stop)
        try:
            code = self.master.run()
        finally:
            self.hooks.call("on_exit", self)
            notifier.close()
            self._cleanup()
        return code

    def chown_log(self) -> None:
        starting.chown_log(self.config)

    def _control_request(self, req: dict[str, Any]) -> dict[str, Any]:
        return self._require_master().control_request(req)

    def _cleanup(self) -> None:
        for listener in self.listeners:
            if listener.name.startswith("unix:") and not self._handed_over:
                socketmod.unlink_if_ours(listener.name[5:], listener.inode)
            listener.sock.close()
        self.listeners = []
        if self.pidfile is not None:
            self.pidfile.release()
            self.pidfile = None


def create(
    worker: type[Worker] | str,
    *,
    hooks: dict[str, Callable[..., Any]] | None = None,
    config: configmod.Config | None = None,
    **options: Any,
) -> Server:
    """ServerEngine's entry point: create(Job, workers=2, ...).run()."""
    values = dict(options)
    if isinstance(worker, str):
        values["worker"] = worker
        worker_class = None
    else:
        worker_class = worker
        values["worker"] = f"{worker.__module__}:{worker.__qualname__}"
    cfg = configmod.from_mapping(values, "create()", config)
    return Server(worker_class, cfg, Hooks(**(hooks or {})))
