"""The old master's side of a zero-downtime upgrade (USR2).

The listening sockets travel by the systemd socket-activation protocol
(LISTEN_FDS, LISTEN_PID = the new process, LISTEN_FDNAMES), so the new master
adopts them exactly as it would adopt sockets from systemd, and the kernel's
accept queue is never closed: no connection is refused during the handoff.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import time

from ..master.pool import describe_status
from ..signals import Command
from ..unix import linux as _linux
from .fork import command_line, spawn_new_master
from .handover import HAND_OVER, HELLO, STOP_GRACEFUL, STOP_QUICK, Channel
from .host import UpgradeHost
from .oldbin import from_oldbin, to_oldbin
from .senders import SignalSenders
from .state import Upgrade, UpgradeState

log = logging.getLogger("svcengine.upgrade")


# a stop or a TTOU in the upgrade window: who sent it decides what it means
WATCHED = (Command.GRACEFUL_STOP, Command.QUICK_STOP, Command.DECREMENT)
STOP_BACKSTOP = 5.0  # seconds past its own stop timeout before a stopping new master is killed


class Upgrader:
    """The old master's side of USR2: start the new master, then hand over or roll back.

    Between the fork and the outcome (the window) the new master's only say is a line
    on the hand-over channel (handover.py). Stop and TTOU signals are read through a
    signalfd meanwhile, which names their sender: from the new master they are Unicorn's
    before_fork recipe (ignored, with a warning); from anyone else a stop stops both.
    """

    def __init__(self, master: UpgradeHost) -> None:
        self.master = master
        self.current: Upgrade | None = None
        self.attempts = 0
        self.channel: Channel | None = None
        self.pidfd: int | None = None  # the new master, until it exits
        self.senders: SignalSenders | None = None  # while the window is open

    @property
    def running(self) -> bool:
        return self.current is not None and self.current.state is UpgradeState.RUNNING

    @property
    def holds_exit(self) -> bool:
        """A master stopped mid-upgrade exits only after the new master it started."""
        up = self.current
        return up is not None and up.state is UpgradeState.STOPPED and self.pidfd is not None

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
        to_oldbin(m.server.pidfile)
        argv = command_line(m.cfg.upgrade_command)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # before the fork: the new master's first signal is already attributed
        watched = {sig for sig, command in m.commands.items() if command in WATCHED}
        self.senders = SignalSenders.open(m.selector, watched, self._on_senders)
        m.settle_children()  # no worker may be re-parented while we are no subreaper
        try:
            pid = spawn_new_master(argv, m.sockets, m.pid, m.server.start_cwd, theirs.fileno())
        except OSError as exc:
            ours.close()
            self._close_window()
            from_oldbin(m.server.pidfile)
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
        if up.state is not UpgradeState.RUNNING:
            log.info("former new master (pid %d) %s", up.pid, how)
            if up.timer is not None:
                up.timer.cancel()
            return
        if up.timer is not None:
            up.timer.cancel()
        self._close_window()
        from_oldbin(self.master.server.pidfile)
        self._failed(up.reason or f"new master (pid {up.pid}) {how} before it was ready")

    def hand_over(self) -> None:
        """The new master's go-ahead (on the channel): stop gracefully, leave it the rest."""
        if not self.running:
            return
        assert self.current is not None
        log.info("upgrade: handing over to the new master (pid %d)", self.current.pid)
        self.current.state = UpgradeState.HANDED_OVER
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
        up.state = UpgradeState.STOPPED
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
            self.current.state = UpgradeState.FAILED
            self.current.reason = reason
        log.error("upgrade failed: %s; this master serves on", reason)
        self.master.notify.status(f"upgrade failed: {reason}; serving on")
