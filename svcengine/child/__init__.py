"""The worker process's side of the contract: its signals, its watcher, its exit.

Signals reach a worker the same way they reach the master: no-op handlers and
a wakeup fd. A watcher thread reads that fd and the life pipe, so stop() and
reload() run in an ordinary thread (never inside a signal handler, where a lock
can deadlock) and a master that dies is noticed within one read() call.
"""

from __future__ import annotations

import _thread
import faulthandler
import logging
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Protocol

from .. import channel
from ..config import Config
from ..unix import csignal
from ..unix import linux as _linux
from ..unix import log as logsetup

log = logging.getLogger("svcengine.worker")

STOP_SIGNALS = (signal.SIGTERM,)
QUICK_SIGNALS = (signal.SIGINT, signal.SIGQUIT)
DUMP_SIGNAL = signal.SIGUSR2
HANDLED = (*STOP_SIGNALS, *QUICK_SIGNALS, signal.SIGHUP, signal.SIGUSR1)


def _noop(signum: int, frame: object) -> None:
    """Empty on purpose: the wakeup fd carries the signal to the watcher."""


def finish(code: int) -> None:
    """Leave the worker process without running the master's atexit handlers."""
    try:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


class _Bindable(Protocol):
    def stop(self) -> None: ...
    def reload(self) -> None: ...


class Runtime:
    """Per-process state behind a Worker: stop flag, pipes, heartbeat."""

    def __init__(
        self,
        *,
        worker_id: int,
        config: Config,
        master_pid: int,
        status_fd: int,
        life_fd: int | None,
        beat: Callable[[], None],
        sockets: list[socket.socket],
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        self.worker_id = worker_id
        self.config = config
        self.master_pid = master_pid
        self.pid = os.getpid()
        self.status_fd = status_fd
        self.life_fd = life_fd
        self.beat = beat
        self.sockets = sockets
        self.stopping = False
        self.stop_fd, self._stop_w = _linux.pipe()
        self._sig_r, self._sig_w = _linux.pipe(os.O_CLOEXEC | os.O_NONBLOCK)
        self._is_ready = False
        self._ready_hook = on_ready
        self._on_stop: Callable[[], None] = lambda: None
        self._on_reload: Callable[[], None] = lambda: None

    def install_signals(self) -> None:
        signal.set_wakeup_fd(self._sig_w, warn_on_full_buffer=False)
        for signum in HANDLED:
            csignal.set_handler(signum, _noop)
        # pool-size and terminal signals mean nothing to a worker
        for signum in (signal.SIGTTIN, signal.SIGTTOU, signal.SIGWINCH):
            csignal.set_handler(signum, signal.SIG_IGN)
        # stacks of every thread, written by C code even if Python is stuck
        faulthandler.register(DUMP_SIGNAL, file=sys.stderr, all_threads=True)

    def bind(self, worker: _Bindable) -> None:
        """From now on a stop or reload request reaches this worker (boot.construct)."""
        self._on_stop = worker.stop
        self._on_reload = worker.reload

    def request_reload(self) -> None:
        self._on_reload()

    def start_watcher(self) -> None:
        """Act on signals and the life pipe from a thread; they reach the bound worker.

        A bare _thread, not a threading.Thread: a forked worker would copy the pages of
        all the threading code and objects a Thread touches (~135 kB of private memory
        each). It is never joined, as a daemon thread; it ends with the process."""
        _thread.start_new_thread(self._watch, ())

    def ready(self) -> None:
        if not self._is_ready:
            self._is_ready = True
            if self._ready_hook is not None:
                self._ready_hook()
            else:
                channel.send(self.status_fd, channel.READY)

    def request_stop(self, why: str) -> None:
        """Set the stop flag, wake wait(), then let the worker's stop() react."""
        if self.stopping:
            return
        self.stopping = True
        log.debug("stopping: %s", why)
        os.write(self._stop_w, b"x")  # never drained: wait() returns at once from now on
        try:
            self._on_stop()
        except Exception:
            log.exception("stop() raised")

    def _watch(self) -> None:
        watched = [self._sig_r] if self.life_fd is None else [self._sig_r, self.life_fd]
        deadline: float | None = None
        grace = self.config.worker_graceful_kill_timeout
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            readable, _, _ = select.select(watched, [], [], timeout)
            if deadline is not None and time.monotonic() >= deadline:
                log.error("still running %.1fs after the master died; exiting now", grace)
                finish(1)
            if self.life_fd in readable and self._master_gone():
                watched.remove(self.life_fd)  # EOF stays readable forever
                deadline = time.monotonic() + grace
                log.warning("master (pid %d) is gone; stopping", self.master_pid)
                self.request_stop("master gone")
            if self._sig_r in readable:
                self._dispatch()

    def _master_gone(self) -> bool:
        if self.life_fd is None:  # a thread worker: it has no life pipe of its own
            return False
        try:
            return os.read(self.life_fd, 1) == b""
        except OSError:
            return True

    def _dispatch(self) -> None:
        try:
            data = os.read(self._sig_r, 256)
        except BlockingIOError:
            return
        for signum in data:
            try:
                self._act(signum)
            except Exception:  # the watcher must outlive any one failure
                log.exception("handling signal %d", signum)

    def _act(self, signum: int) -> None:
        if signum in STOP_SIGNALS:
            self.request_stop(f"signal {signal.Signals(signum).name}")
        elif signum in QUICK_SIGNALS:
            finish(0)
        elif signum == signal.SIGHUP:
            self._on_reload()
        elif signum == signal.SIGUSR1:
            try:
                logsetup.reopen(self.config.log)
                log.info("reopened log file")
            except OSError as exc:  # keeps writing to the file it has
                log.error("cannot reopen the log file %s: %s", self.config.log, exc.strerror)
