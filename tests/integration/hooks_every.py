"""server.every() from a hook: periodic work run by the master's own loop."""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("test.hooks")
_count = 0


def when_ready(server):
    def tick():
        global _count
        _count += 1
        log.info("tick %d at %.3f threads=%d", _count, time.monotonic(), threading.active_count())
        if _count == 2:
            raise RuntimeError("a failing tick")

    server.every(0.2, tick)
