"""Fault injection for the loop tests (named as such: no real callback of svcengine
raises on demand). when_ready registers a raw selector callback and a raw timer that
raise; SVC_TEST_FAULT=always makes the fd callback raise on every turn without
consuming its event (a loop that can make no progress)."""

from __future__ import annotations

import os
import selectors


def when_ready(server) -> None:
    master = server.master
    always = os.environ.get("SVC_TEST_FAULT") == "always"
    r, w = os.pipe()

    def raising(fd: int) -> None:
        if not always:
            os.read(fd, 1)
            master.selector.unregister(fd)
            os.close(fd)
        raise RuntimeError("injected fault in an fd callback")

    def raising_timer() -> None:
        raise RuntimeError("injected fault in a timer")

    master.selector.register(r, selectors.EVENT_READ, raising)
    master.timers.after(0, raising_timer)
    os.write(w, b"x")
    os.close(w)
