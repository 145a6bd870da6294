"""create() and Server: the start-up and tear-down order around the master.

Order matters: config and logging first (so every later error is reported),
then the pidfile (a second start refuses before it touches anything), then
the listening sockets (before any fork, so workers inherit them), the control
socket, and the master loop; on the way out the on_exit hook, the sockets, the
pidfile. With `daemonize`, the launcher does the checks that can fail early,
and the daemon reports readiness (or its error) back through a pipe.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from . import config as configmod
from . import control as controlmod
from . import daemon as daemonmod
from . import log as logsetup
from . import pidfile as pidfilemod
from . import sockets as socketmod
from . import spawn
from .hooks import Hooks
from .master import Master
from .privileges import Identity
from .signals import PRESETS, Command, hold_until_handled
from .systemd import Notifier
from .worker import Worker

log = logging.getLogger("svcengine")

EX_SOFTWARE = 1
UPGRADE_FROM = "SVCENGINE_UPGRADE_FROM"  # the old master's pid, in the new master's env


class StartError(Exception):
    """A start-up failure with the exit status it should produce."""

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        super().__init__(message)


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
        self.upgrading_from = upgraded_from()  # old master's pid, until take-over
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
        return fds

    def reload_config(self) -> configmod.Config:
        if self.config_path is None:
            return self.config
        cfg = configmod.load(self.config_path, self.overrides)
        return cfg.absolute() if self.config.daemonize else cfg

    def take_over(self) -> None:
        """First READY of a new master from an upgrade: claim the pidfile and control socket."""
        if self.upgrading_from is None:
            return
        cfg = self.config
        if cfg.pid_path:
            self.pidfile = pidfilemod.Pidfile(cfg.pid_path)
            try:
                self.pidfile.acquire()
            except pidfilemod.PidfileError as exc:
                log.error("upgrade: cannot take the pidfile: %s", exc)
                self.pidfile = None
        for listener in self.listeners:
            if listener.name.startswith("unix:") and listener.inode is None:
                try:
                    listener.inode = os.stat(listener.name[5:]).st_ino
                except OSError:
                    pass
        assert self.master is not None
        self.master.attach_control(self._open_control())

    def announce_ready(self) -> None:
        """READY has been sent: release a daemon launcher, or the master we replace."""
        self.readiness.ready()
        logsetup.forget_saved_stderr()  # start-up is over: errors go to the log alone
        old = self.upgrading_from
        if old is None:
            return
        self.upgrading_from = None
        assert self.master is not None
        self.master.notify.barrier()  # systemd has seen MAINPID= before the old master goes
        graceful = next(
            (s for s, c in self.master.commands.items() if c is Command.GRACEFUL_STOP),
            signal.SIGTERM,
        )
        log.info("upgrade: took over from pid %d; sending it %s", old, graceful.name)
        try:
            os.kill(old, graceful)
        except ProcessLookupError:
            log.warning("upgrade: the old master (pid %d) is already gone", old)

    def handed_over(self) -> None:
        """An old master after a successful upgrade: its sockets are the new one's now
        (its pidfile, renamed to .oldbin, is still its own to remove)."""
        self._handed_over = True

    def pidfile_to_oldbin(self) -> None:
        if self.pidfile is not None:
            self.pidfile.rename(self.pidfile.path + ".oldbin")

    def pidfile_from_oldbin(self) -> None:
        if self.pidfile is not None and self.pidfile.path.endswith(".oldbin"):
            self.pidfile.rename(self.pidfile.path[: -len(".oldbin")])

    # --- running ---------------------------------------------------------------
    def run(self) -> int:
        """Run until stopped; return the exit status the process should end with."""
        if self.config.daemonize:
            return self._launch_daemon()
        try:
            return self._serve()
        except StartError as exc:
            logsetup.tell_operator(str(exc))
            return exc.code

    def _launch_daemon(self) -> int:
        cfg = self.config = self.config.absolute()
        if cfg.pid_path and (pid := pidfilemod.is_locked(cfg.pid_path)):
            print(
                f"svcengine: already running: {cfg.pid_path} is locked by pid {pid}",
                file=sys.stderr,
            )
            return pidfilemod.EX_RUNNING
        try:
            self._load_hooks()
            self.listeners = socketmod.open_all(cfg.listen, cfg.source)
        except configmod.ConfigError as exc:
            print(f"svcengine: config error: {exc}", file=sys.stderr)
            return configmod.EX_CONFIG
        except OSError as exc:
            print(f"svcengine: {exc}", file=sys.stderr)
            return EX_SOFTWARE

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

    def _load_hooks(self) -> None:
        cfg = self.config
        for entry in reversed(cfg.python_path):
            if entry not in sys.path:
                sys.path.insert(0, entry)
        if cfg.hooks:
            try:
                self.hooks.load_module(cfg.hooks)
            except Exception as exc:
                raise configmod.ConfigError(
                    f"cannot import hooks module: {exc}", "hooks", cfg.source
                ) from exc

    def _serve(self, sockets_ready: bool = False) -> int:
        cfg = self.config
        hold_until_handled(PRESETS[cfg.signal_map])  # before the pidfile makes us visible
        if cfg.chumask is not None:
            os.umask(cfg.chumask)
        logsetup.setup(cfg.log_level, cfg.log)
        upgrading = self.upgrading_from is not None
        try:
            if cfg.pid_path and not upgrading:
                self.pidfile = pidfilemod.Pidfile(cfg.pid_path)
                self.pidfile.acquire()
            if not sockets_ready:
                self._load_hooks()
                self.listeners = socketmod.open_all(cfg.listen, cfg.source)
            control = None if upgrading else self._open_control()
        except pidfilemod.AlreadyRunning as exc:
            raise StartError(pidfilemod.EX_RUNNING, str(exc)) from None
        except configmod.ConfigError as exc:
            self._cleanup()
            raise StartError(configmod.EX_CONFIG, f"config error: {exc}") from None
        except (pidfilemod.PidfileError, OSError) as exc:
            self._cleanup()
            raise StartError(EX_SOFTWARE, str(exc)) from None
        for listener in self.listeners:
            log.info("listening on %s", listener.name)
        if cfg.preload and self.worker_class is None and cfg.worker_type == "process":
            try:
                self.worker_class = spawn.import_worker(cfg.worker, cfg.python_path)
            except Exception as exc:
                self._cleanup()
                raise StartError(
                    EX_SOFTWARE, f"preload: cannot import {cfg.worker}: {exc}"
                ) from exc
            gc.collect()
            gc.freeze()  # keep the preloaded objects' pages shared: no refcount-driven copies
            log.info("preloaded %s", cfg.worker)
        notifier = Notifier()
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
        try:
            code = self.master.run()
        finally:
            self.hooks.call("on_exit", self)
            notifier.close()
            self._cleanup()
        return code

    def _open_control(self) -> controlmod.ControlServer | None:
        cfg = self.config
        path = controlmod.socket_path(cfg.control_socket, cfg.pid_path, cfg.name)
        if path is None:
            return None
        identity = Identity.resolve(cfg.chuser, cfg.chgroup)
        allowed = {os.geteuid()} | ({identity.uid} if identity else set())
        try:
            server = controlmod.ControlServer(path, self._control_request, allowed)
        except OSError as exc:
            log.warning("no control socket at %s: %s", path, exc.strerror)
            return None
        if identity is not None and os.geteuid() == 0:
            server.chown(identity.uid, identity.gid)
            if cfg.log:
                os.chown(cfg.log, identity.uid, identity.gid)  # so workers can reopen it
        return server

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


def upgraded_from(environ: dict[str, str] | None = None) -> int | None:
    """In a new master: the old master's pid (and forget it, for our own children).

    Here, not in upgrade.py: that module (the old master's side) is imported only on USR2.
    """
    env = os.environ if environ is None else environ
    value = env.pop(UPGRADE_FROM, None)
    return int(value) if value and value.isdigit() else None


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
