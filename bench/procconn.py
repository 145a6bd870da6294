"""Linux proc connector: process fork/exec/exit events with kernel timestamps.

The kernel multicasts one netlink message per event to sockets bound to the
CN_IDX_PROC group of NETLINK_CONNECTOR once they ask with PROC_CN_MCAST_LISTEN.
Each event carries ``timestamp_ns`` from ``ktime_get_ns()``, i.e. CLOCK_MONOTONIC,
so it compares directly with ``time.monotonic_ns()`` in user space.

Needs CAP_NET_ADMIN in the initial user and pid namespaces (root on the host),
and CONFIG_PROC_EVENTS. No polling of /proc.

Layout (include/uapi/linux/netlink.h, connector.h, cn_proc.h)::

    struct nlmsghdr { u32 len; u16 type; u16 flags; u32 seq; u32 pid; }        16 bytes
    struct cn_msg   { u32 idx; u32 val; u32 seq; u32 ack; u16 len; u16 flags; } 20 bytes
    struct proc_event { u32 what; u32 cpu; u64 timestamp_ns; union event_data; }
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from dataclasses import dataclass

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4
PROC_CN_MCAST_LISTEN = 1
PROC_CN_MCAST_IGNORE = 2
SO_RCVBUFFORCE = 33

PROC_EVENT_NONE = 0x00000000
PROC_EVENT_FORK = 0x00000001
PROC_EVENT_EXEC = 0x00000002
PROC_EVENT_UID = 0x00000004
PROC_EVENT_GID = 0x00000040
PROC_EVENT_SID = 0x00000080
PROC_EVENT_PTRACE = 0x00000100
PROC_EVENT_COMM = 0x00000200
PROC_EVENT_NONZERO_EXIT = 0x20000000
PROC_EVENT_COREDUMP = 0x40000000
PROC_EVENT_EXIT = 0x80000000

_NLMSGHDR = struct.Struct("=IHHII")
_CN_MSG = struct.Struct("=IIIIHH")
_EV_HEAD = struct.Struct("=IIQ")
_FORK = struct.Struct("=IIII")  # parent_pid, parent_tgid, child_pid, child_tgid
_EXEC = struct.Struct("=II")  # process_pid, process_tgid
_EXIT = struct.Struct("=IIII")  # process_pid, process_tgid, exit_code, exit_signal
_HDRS = _NLMSGHDR.size + _CN_MSG.size


@dataclass(frozen=True, slots=True)
class Event:
    """One process event. ``pid``/``tgid`` name the thread/process it is about."""

    what: int
    ts_ns: int  # CLOCK_MONOTONIC, from the kernel
    pid: int
    tgid: int
    parent_pid: int = 0  # fork only
    parent_tgid: int = 0  # fork only
    exit_code: int = 0  # exit only: wait(2)-style status

    @property
    def is_thread(self) -> bool:
        return self.pid != self.tgid


class ProcConnector:
    """A listening proc-connector socket. ``read()`` returns the parsed events.

    Use ``fileno()`` with a selector; the socket is non-blocking.
    """

    def __init__(self, rcvbuf: int = 8 << 20) -> None:
        self.overruns = 0
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
        try:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
            except OSError:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.bind((0, CN_IDX_PROC))
            self._control(PROC_CN_MCAST_LISTEN)
            self.sock.setblocking(False)
        except BaseException:
            self.sock.close()
            raise

    def _control(self, op: int) -> None:
        payload = struct.pack("=I", op)
        cn = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(payload), 0)
        portid = self.sock.getsockname()[0]
        hdr = _NLMSGHDR.pack(_HDRS + len(payload), NLMSG_DONE, 0, 0, portid)
        self.sock.send(hdr + cn + payload)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        try:
            self._control(PROC_CN_MCAST_IGNORE)
        except OSError:
            pass
        self.sock.close()

    def __enter__(self) -> ProcConnector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self) -> list[Event]:
        """Drain the socket without blocking. Lost events (ENOBUFS) count in overruns."""
        events: list[Event] = []
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return events
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    self.overruns += 1
                    continue
                raise
            events.extend(parse(data))

    def read_blocking(self, timeout: float | None = None) -> list[Event]:
        """Wait up to ``timeout`` for at least one datagram, then drain."""
        import select

        r, _, _ = select.select([self.sock], [], [], timeout)
        return self.read() if r else []


def parse(data: bytes) -> list[Event]:
    """Parse one netlink datagram (possibly several messages) into events."""
    out: list[Event] = []
    off = 0
    while off + _NLMSGHDR.size <= len(data):
        nl_len, nl_type, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, off)
        if nl_len < _NLMSGHDR.size:
            break
        end = off + nl_len
        if nl_type == NLMSG_DONE and nl_len >= _HDRS + _EV_HEAD.size:
            idx, val, _s, _a, cn_len, _f = _CN_MSG.unpack_from(data, off + _NLMSGHDR.size)
            if idx == CN_IDX_PROC and val == CN_VAL_PROC:
                ev = _parse_event(data, off + _HDRS, min(end, off + _HDRS + cn_len))
                if ev is not None:
                    out.append(ev)
        off += (nl_len + 3) & ~3
    return out


def _parse_event(data: bytes, off: int, end: int) -> Event | None:
    what, _cpu, ts = _EV_HEAD.unpack_from(data, off)
    body = off + _EV_HEAD.size
    if what == PROC_EVENT_FORK and body + _FORK.size <= end:
        ppid, ptgid, cpid, ctgid = _FORK.unpack_from(data, body)
        return Event(what, ts, cpid, ctgid, parent_pid=ppid, parent_tgid=ptgid)
    if what == PROC_EVENT_EXEC and body + _EXEC.size <= end:
        pid, tgid = _EXEC.unpack_from(data, body)
        return Event(what, ts, pid, tgid)
    if what == PROC_EVENT_EXIT and body + _EXIT.size <= end:
        pid, tgid, code, _sig = _EXIT.unpack_from(data, body)
        return Event(what, ts, pid, tgid, exit_code=code)
    return None


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        try:
            import signal

            return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
        except ValueError:
            return f"killed by signal {os.WTERMSIG(status)}"
    if os.WIFEXITED(status):
        return f"exited with status {os.WEXITSTATUS(status)}"
    return f"status {status:#x}"


if __name__ == "__main__":  # a tiny `forkstat`: python bench/procconn.py [seconds]
    import sys
    import time

    limit = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    names = {PROC_EVENT_FORK: "fork", PROC_EVENT_EXEC: "exec", PROC_EVENT_EXIT: "exit"}
    with ProcConnector() as pc:
        deadline = time.monotonic() + limit
        while (left := deadline - time.monotonic()) > 0:
            for ev in pc.read_blocking(left):
                if ev.is_thread:
                    continue
                lag_us = (time.monotonic_ns() - ev.ts_ns) / 1000
                extra = ""
                if ev.what == PROC_EVENT_FORK:
                    extra = f" parent={ev.parent_tgid}"
                elif ev.what == PROC_EVENT_EXIT:
                    extra = f" {describe_status(ev.exit_code)}"
                t = ev.ts_ns / 1e9
                print(f"{t:.6f} {names[ev.what]:4} pid={ev.tgid}{extra} lag={lag_us:.0f}us")
