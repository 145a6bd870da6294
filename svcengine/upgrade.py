"""Zero-downtime upgrade (USR2): fork + exec a new master that inherits the sockets.

The listening sockets travel by the systemd socket-activation protocol
(LISTEN_FDS, LISTEN_PID = the new process, LISTEN_FDNAMES), so the new master
adopts them exactly as it would adopt sockets from systemd, and the kernel's
accept queue is never closed: no connection is refused during the handoff.
The new master is a plain fork of the old one's main thread with everything
reset before exec: no PDEATHSIG (fork clears it), no life pipe (CLOEXEC), no
blocked or ignored signals. It must outlive its parent.
"""

from __future__ import annotations

import enum
import fcntl
import logging
import os
import selectors
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import _linux
from .pool import describe_status
from .server import UPGRADE_FROM
from .sockets import Listener
from .timers import Timer

if TYPE_CHECKING:
    from .master import Master

log = logging.getLogger("svcengine.upgrade")

LISTEN_ADDRS = "SVCENGINE_LISTEN_ADDRS"  # the sockets' own names (may contain ':')


class State(enum.Enum):
    RUNNING = "in progress"
    HANDED_OVER = "handed over"
    FAILED = "failed"


@dataclass
class Upgrade:
    """The old master's view of one upgrade attempt."""

    pid: int  # 0: refused before any fork
    started_at: float
    attempt: int  # counts USR2s, so `ctl upgrade` can tell its own outcome from an older one
    state: State = State.RUNNING
    reason: str = ""
    timer: Timer | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, object]:
        return {
            "pid": self.pid,
            "attempt": self.attempt,
            "state": self.state.value,
            "reason": self.reason,
        }


class Upgrader:
    """The old master's side of USR2: start the new master, then hand over or roll back."""

    def __init__(self, master: Master) -> None:
        self.master = master
        self.current: Upgrade | None = None
        self.attempts = 0

    @property
    def running(self) -> bool:
        return self.current is not None and self.current.state is State.RUNNING

    def owns(self, pid: int) -> bool:
        return self.current is not None and pid == self.current.pid

    def begin(self) -> None:
        m = self.master
        if self.running:
            assert self.current is not None
            log.warning("USR2: an upgrade (new master pid %d) is already running", self.current.pid)
            return
        if m.server.upgrading_from is not None:
            log.warning("USR2 ignored: this master has not yet taken over from its predecessor")
            return
        self.attempts += 1
        if m.pid == 1:
            # the new master would be our child, and the pid namespace (the container) ends
            # when PID 1 exits: the hand-over would take everything down with it
            self.current = Upgrade(0, time.monotonic(), self.attempts)
            self._failed(
                "refused: this master is PID 1, and the container would end with it; "
                "run it under an init (docker --init, tini) to upgrade in place"
            )
            return
        m.server.hooks.call("before_exec", m.server)
        m.server.pidfile_to_oldbin()
        argv = command_line(m.cfg.upgrade_command)
        try:
            pid = spawn_new_master(argv, m.sockets, m.pid, m.server.start_cwd)
        except OSError as exc:
            m.server.pidfile_from_oldbin()
            self.current = Upgrade(0, time.monotonic(), self.attempts)
            self._failed(f"cannot fork: {exc}")
            return
        self.current = Upgrade(pid, time.monotonic(), self.attempts)
        self.current.timer = m.timers.after(m.cfg.upgrade_timeout, self._timed_out)
        self._watch_exit(pid)
        log.info("upgrade: started a new master (pid %d): %s", pid, " ".join(argv))
        m.notify.status(f"{m.status_text()}; upgrading to pid {pid}")

    def _watch_exit(self, pid: int) -> None:
        """The new master is not our child (double fork): a pidfd tells us when it exits."""
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            self.child_exited(None)
            return
        selector = self.master.selector

        def on_exit(_fd: int) -> None:
            selector.unregister(fd)
            os.close(fd)
            if self.owns(pid):
                self.child_exited(None)

        selector.register(fd, selectors.EVENT_READ, on_exit)

    def _timed_out(self) -> None:
        if not self.running:
            return
        assert self.current is not None
        self.current.reason = f"not ready within {self.master.cfg.upgrade_timeout:g}s"
        log.error(
            "upgrade: new master (pid %d) %s; killing it", self.current.pid, self.current.reason
        )
        os.kill(self.current.pid, signal.SIGKILL)  # its workers die with it (PDEATHSIG)

    def child_exited(self, status: int | None) -> None:
        """The new master exited (status None: seen through its pidfd, not waitpid)."""
        up = self.current
        assert up is not None
        how = "exited" if status is None else describe_status(status)
        if up.state is not State.RUNNING:
            log.info("former new master (pid %d) %s", up.pid, how)
            return
        if up.timer is not None:
            up.timer.cancel()
        self.master.server.pidfile_from_oldbin()
        self._failed(up.reason or f"new master (pid {up.pid}) {how} before it was ready")

    def hand_over(self) -> None:
        """A graceful stop while an upgrade runs: the new master's go-ahead."""
        if not self.running:
            return
        assert self.current is not None
        log.info("upgrade: handing over to the new master (pid %d)", self.current.pid)
        self.current.state = State.HANDED_OVER
        if self.current.timer is not None:
            self.current.timer.cancel()
        # systemd now follows the new master: a STOPPING=1 from us would stop the unit
        self.master.notify.disable()
        self.master.server.handed_over()

    def _failed(self, reason: str) -> None:
        if self.current is not None:
            self.current.state = State.FAILED
            self.current.reason = reason
        log.error("upgrade failed: %s; this master serves on", reason)
        self.master.notify.status(f"upgrade failed: {reason}; serving on")


def command_line(configured: list[str] | None) -> list[str]:
    """What the new master runs: the configured command, or ours again."""
    if configured:
        return list(configured)
    return [sys.executable, *sys.orig_argv[1:]]


def spawn_new_master(argv: list[str], listeners: list[Listener], old_pid: int, cwd: str) -> int:
    """Double-fork; the grandchild execs argv with the sockets at fds 3.. (socket activation).

    The double fork makes the new master a child of init (systemd) from the start:
    systemd 252 marks a MAINPID= that is not its own child as "alien" and then
    never waits for it on stop, so `systemctl stop` would skip the graceful part.
    A subreaper master would adopt the orphaned new master itself, so it stops
    being one until the middle process has exited.
    """
    reaper = _linux.is_child_subreaper()
    if reaper:
        _linux.set_child_subreaper(False)
    try:
        return _double_fork(argv, listeners, old_pid, cwd)
    finally:
        if reaper:
            _linux.set_child_subreaper(True)


def _double_fork(argv: list[str], listeners: list[Listener], old_pid: int, cwd: str) -> int:
    r, w = os.pipe2(os.O_CLOEXEC)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, set(signal.valid_signals()))
    try:
        middle = os.fork()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        os.close(r)
        os.close(w)
        raise
    if middle == 0:
        try:
            os.close(r)
            pid = os.fork()
            if pid == 0:
                os.close(w)
                _exec_new_master(argv, listeners, old_pid, cwd)
            os.write(w, str(pid).encode())
        finally:
            os._exit(0)
    signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    os.close(w)
    os.waitpid(middle, 0)
    data = os.read(r, 32)
    os.close(r)
    if not data.isdigit():
        raise OSError("the new master could not be forked")
    return int(data)


def _exec_new_master(argv: list[str], listeners: list[Listener], old_pid: int, cwd: str) -> None:
    try:
        signal.set_wakeup_fd(-1)
        for signum in signal.valid_signals():
            if signum not in (signal.SIGKILL, signal.SIGSTOP):
                try:
                    signal.signal(signum, signal.SIG_DFL)
                except (OSError, ValueError):
                    pass
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        # park the sockets above any fd we will overwrite, then lay them out at 3..
        start = 3 + len(listeners) + 64
        parked = [fcntl.fcntl(s.fileno(), fcntl.F_DUPFD_CLOEXEC, start) for s in listeners]
        for i, fd in enumerate(parked):
            os.dup2(fd, 3 + i, inheritable=True)
        import json  # in the child that execs the new master: nowhere else

        env = dict(os.environ)
        env.update(
            LISTEN_FDS=str(len(listeners)),
            LISTEN_PID=str(os.getpid()),
            LISTEN_FDNAMES=":".join(f"svc{i}" for i in range(len(listeners))),
            **{LISTEN_ADDRS: json.dumps([s.name for s in listeners]), UPGRADE_FROM: str(old_pid)},
        )
        if "WATCHDOG_USEC" in env:
            env["WATCHDOG_PID"] = str(os.getpid())  # the watchdog follows the new main pid
        if not listeners:
            for key in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
                env.pop(key)
        os.chdir(cwd)
        os.execve(argv[0], argv, env)
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(127)
