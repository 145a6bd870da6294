"""How the mold forks a worker: twice, so that the worker is the master's child.

The mold forks a middle process and goes back to its requests at once: the middle
forks the worker, answers the master itself on the mold's socket (`pid N ID`, or
`error ID TEXT`) and exits, so the worker is re-parented to the master (a child
subreaper). One message is one packet (SOCK_SEQPACKET): the middles' answers and the
mold's never mix. The master can so ask for many workers at once; the mold forks the
next middle while the last one is still forking its worker.

The mold reaps its middle processes as they exit (a pidfd each, in its select()); one
that ends without having answered (killed) gets an `error ID` from the mold, so the
master never waits for it. Before it answers a `sync` the mold reaps them all: then
every worker forked so far is the master's child.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from ..config import Config
from ..unix import linux as _linux
from ..worker import Worker
from .boot import exit_code

log = logging.getLogger("svcengine.master")

REPARENT_TIMEOUT = 10.0  # s a new worker waits for the middle process to go
ANSWERED = 0  # a middle's exit status once it sent its answer (the pid, or an error)


@dataclass
class Order:
    """One fork request, as the mold's three processes pass it along."""

    sock: socket.socket  # the mold's end: the middle answers on it; closed in the worker
    worker_id: int
    beat_index: int
    status_fd: int
    cls: type[Worker] | None
    fork: Callable[[], int]  # how the mold forks the middle process


# a worker's boot (spawn.boot_forked with what the mold knows bound in): worker id,
# beat index, status fd, class, and what to call before READY (False: do not serve)
Boot = Callable[[int, int, int, type[Worker] | None, Callable[[], bool]], int]


class Middles:
    """The mold's middle processes that have not been reaped yet."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._by_fd: dict[int, tuple[int, int]] = {}  # pidfd -> (pid, worker id)

    def fds(self) -> list[int]:
        return list(self._by_fd)

    def add(self, pid: int, worker_id: int) -> None:
        fd = _linux.pidfd_open(pid)
        if fd is None:  # gone already: a zombie that is ours to reap
            self._reap(pid, worker_id)
        else:
            self._by_fd[fd] = (pid, worker_id)

    def exited(self, fd: int) -> None:
        """`fd` (a pidfd of ours) is readable: that middle process has exited."""
        pid, worker_id = self._by_fd.pop(fd)
        os.close(fd)
        self._reap(pid, worker_id)

    def reap_all(self) -> None:
        for fd in list(self._by_fd):
            self.exited(fd)  # waitpid() blocks until it has exited: a moment

    def _reap(self, pid: int, worker_id: int) -> None:
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            return
        if os.waitstatus_to_exitcode(status) != ANSWERED:
            why = f"the middle process {pid} ended with wait status {status} before it answered"
            _send(self.sock, b"error %d %s" % (worker_id, why.encode()))


def fork_worker(order: Order, master_pid: int, config: Config, boot: Boot) -> int:
    """Fork the middle process (which forks the worker and answers); its pid."""
    middle = order.fork()
    if middle == 0:
        _middle(order, master_pid, config, boot)
    return middle


def _send(sock: socket.socket, data: bytes) -> bool:
    try:
        sock.send(data)
    except OSError:
        return False
    return True


def _middle(order: Order, master_pid: int, config: Config, boot: Boot) -> None:
    """The middle process: fork the worker, tell the master its pid, go."""
    code = 1
    try:
        try:
            pid = os.fork()
        except OSError as exc:
            text = f"cannot fork worker {order.worker_id}: {exc}"
            code = (
                ANSWERED
                if _send(order.sock, b"error %d %s" % (order.worker_id, text.encode()))
                else 1
            )
            return
        if pid == 0:
            _worker(order, master_pid, config, boot)
        try:
            os.setpgid(pid, pid)  # before anyone knows the pid: no signal finds it outside
        except OSError:
            pass  # it did so itself first
        if _send(order.sock, b"pid %d %d" % (pid, order.worker_id)):
            code = ANSWERED
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def _worker(order: Order, master_pid: int, config: Config, boot: Boot) -> None:
    """The new worker: boot; before READY, wait to be the master's child, arm PDEATHSIG."""
    code = 1
    try:
        try:
            os.setpgid(0, 0)
        except OSError:
            pass
        order.sock.close()

        def adopted() -> bool:
            return _reparented(master_pid) and _arm(config, master_pid)

        code = boot(order.worker_id, order.beat_index, order.status_fd, order.cls, adopted)
    except SystemExit as exc:
        code = exit_code(exc)
    except BaseException:
        traceback.print_exc()
    finally:
        from . import finish

        finish(code)


def _reparented(master_pid: int) -> bool:
    """Wait until the middle process is gone: then the master (a subreaper) is our parent."""
    parent = os.getppid()
    if parent != master_pid:
        _linux.wait_exit(parent, REPARENT_TIMEOUT)  # a pidfd: no polling
    if os.getppid() != master_pid:
        log.error("worker not re-parented to the master (pid %d): exiting", master_pid)
        return False
    return True


def _arm(cfg: Config, master_pid: int) -> bool:
    """PDEATHSIG, then getppid() once more: a master that died before prctl sent nothing."""
    if cfg.worker_pdeathsig:
        _linux.set_pdeathsig(signal.SIGKILL)
    return os.getppid() == master_pid
