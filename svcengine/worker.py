"""The Worker base class: the whole contract between svcengine and user code.

Subclass it, implement run(), and optionally stop() and reload(). run() is the
worker's life: when it returns, the worker process exits (status 0) and the
master starts a new one unless the service is stopping.
"""

from __future__ import annotations

import logging
import select
import socket
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .child import Runtime
    from .config import Config


class Worker:
    #: Ready as soon as run() is entered. Set False and call self.ready()
    #: yourself when the worker needs warm-up before it counts as serving.
    ready_on_run: bool = True

    def __init__(self, worker_id: int, config: Config, runtime: Runtime) -> None:
        self.worker_id = worker_id
        self.config = config
        self._runtime = runtime
        self.logger = logging.getLogger(f"svcengine.worker.{type(self).__name__}")

    # --- to override -------------------------------------------------------
    def run(self) -> None:
        raise NotImplementedError("a Worker subclass must implement run()")

    def stop(self) -> None:
        """Called (from a helper thread, not a signal handler) when asked to stop.

        `stopping` is already True and wait() already returns. Override it to
        unblock a run() that waits on something else than wait().
        """

    def reload(self) -> None:
        """Called on HUP delivered to this worker."""

    @classmethod
    def warm_up(cls) -> None:
        """Called once in the mold, after the import and `after_mold_ready`, before its
        heap is frozen and any worker forked (not called without a mold).

        Do here what each worker would otherwise do for the first time on its own: run
        the request path once on fake input, fill a cache. CPython rewrites code as it
        warms it and writes to every object it touches: done once here, those pages stay
        shared by all workers, and no worker's first request pays for it. An exception
        is logged and the workers start cold.
        """

    # --- provided ----------------------------------------------------------
    @property
    def stopping(self) -> bool:
        return self._runtime.stopping

    @property
    def sockets(self) -> list[socket.socket]:
        """Listening sockets bound by the master (or passed in by systemd)."""
        return self._runtime.sockets

    @property
    def pid(self) -> int:
        return self._runtime.pid

    def wait(self, seconds: float | None = None) -> bool:
        """Sleep up to `seconds`; return at once (True) when asked to stop."""
        self.wait_readable([], seconds)
        return self._runtime.stopping

    def wait_readable(self, fileobjs: list[Any], seconds: float | None = None) -> list[Any]:
        """Wait until some of `fileobjs` are readable; [] on timeout or stop."""
        runtime = self._runtime
        runtime.beat()
        if runtime.stopping:
            return []
        poller = select.poll()  # not select(): a worker may well hold fds above 1023
        poller.register(runtime.stop_fd, select.POLLIN)
        by_fd = {}
        for f in fileobjs:
            fd = f if isinstance(f, int) else f.fileno()
            by_fd[fd] = f
            poller.register(fd, select.POLLIN)
        events = poller.poll(None if seconds is None else max(0.0, seconds) * 1000)
        runtime.beat()
        if runtime.stopping:
            return []
        return [by_fd[fd] for fd, _ in events if fd in by_fd]

    def ready(self) -> None:
        """Tell the master this worker now serves (for ready_on_run = False)."""
        self._runtime.ready()

    def heartbeat(self) -> None:
        """Prove progress; needed only with worker_heartbeat_timeout and no wait()."""
        self._runtime.beat()
