"""Talking to systemd: sd_notify through the `sdnotify` package, made safe.

sdnotify connects once when constructed, encodes latin-1 and swallows every
error. Here the connection is made lazily (after daemonizing closed fds), the
socket is non-blocking (a slow reader must never stall the master loop), the
text is UTF-8, and failures are logged. Without NOTIFY_SOCKET every call is a
no-op, so the master calls it unconditionally.
"""

from __future__ import annotations

import array
import logging
import os
import select
import socket
import time
from typing import TYPE_CHECKING

from . import linux

if TYPE_CHECKING:
    import sdnotify

log = logging.getLogger("svcengine.systemd")

# what systemd hands the master and a worker must not inherit
MANAGER_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Notifier:
    """State changes (READY, RELOADING, STOPPING, MAINPID) are never dropped: when
    systemd's queue is full (ten unread datagrams) they wait in a backlog that
    flush() retries. STATUS= and EXTEND_TIMEOUT_USEC= are coalesced: only the
    latest is sent, once per turn of the master's loop.
    """

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = env.get("NOTIFY_SOCKET") or None
        self._sock: socket.socket | None = None
        self._failed = False
        self.sent: list[str] = []  # the last few messages, for status output
        self._status: str | None = None  # the last STATUS= sent
        self._pending_status: str | None = None
        self._pending_extend: int | None = None
        self._backlog: list[str] = []
        # a new master (USR2) before its take-over: under NotifyAccess=all a RELOADING=1,
        # STOPPING=1 or EXTEND_TIMEOUT_USEC= from it would act on the unit the old master
        # still serves; its READY=1 + MAINPID= ends the standby
        self.standby = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def pending(self) -> bool:
        """Something waits for systemd to read its queue (the caller retries flush())."""
        return (
            bool(self._backlog)
            or self._pending_status is not None
            or (self._pending_extend is not None)
        )

    def _socket(self) -> socket.socket | None:
        if self._sock is None and self.address and not self._failed:
            try:
                notifier = _connect(self.address)
            except (OSError, TypeError) as exc:
                self._failed = True
                log.error("cannot connect to NOTIFY_SOCKET %s: %s", self.address, exc)
                return None
            self._sock = notifier.socket
            self._sock.setblocking(False)
            os.set_inheritable(self._sock.fileno(), False)
        return self._sock

    def _send_now(self, message: str) -> bool | None:
        """True sent, None would block, False failed for good (logged)."""
        sock = self._socket()
        if sock is None:
            return False
        try:
            sock.send(message.encode("utf-8"))
        except BlockingIOError:
            return None
        except OSError as exc:
            log.error("sd_notify %r failed: %s", message, exc)
            return False
        self.sent = (self.sent + [message])[-20:]
        return True

    def send(self, *fields: str) -> bool:
        """Send one datagram of KEY=VALUE lines, in order after any backlog."""
        if not self.enabled:
            return False
        message = "\n".join(fields)
        if self._backlog:
            self._backlog.append(message)
            return False
        result = self._send_now(message)
        if result is None:
            log.warning("systemd is not reading notifications; queued: %s", message)
            self._backlog.append(message)
            return False
        return result

    def flush(self) -> None:
        """Send the backlog, then the latest coalesced STATUS/EXTEND_TIMEOUT_USEC."""
        while self._backlog:
            if self._send_now(self._backlog[0]) is None:
                return
            self._backlog.pop(0)
        fields = []
        if self._pending_extend is not None:
            fields.append(f"EXTEND_TIMEOUT_USEC={self._pending_extend}")
        if self._pending_status is not None and self._pending_status != self._status:
            fields.append(f"STATUS={self._pending_status}")
        if fields and self._send_now("\n".join(fields)) is None:
            return  # keep them pending; the caller retries
        if self._pending_status is not None:
            self._status = self._pending_status
        self._pending_status = self._pending_extend = None

    def ready(self, status: str | None = None, mainpid: int | None = None) -> None:
        self.standby = False
        self._pending_extend = None  # the start is over: nothing left to extend
        fields = ["READY=1"]
        if mainpid:
            fields.append(f"MAINPID={mainpid}")
        if status:
            fields.append(f"STATUS={status}")
            self._status = status
            self._pending_status = None
        self.send(*fields)

    def status(self, text: str) -> None:
        if self.enabled:
            self._pending_status = text

    def reloading(self) -> None:
        if self.standby:
            return
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        if self.standby:
            return
        self.flush()
        self.send("STOPPING=1")

    def watchdog(self) -> None:
        if not self._backlog:  # a ping behind a full queue is meaningless; the next one counts
            self._send_now("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> None:
        if self.enabled and not self.standby:
            self._pending_extend = int(seconds * 1_000_000)

    def barrier(self, timeout: float = 5.0) -> bool:
        """sd_notify_barrier(): return once systemd has processed what we sent so far."""
        self.flush()
        sock = self._socket()
        if sock is None:
            return True
        r, w = linux.pipe()
        try:
            fds = array.array("i", [w])
            sock.sendmsg([b"BARRIER=1"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
            os.close(w)
            w = -1
            readable, _, _ = select.select([r], [], [], timeout)
            if not readable:
                log.warning("sd_notify barrier: no answer within %.0fs", timeout)
            return bool(readable)
        except OSError as exc:
            log.error("sd_notify barrier failed: %s", exc)
            return False
        finally:
            os.close(r)
            if w >= 0:
                os.close(w)

    def disable(self) -> None:
        """Say nothing more to systemd (an old master after handing over)."""
        self.close()
        self.address = None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _connect(address: str) -> sdnotify.SystemdNotifier:
    """sdnotify reads the address from the environment at construction only."""
    import sdnotify  # here: a master started outside systemd never needs it

    saved = os.environ.get("NOTIFY_SOCKET")
    os.environ["NOTIFY_SOCKET"] = address
    try:
        return sdnotify.SystemdNotifier(debug=True)
    finally:
        if saved is None:
            os.environ.pop("NOTIFY_SOCKET", None)
        else:
            os.environ["NOTIFY_SOCKET"] = saved


def watchdog_interval(environ: dict[str, str] | None = None) -> float | None:
    """Half of WATCHDOG_USEC, in seconds, when the watchdog is meant for us."""
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    return usec / 2_000_000


def scrub_environment(environ: dict[str, str] | None = None) -> None:
    """Remove systemd's variables so a worker cannot impersonate the master."""
    env = os.environ if environ is None else environ
    for key in MANAGER_VARIABLES:
        env.pop(key, None)
