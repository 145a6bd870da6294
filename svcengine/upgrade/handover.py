"""The hand-over channel between an old master and the new master it starts (USR2).

A signal can come from anyone: an operator's or systemd's stop, or Unicorn's
`before_fork` recipe running in the new master. So a signal must never *be* the
hand-over. The old master makes a socketpair before the double fork; the new
master inherits one end (its fd number in SVCENGINE_UPGRADE_FD) and is the only
process holding it, so a line on it can only come from the successor. Lines:

- new -> old `hello`: at the new master's start (it speaks this channel);
- new -> old `hand-over`: ready, pidfile and control socket taken: stop gracefully;
- old -> new `stop graceful` / `stop quick`: the old master was stopped before the
  hand-over, and the new one must stop with it.

EOF means the other side is gone. A new master started by an older svcengine
(no channel) falls back to the old master's graceful-stop signal, sent through a
pidfd opened at its start, never to a bare pid that may have been reused.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..protocol import env as protoenv
from ..signals import Command
from ..unix import linux as _linux
from .oldbin import take_pidfile

if TYPE_CHECKING:
    from ..unix.pidfile import Pidfile
    from ..unix.sockets import Listener
    from ..unix.systemd import Notifier

log = logging.getLogger("svcengine.upgrade")

HELLO = "hello"
HAND_OVER = "hand-over"
STOP_GRACEFUL = "stop graceful"
STOP_QUICK = "stop quick"


class Channel:
    """One end: short lines, non-blocking, so it can never stall a master's loop."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._buf = b""

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, line: str) -> bool:
        try:
            self.sock.send(line.encode() + b"\n")
        except OSError:
            return False
        return True

    def receive(self) -> list[str] | None:
        """The complete lines waiting; None once the other side is gone."""
        try:
            data = self.sock.recv(4096)
        except BlockingIOError:
            return []
        except OSError:
            data = b""
        if not data:
            return None
        *lines, self._buf = (self._buf + data).split(b"\n")
        return [line.decode(errors="replace") for line in lines]

    def close(self) -> None:
        self.sock.close()


class Successor:
    """The new master's side: the channel to the old master, and a pidfd on it."""

    def __init__(self, old_pid: int, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.old_pid = old_pid
        try:  # now, while the pid surely is the old master's
            self.pidfd = _linux.pidfd_open(old_pid)
        except OSError as exc:
            log.warning("upgrade: no pidfd on the old master (pid %d): %s", old_pid, exc)
            self.pidfd = None
        self.channel: Channel | None = None
        self.handed_over = False
        self.told_to_stop = False
        self._selector: selectors.BaseSelector | None = None
        fd = protoenv.upgrade_fd(env)
        if fd is not None:
            try:
                os.set_inheritable(fd, False)
                self.channel = Channel(socket.socket(fileno=fd))
            except OSError as exc:
                log.warning("upgrade: no hand-over channel (fd %s): %s", fd, exc)
        if self.channel is not None:
            self.channel.send(HELLO)

    def fds(self) -> list[int]:
        """Descriptors a worker must not keep."""
        fds = [self.pidfd] if self.pidfd is not None else []
        return fds + ([self.channel.fileno()] if self.channel is not None else [])

    def attach(self, selector: selectors.BaseSelector, stop: Callable[[bool], None]) -> None:
        """Listen for the old master's `stop` (it was stopped before the hand-over)."""
        channel = self.channel
        if channel is None:
            return
        self._selector = selector

        def on_readable(_fd: int) -> None:
            lines = channel.receive()
            if lines is None:
                if not (self.handed_over or self.told_to_stop):
                    log.warning(
                        "upgrade: the old master (pid %d) is gone before the hand-over",
                        self.old_pid,
                    )
                self._close_channel()
                return
            for line in lines:
                if line in (STOP_GRACEFUL, STOP_QUICK):
                    self.told_to_stop = True
                    log.warning(
                        "upgrade: the old master (pid %d) was stopped before the hand-over; "
                        "this master stops too",
                        self.old_pid,
                    )
                    stop(line == STOP_QUICK)

        selector.register(channel.fileno(), selectors.EVENT_READ, on_readable)

    def take_over(self, pid_path: str | None, listeners: list[Listener]) -> Pidfile | None:
        """First READY: the pidfile is ours now (returned), and so are the unix socket files
        the old master bound (we may remove them at our end, by inode)."""
        pidfile = take_pidfile(pid_path)
        for listener in listeners:
            if listener.name.startswith("unix:") and listener.inode is None:
                try:
                    listener.inode = os.stat(listener.name[5:]).st_ino
                except OSError:
                    pass
        return pidfile

    def announce_ready(self, notify: Notifier, commands: dict[signal.Signals, Command]) -> None:
        """READY sent and the pidfile and control socket taken: the old master may go."""
        notify.barrier()  # systemd has seen MAINPID= before the old master goes
        graceful = next(
            (s for s, c in commands.items() if c is Command.GRACEFUL_STOP), signal.SIGTERM
        )
        self.hand_over(graceful)

    def hand_over(self, graceful: signal.Signals) -> None:
        """Tell the old master to go: on the channel, or (an older old master) by signal."""
        self.handed_over = True
        if self.channel is not None and self.channel.send(HAND_OVER):
            log.info("upgrade: took over from pid %d; it stops now", self.old_pid)
        elif self.pidfd is not None and _linux.pidfd_signal(self.pidfd, graceful):
            log.info("upgrade: took over from pid %d; sending it %s", self.old_pid, graceful.name)
        else:
            log.warning("upgrade: took over; the old master (pid %d) is already gone", self.old_pid)
        self.close()

    def _close_channel(self) -> None:
        if self.channel is not None:
            if self._selector is not None:
                self._selector.unregister(self.channel.fileno())
            self.channel.close()
            self.channel = None

    def close(self) -> None:
        self._close_channel()
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
