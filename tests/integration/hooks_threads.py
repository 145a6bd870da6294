"""Hooks for the worker-type tests: a master thread started by a hook, and server.every()."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger("test.hooks")
_stop = threading.Event()


def before_fork(server, worker):
    if not any(t.name == "hook-monitor" for t in threading.enumerate()):
        threading.Thread(target=_stop.wait, name="hook-monitor", daemon=True).start()
