"""Lifecycle hooks, Unicorn's and more, settable from Python or a config module.

A hook that raises is logged with its traceback and the master carries on,
except after_fork, whose failure makes that worker a boot failure.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("svcengine.hooks")

NAMES = (
    "before_fork",  # master: (server, slot) before each fork
    "after_fork",  # worker: (server, worker) before run(); raising = boot failure
    "after_mold_ready",  # mold: (server) once it imported the app, before it forks workers
    "after_worker_ready",  # master: (server, worker) when a worker reports ready
    "after_worker_exit",  # master: (server, worker, status) after each reap
    "when_ready",  # master: (server) once every initial worker is ready
    "on_reload",  # master: (server) on HUP, after the new config was read
    "before_exec",  # master: (server) before forking the new master of an upgrade
    "on_exit",  # master: (server) just before the master exits
)


class Hooks:
    def __init__(self, **hooks: Callable[..., Any]) -> None:
        self._hooks: dict[str, list[Callable[..., Any]]] = {name: [] for name in NAMES}
        for name, fn in hooks.items():
            self.add(name, fn)

    def add(self, name: str, fn: Callable[..., Any]) -> None:
        if name not in self._hooks:
            raise ValueError(f"unknown hook {name!r}; known: {', '.join(NAMES)}")
        self._hooks[name].append(fn)

    def load_module(self, module_name: str) -> None:
        """Take every function in `module_name` that is named like a hook."""
        module = importlib.import_module(module_name)
        for name in NAMES:
            fn = getattr(module, name, None)
            if callable(fn):
                self.add(name, fn)

    def call(self, name: str, *args: Any) -> bool:
        """Run a hook's functions; log (never raise) what they raise."""
        ok = True
        for fn in self._hooks[name]:
            try:
                fn(*args)
            except Exception:
                log.exception("hook %s (%s) raised", name, getattr(fn, "__qualname__", fn))
                ok = False
        return ok

    def call_strict(self, name: str, *args: Any) -> None:
        for fn in self._hooks[name]:
            fn(*args)
