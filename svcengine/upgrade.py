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
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import _linux
from .handover import HAND_OVER, HELLO, STOP_GRACEFUL, STOP_QUICK, Channel
from .pool import describe_status
from .protocol import env as protoenv
from .signals import Command
from .sockets import Listener
from .timers import Timer

if TYPE_CHECKING:
    from .master import Master

log = logging.getLogger("svcengine.upgrade")


# a stop or a TTOU in the upgrade window: who sent it decides what it means
WATCHED = (Command.GRACEFUL_STOP, Command.QUICK_STOP, Command.DECREMENT)
STOP_BACKSTOP = 5.0  # seconds past its own stop timeout before a stopping new master is killed


class State(enum.Enum):
    RUNNING = "in progress"
    HANDED_OVER = "handed over"
    FAILED = "failed"
    STOPPED = "stopped"  # this master was stopped before the hand-over, the new one with it


@dataclass
class Upgrade:
    """The old master's view of one upgrade attempt."""

    pid: int  # 0: refused before any fork
    started_at: float
    attempt: int  # counts USR2s, so `ctl upgrade` can tell its own outcome from an older one
    state: State = State.RUNNING
    reason: str = ""
    timer: Timer | None = field(default=None, repr=False)
    greeted: bool = False  # the new master said hello on the channel: it hands over there
    warned: bool = False  # about Unicorn's before_fork recipe

    def as_dict(self) -> dict[str, object]:
        return {
            "pid": self.pid,
            "attempt": self.attempt,
            "state": self.state.value,
            "reason": self.reason,
        }


class Upgrader:
    """The old master's side of USR2: start the new master, then hand over or roll back.

    Between the fork and the outcome (the window) the new master's only say is a line
    on the hand-over channel (handover.py). Stop and TTOU signals are read through a
    signalfd meanwhile, which names their sender: from the new master they are Unicorn's
    before_fork recipe (ignored, with a warning); from anyone else a stop stops both.
    """

    def __init__(self, master: Master) -> None:
        self.master = master
        self.current: Upgrade | None = None
        self.attempts = 0
        self.channel: Channel | None = None
        self.pidfd: int | None = None  # the new master, until it exits
        self.senders: SignalSenders | None = None  # while the window is open

    @property
    def running(self) -> bool:
        return self.current is not None and self.current.state is State.RUNNING

    @property
    def holds_exit(self) -> bool:
        """A master stopped mid-upgrade exits only after the new master it started."""
        up = self.current
        return up is not None and up.state is State.STOPPED and self.pidfd is not None

    def owns(self, pid: int) -> bool:
        return self.current is not None and pid == self.current.pid

    def fds(self) -> list[int]:
        """Descriptors a worker must not keep."""
        fds = [self.pidfd] if self.pidfd is not None else []
        fds += [self.senders.fd] if self.senders is not None else []
        return fds + ([self.channel.fileno()] if self.channel is not None else [])

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
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # before the fork: the new master's first signal is already attributed
        watched = {sig for sig, command in m.commands.items() if command in WATCHED}
        self.senders = SignalSenders.open(m.selector, watched, self._on_senders)
        try:
            pid = spawn_new_master(argv, m.sockets, m.pid, m.server.start_cwd, theirs.fileno())
        except OSError as exc:
            ours.close()
            self._close_window()
            m.server.pidfile_from_oldbin()
            self.current = Upgrade(0, time.monotonic(), self.attempts)
            self._failed(f"cannot fork: {exc}")
            return
        finally:
            theirs.close()
        self.current = Upgrade(pid, time.monotonic(), self.attempts)
        self.channel = Channel(ours)
        m.selector.register(ours.fileno(), selectors.EVENT_READ, self._on_channel)
        self.current.timer = m.timers.after(m.cfg.upgrade_timeout, self._timed_out)
        self._watch_exit(pid)
        log.info("upgrade: started a new master (pid %d): %s", pid, " ".join(argv))
        m.notify.status(f"{m.status_text()}; upgrading to pid {pid}")

    def _watch_exit(self, pid: int) -> None:
        """The new master is not our child (double fork): a pidfd tells us when it exits."""
        fd = _linux.pidfd_open(pid)
        if fd is None:
            self.child_exited(None)
            return
        self.pidfd = fd
        selector = self.master.selector

        def on_exit(_fd: int) -> None:
            selector.unregister(fd)
            os.close(fd)
            if self.pidfd == fd:
                self.pidfd = None
            if self.owns(pid):
                self.child_exited(None)

        selector.register(fd, selectors.EVENT_READ, on_exit)

    def _kill_new_master(self) -> None:
        assert self.current is not None
        if self.pidfd is not None:
            _linux.pidfd_signal(self.pidfd, signal.SIGKILL)  # its workers die with it (PDEATHSIG)

    def _timed_out(self) -> None:
        if not self.running:
            return
        assert self.current is not None
        self.current.reason = f"not ready within {self.master.cfg.upgrade_timeout:g}s"
        log.error(
            "upgrade: new master (pid %d) %s; killing it", self.current.pid, self.current.reason
        )
        self._kill_new_master()

    def child_exited(self, status: int | None) -> None:
        """The new master exited (status None: seen through its pidfd, not waitpid)."""
        up = self.current
        assert up is not None
        how = "exited" if status is None else describe_status(status)
        if up.state is not State.RUNNING:
            log.info("former new master (pid %d) %s", up.pid, how)
            if up.timer is not None:
                up.timer.cancel()
            return
        if up.timer is not None:
            up.timer.cancel()
        self._close_window()
        self.master.server.pidfile_from_oldbin()
        self._failed(up.reason or f"new master (pid {up.pid}) {how} before it was ready")

    def hand_over(self) -> None:
        """The new master's go-ahead (on the channel): stop gracefully, leave it the rest."""
        if not self.running:
            return
        assert self.current is not None
        log.info("upgrade: handing over to the new master (pid %d)", self.current.pid)
        self.current.state = State.HANDED_OVER
        if self.current.timer is not None:
            self.current.timer.cancel()
        self._close_window()
        # systemd now follows the new master: a STOPPING=1 from us would stop the unit
        self.master.notify.disable()
        self.master.server.handed_over()
        self.master.begin_stop(quick=False)

    def stop_new_master(self, quick: bool) -> None:
        """This master is being stopped (not by its successor) during the window: the
        new master must not outlive it and take the service over."""
        if not self.running:
            return
        up = self.current
        assert up is not None
        log.warning(
            "%s stop during the upgrade: stopping the new master (pid %d) too",
            "quick" if quick else "graceful",
            up.pid,
        )
        up.state = State.STOPPED
        up.reason = "stopped before the hand-over"
        if up.timer is not None:
            up.timer.cancel()
        told = (
            up.greeted
            and self.channel is not None
            and self.channel.send(STOP_QUICK if quick else STOP_GRACEFUL)
        )
        self._close_window()
        cfg = self.master.cfg
        if told:
            timeout = (
                cfg.worker_immediate_kill_timeout if quick else cfg.worker_graceful_kill_timeout
            )
            up.timer = self.master.timers.after(timeout + STOP_BACKSTOP, self._kill_new_master)
        else:
            self._kill_new_master()  # it cannot hear us (an older svcengine, or not started)

    # --- the window: the channel and the senders of signals ----------------------------
    def _on_channel(self, _fd: int) -> None:
        channel = self.channel
        if channel is None:
            return
        lines = channel.receive()
        if lines is None:  # the new master is gone; its pidfd says so too
            self._close_channel()
            return
        for line in lines:
            if line == HELLO and self.current is not None:
                self.current.greeted = True
            elif line == HAND_OVER:
                self.hand_over()
            else:
                log.warning("upgrade: unexpected %r from the new master", line)

    def _on_senders(self, received: list[tuple[signal.Signals, int]]) -> None:
        self._on_channel(-1)  # a hello written before the signal counts first
        m = self.master
        for sig, sender in received:
            command = m.commands.get(sig, Command.IGNORE)
            up = self.current
            if up is not None and self.running and sender == up.pid:
                if command is Command.GRACEFUL_STOP and not up.greeted:
                    log.info("upgrade: %s from the new master (pid %d)", sig.name, sender)
                    self.hand_over()  # a new master from an older svcengine hands over so
                    continue
                self._recipe(sig, sender)
                continue
            log.debug("%s from pid %d: %s", sig.name, sender, command.value)
            m.handle(command, sig)

    def _recipe(self, sig: signal.Signals, sender: int) -> None:
        assert self.current is not None
        if self.current.warned:
            log.info("upgrade: ignored %s from the new master (pid %d)", sig.name, sender)
            return
        self.current.warned = True
        log.warning(
            "upgrade: ignored %s from the new master (pid %d): that is Unicorn's before_fork "
            "recipe (TTOU/QUIT to <pid>.oldbin); svcengine hands over by itself once the new "
            "master is ready, and rolls back if it never is: remove the recipe",
            sig.name,
            sender,
        )

    def _close_channel(self) -> None:
        if self.channel is not None:
            self.master.selector.unregister(self.channel.fileno())
            self.channel.close()
            self.channel = None

    def _close_window(self) -> None:
        """The outcome is known: signals mean what they always mean again."""
        if self.senders is not None:
            self.senders.close()
            self.senders = None
        self._close_channel()

    def _failed(self, reason: str) -> None:
        if self.current is not None:
            self.current.state = State.FAILED
            self.current.reason = reason
        log.error("upgrade failed: %s; this master serves on", reason)
        self.master.notify.status(f"upgrade failed: {reason}; serving on")


class SignalSenders:
    """Some signals read with their sender's pid: blocked, and read from a signalfd
    in the master's loop (set_wakeup_fd tells only the number)."""

    def __init__(self, selector: selectors.BaseSelector, signals: set[signal.Signals], fd: int):
        self.selector = selector
        self.signals = signals
        self.fd = fd

    @classmethod
    def open(
        cls,
        selector: selectors.BaseSelector,
        signals: set[signal.Signals],
        handler: Callable[[list[tuple[signal.Signals, int]]], None],
    ) -> SignalSenders | None:
        """None where senders cannot be told (not Linux): the signals keep their plain path."""
        signal.pthread_sigmask(signal.SIG_BLOCK, signals)
        try:
            fd = _linux.signalfd(set(signals))
        except OSError as exc:
            log.warning("upgrade: cannot tell who sends signals (%s)", exc)
            fd = None
        if fd is None:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
            return None

        def on_readable(_fd: int) -> None:
            handler([(signal.Signals(n), pid) for n, pid in _linux.read_signals(fd)])

        selector.register(fd, selectors.EVENT_READ, on_readable)
        return cls(selector, signals, fd)

    def close(self) -> None:
        """Unblock: signals still pending arrive by the ordinary path now."""
        self.selector.unregister(self.fd)
        os.close(self.fd)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, self.signals)


def command_line(configured: list[str] | None) -> list[str]:
    """What the new master runs: the configured command, or ours again."""
    if configured:
        return list(configured)
    return [sys.executable, *sys.orig_argv[1:]]


def spawn_new_master(
    argv: list[str], listeners: list[Listener], old_pid: int, cwd: str, channel: int
) -> int:
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
        return _double_fork(argv, listeners, old_pid, cwd, channel)
    finally:
        if reaper:
            _linux.set_child_subreaper(True)


def _double_fork(
    argv: list[str], listeners: list[Listener], old_pid: int, cwd: str, channel: int
) -> int:
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
                _exec_new_master(argv, listeners, old_pid, cwd, channel)
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


def _exec_new_master(
    argv: list[str], listeners: list[Listener], old_pid: int, cwd: str, channel: int
) -> None:
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
        # (the hand-over channel goes right after them, and is not a listening socket)
        start = 3 + len(listeners) + 64
        fds = [s.fileno() for s in listeners] + [channel]
        parked = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, start) for fd in fds]
        for i, fd in enumerate(parked):
            os.dup2(fd, 3 + i, inheritable=True)
        env = dict(os.environ)
        for key in (protoenv.LISTEN_FDS, protoenv.LISTEN_PID, protoenv.LISTEN_FDNAMES):
            env.pop(key, None)  # systemd's, for us: the new master gets ours, or none
        names = [s.name for s in listeners]
        env.update(protoenv.upgrade_env(names, old_pid, os.getpid(), 3 + len(listeners)))
        if "WATCHDOG_USEC" in env:
            env["WATCHDOG_PID"] = str(os.getpid())  # the watchdog follows the new main pid
        os.chdir(cwd)
        os.execve(argv[0], argv, env)
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(127)
