"""create() and Server: the start-up and tear-down order around the master.

Order matters: config and logging first (so every later error is reported),
then the listening sockets (before any fork, so workers inherit them), then
the master loop; on the way out the on_exit hook and the sockets' cleanup.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from . import config as configmod
from . import log as logsetup
from . import sockets as socketmod
from .hooks import Hooks
from .master import Master
from .systemd import Notifier
from .worker import Worker

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
        self.config_path = config_path
        self.overrides = overrides or {}
        self.master: Master | None = None
        self.listeners: list[socketmod.Listener] = []
        self._extra_fds: list[int] = []

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
        return list(self._extra_fds)

    def reload_config(self) -> configmod.Config:
        if self.config_path is None:
            return self.config
        return configmod.load(self.config_path, self.overrides)

    def run(self) -> int:
        """Run until stopped; return the exit status the process should end with."""
        cfg = self.config
        logsetup.setup(cfg.log_level, cfg.log)
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
        self.listeners = socketmod.open_all(cfg.listen, cfg.source)
        for listener in self.listeners:
            log.info("listening on %s", listener.name)
        notifier = Notifier()
        self.master = Master(self, cfg, self.listeners, notifier, self.reload_config)
        try:
            code = self.master.run()
        finally:
            self.hooks.call("on_exit", self)
            notifier.close()
            self._close_listeners()
        return code

    def _close_listeners(self) -> None:
        for listener in self.listeners:
            if listener.name.startswith("unix:"):
                try:
                    os.unlink(listener.name[5:])
                except OSError:
                    pass
            listener.sock.close()


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
