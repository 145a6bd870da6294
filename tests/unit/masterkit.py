"""A Master driven one step() at a time, with no process forked.

The parts that would fork, or exist only in a real server, are stand-ins, each
named for what it replaces: FakeLauncher (workers are socketpairs whose far end
the test writes status lines into), FakeServer (hooks, take-over, fds), Clock
(the loop's and the pool's time). Signals, the wakeup pipe, the selector, the
timers and the notify socket are the real ones.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from svcengine import config
from svcengine.hooks import Hooks
from svcengine.master import Master
from svcengine.master.handles import ExitStatus, Key
from svcengine.master.launchers import DirectLauncher, Started
from svcengine.signals import PRESETS
from svcengine.unix.systemd import Notifier


class Clock:
    """A fake monotonic clock: it moves only when the test says so."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class FakeLauncher(DirectLauncher):
    """Stands in for fork(): a worker is a socketpair; what it 'says' the test writes."""

    def __init__(self) -> None:
        self.generations: list[str] = []  # begin / commit / abandon, in order
        self._keys = itertools.count(100001)  # never a pid this test could signal
        self.ends: dict[int, socket.socket] = {}  # key -> the worker's end
        self.ids: dict[int, int] = {}  # key -> worker id
        self.signals: list[tuple[int, int]] = []
        self.fail_next = False

    def start(self, worker_id: int, beat_index: int) -> Started:
        if self.fail_next:
            self.fail_next = False
            raise OSError(11, "Resource temporarily unavailable")
        key = next(self._keys)
        ours, theirs = socket.socketpair()
        self.ends[key] = theirs
        self.ids[key] = worker_id
        os.set_blocking(ours.fileno(), False)
        return Started(key, ours.detach())

    def signal(self, key: Key, signum: int) -> bool:
        self.signals.append((key, signum))
        return True

    def kill_group(self, key: Key, signum: int) -> bool:
        return False

    def exit_line(self, key: Key, text: str) -> ExitStatus | None:
        return ExitStatus.from_line(text)

    def begin_generation(self) -> None:
        self.generations.append("begin")

    def commit_generation(self) -> None:
        self.generations.append("commit")

    def abandon_generation(self) -> None:
        self.generations.append("abandon")

    # --- what a worker says -----------------------------------------------------------
    def say(self, key: int, line: str) -> None:
        self.ends[key].send(line.encode() + b"\n")

    def ready(self, key: int) -> None:
        self.say(key, "ready")

    def exit(self, key: int, code: int = 0) -> None:
        self.say(key, f"exited {code}")
        self.ends.pop(key).close()

    def signalled(self, key: int) -> list[int]:
        return [s for k, s in self.signals if k == key]


@dataclass
class FakeServer:
    """Stands in for server.Server: what the master calls on it, recorded."""

    config: config.Config
    hooks: Hooks = field(default_factory=Hooks)
    worker_class: Any = None
    calls: list[str] = field(default_factory=list)

    def master_fds(self) -> list[int]:
        return []

    def take_over(self) -> None:
        self.calls.append("take_over")

    def announce_ready(self) -> None:
        self.calls.append("announce_ready")

    def chown_log(self) -> None:
        self.calls.append("chown_log")


class NotifySocket:
    """A real NOTIFY_SOCKET: the master's sd_notify datagrams, as systemd would read them."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setblocking(False)
        self.seen: list[str] = []

    def read(self) -> list[str]:
        while True:
            try:
                self.seen.append(self.sock.recv(65536).decode())
            except BlockingIOError:
                return self.seen

    def has(self, field_: str) -> int:
        return sum(1 for m in self.read() for line in m.split("\n") if line == field_)


class Kit:
    def __init__(self, tmp: str, **cfg: Any) -> None:
        self.clock = Clock()
        self.launcher = FakeLauncher()
        self.cfg = config.Config(**{"workers": 2, **cfg})
        self.server = FakeServer(self.cfg)
        self.notify_socket = NotifySocket(os.path.join(tmp, "notify"))
        self.notifier = Notifier({"NOTIFY_SOCKET": self.notify_socket.path})
        self.next_config = self.cfg
        self.master = Master(
            self.server,  # type: ignore[arg-type]
            self.cfg,
            [],
            self.notifier,
            lambda: self.next_config,
            launcher=self.launcher,
            clock=self.clock,
        )

    def keys(self, generation: int | None = None) -> list[int]:
        pool = self.master.pool
        return sorted(
            w.key for w in pool.workers() if generation is None or w.generation == generation
        )

    def step(self, n: int = 3) -> None:
        for _ in range(n):
            self.master.step(0)

    def signal(self, sig: signal.Signals) -> None:
        """A real signal to this process; the master's handler turns it into a command."""
        os.kill(os.getpid(), sig)
        self.step()

    def all_ready(self, generation: int | None = None) -> None:
        for key in self.keys(generation):
            if self.master.pool.by_key[key].ready_at is None:
                self.launcher.ready(key)
        self.step()


def saved_signals() -> dict[int, Any]:
    sigs = {s for preset in PRESETS.values() for s in preset}
    return {s: signal.getsignal(s) for s in sigs}


def kit_factory(tmp_path: Any, after_beats: bool = False) -> Iterator[Callable[..., Kit]]:
    """The body of a `kit` fixture: make(real_launcher=False, worker_class=None, **cfg)
    starts a Kit's master; all are closed and the signal handlers restored at the end.
    after_beats: the fake clock starts after every heartbeat cell's (real) stamp."""
    saved = saved_signals()
    made: list[Kit] = []

    def make(real_launcher: bool = False, worker_class: type | None = None, **cfg: Any) -> Kit:
        k = Kit(str(tmp_path), **cfg)
        if after_beats:
            k.clock.t = time.monotonic() + 1000.0
        if real_launcher:
            k.master.workers.launcher = None  # start() asks for_type() for the real one
            k.server.worker_class = worker_class
        k.master.start()
        made.append(k)
        return k

    yield make
    for k in made:
        k.master.close()
        k.notify_socket.sock.close()
    for s, handler in saved.items():
        signal.signal(s, handler)
