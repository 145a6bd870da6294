"""What connects one master to its workers: the life pipe, status pipes, heartbeats.

- Life pipe: one pipe for the whole pool. Only the master holds the write end
  (each child closes its copy at once), so EOF on the read end in a worker
  means the master is gone, however it died.
- Status pipe: one per worker, worker -> master, carrying short lines
  ("ready", "boot-failed <why>"). It wakes the master only for events.
- Heartbeats: a shared memory page of monotonic timestamps, one cell per live
  worker. Writing one costs the master nothing; it reads them on its own timer.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from dataclasses import dataclass

from .unix import linux as _linux

READY = b"ready"
BOOT_FAILED = b"boot-failed"
EXITED = b"exited"  # a thread worker's end (a process worker's is its exit status)

_CELL = struct.Struct("d")


@dataclass
class LifePipe:
    rfd: int
    wfd: int

    @classmethod
    def create(cls) -> LifePipe:
        r, w = _linux.pipe()
        return cls(r, w)

    def child_side(self) -> int:
        """In a worker: drop the write end so only the master keeps the pipe open."""
        os.close(self.wfd)
        return self.rfd

    def close(self) -> None:
        for fd in (self.rfd, self.wfd):
            try:
                os.close(fd)
            except OSError:
                pass


def send(fd: int, kind: bytes, text: str = "") -> None:
    """Write one status line; a master that is gone is not an error here."""
    line = kind + (b" " + text.replace("\n", " | ").encode("utf-8", "replace") if text else b"")
    try:
        os.write(fd, line[:4000] + b"\n")
    except OSError:
        pass


def parse(buffer: bytes) -> tuple[list[tuple[bytes, str]], bytes]:
    """Split complete status lines off a buffer; return them and the rest."""
    messages = []
    *lines, rest = buffer.split(b"\n")
    for line in lines:
        kind, _, text = line.partition(b" ")
        messages.append((kind, text.decode("utf-8", "replace")))
    return messages, rest


class Heartbeats:
    """Shared cells of CLOCK_MONOTONIC seconds, allocated per worker process.

    Backed by a memfd so a spawned (exec'd) worker can map the same page
    from an inherited fd.
    """

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self.fd = _linux.memfd("svcengine-heartbeats")
        os.ftruncate(self.fd, capacity * _CELL.size)
        self.map = mmap.mmap(self.fd, capacity * _CELL.size)
        self._free = list(range(capacity - 1, -1, -1))

    def allocate(self) -> int:
        if not self._free:
            raise RuntimeError("no free heartbeat cell")
        index = self._free.pop()
        _CELL.pack_into(self.map, index * _CELL.size, time.monotonic())
        return index

    def release(self, index: int) -> None:
        self._free.append(index)

    def last(self, index: int) -> float:
        seconds: float = _CELL.unpack_from(self.map, index * _CELL.size)[0]
        return seconds

    def close(self) -> None:
        self.map.close()
        os.close(self.fd)


class Beat:
    """The worker's end of its heartbeat cell."""

    def __init__(self, map_: mmap.mmap, index: int) -> None:
        self.map = map_
        self.offset = index * _CELL.size

    def __call__(self) -> None:
        _CELL.pack_into(self.map, self.offset, time.monotonic())
