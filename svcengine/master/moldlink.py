"""The master's conversation with one mold over its SOCK_SEQPACKET socket (child/mold.py).

Fork requests are sent as a batch and answered in any order, each answer naming its
worker id (the mold's middle processes answer themselves): the mold forks the next
middle process while the last one still forks its worker. An answer for a worker the
master no longer waits for (it gave up on it) is dropped wherever it turns up.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass

from ..unix import linux as _linux

log = logging.getLogger("svcengine.master")


class LinkError(Exception):
    """The mold did not answer in time, or closed its socket: it is of no more use."""


@dataclass(frozen=True)
class Forked:
    """A worker the mold forked (pid), or why it could not (error)."""

    pid: int | None
    error: str = ""


def order_workers(sock: socket.socket, orders: list[tuple[int, int]]) -> dict[int, int]:
    """Send one fork request per (worker id, beat index): the read end of each worker's
    status pipe by worker id (the write end travels with the request)."""
    pipes: dict[int, int] = {}
    try:
        for worker_id, beat_index in orders:
            status_r, status_w = _linux.pipe()
            pipes[worker_id] = status_r
            try:
                socket.send_fds(sock, [b"fork %d %d" % (worker_id, beat_index)], [status_w])
            finally:
                _close(status_w)  # a copy travels with the request
    except OSError as exc:
        for fd in pipes.values():
            _close(fd)
        raise LinkError(f"cannot send to it ({exc})") from None
    return pipes


def collect(
    sock: socket.socket, worker_ids: set[int], timeout: float, answers: dict[int, Forked]
) -> None:
    """Wait for an answer for each of `worker_ids`, all within `timeout`, into `answers`:
    on a LinkError it holds those that came (their workers run: the master keeps them)."""
    deadline = time.monotonic() + timeout
    while len(answers) < len(worker_ids):
        data = _recv(sock, deadline)
        worker_id, forked = parse(data)
        if worker_id in worker_ids and worker_id not in answers:
            answers[worker_id] = forked
        else:
            log.debug("mold: dropped %r", data[:200])


def ask(sock: socket.socket, request: bytes, timeout: float) -> bytes:
    """One request with an answer of its own (`sync` -> `ok`); late fork answers dropped."""
    deadline = time.monotonic() + timeout
    _send(sock, request)
    while True:
        data = _recv(sock, deadline)
        if not data.startswith((b"pid ", b"error ")):
            return data
        log.debug("mold: dropped %r", data[:200])


def parse(data: bytes) -> tuple[int | None, Forked]:
    """`pid N ID` or `error ID TEXT` -> (worker id, Forked); anything else: (None, ...)."""
    try:
        if data.startswith(b"pid "):
            _, pid, worker_id = data.split()
            return int(worker_id), Forked(int(pid))
        if data.startswith(b"error "):
            _, worker_id, *text = data.split(b" ", 2)
            return int(worker_id), Forked(None, b"".join(text).decode("utf-8", "replace"))
    except ValueError:
        pass
    return None, Forked(None, data.decode("utf-8", "replace"))


def _send(sock: socket.socket, data: bytes) -> None:
    try:
        sock.send(data)
    except OSError as exc:
        raise LinkError(f"cannot send to it ({exc})") from None


def _recv(sock: socket.socket, deadline: float) -> bytes:
    sock.settimeout(max(0.0, deadline - time.monotonic()))
    try:
        data = sock.recv(4096)
    except OSError as exc:  # socket.timeout included
        raise LinkError(f"no answer ({exc})") from None
    finally:
        sock.setblocking(False)
    if not data:
        raise LinkError("closed its socket")
    return data


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
