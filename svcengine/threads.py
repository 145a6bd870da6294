"""worker_type = "thread": workers as threads of the master's process.

For I/O-bound work that wants shared memory. The master loop stays the only
thing that acts on events: a thread reports `ready` and, when run() returns,
`exited N` on its status pipe, exactly as a process does; the master treats
that line as it treats a reaped child. What a thread cannot do: be killed.
A signal the master would send becomes a method call (TERM, QUIT: stop();
HUP: reload(); USR2: a stack dump), and KILL abandons the thread: it is
counted as gone and dies with the process.
"""

from __future__ import annotations

import faulthandler
import itertools
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import channel, child
from .child.boot import boot_error, construct, exit_code, serve
from .config import Config
from .unix import linux as _linux
from .worker import Worker

if TYPE_CHECKING:
    from .unix.sockets import Listener

log = logging.getLogger("svcengine.master")


class ThreadWorkers:
    def __init__(
        self,
        config: Callable[[], Config],
        worker_class: type[Worker] | None,
        heartbeats: channel.Heartbeats,
        sockets: list[Listener],
        after_fork: Callable[[Worker], object],
    ) -> None:
        self.config = config
        self.worker_class = worker_class
        self.heartbeats = heartbeats
        self.sockets = sockets
        self.after_fork = after_fork
        self.runtimes: dict[int, child.Runtime] = {}
        self._ids = itertools.count(1)

    def start(self, worker_id: int, beat_index: int) -> tuple[int, int]:
        """Start one thread; return (its serial, the read end of its status pipe). Its
        Worker.pid is the process it runs in: the master's."""
        serial = next(self._ids)
        status_r, status_w = _linux.pipe()
        os.set_blocking(status_r, False)
        cfg = self.config()
        runtime = child.Runtime(
            worker_id=worker_id,
            config=cfg,
            master_pid=os.getpid(),
            status_fd=status_w,
            life_fd=None,
            beat=channel.Beat(self.heartbeats.map, beat_index),
            sockets=[s.sock for s in self.sockets],
        )
        self.runtimes[serial] = runtime
        threading.Thread(
            target=self._main, args=(runtime, cfg), name=f"worker[{worker_id}]", daemon=True
        ).start()
        return serial, status_r

    def _main(self, runtime: child.Runtime, cfg: Config) -> None:
        code = 1
        try:
            worker = construct(runtime, self.worker_class, self.after_fork)
        except BaseException as exc:
            log.error("worker %d failed to boot:\n%s", runtime.worker_id, traceback.format_exc())
            channel.send(runtime.status_fd, channel.BOOT_FAILED, boot_error(exc))
        else:
            try:
                code = serve(runtime, worker)
            except SystemExit as exc:
                code = exit_code(exc)
        finally:
            channel.send(runtime.status_fd, channel.EXITED, str(code))
            os.close(runtime.status_fd)

    def signal(self, serial: int, signum: int) -> bool:
        """Carry out what `signum` would mean to a process worker. False: abandoned."""
        runtime = self.runtimes.get(serial)
        if runtime is None:
            return True
        if signum in (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT):
            runtime.request_stop(signal.Signals(signum).name)
        elif signum == signal.SIGHUP:
            runtime.request_reload()
        elif signum == child.DUMP_SIGNAL:
            faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        elif signum == signal.SIGKILL:
            log.error(
                "worker %d is a thread and cannot be killed; abandoning it", runtime.worker_id
            )
            self.runtimes.pop(serial, None)
            return False
        return True

    def exited(self, serial: int) -> None:
        self.runtimes.pop(serial, None)
