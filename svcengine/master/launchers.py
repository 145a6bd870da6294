"""How a worker is started and signalled, one launcher per worker type.

The reconciler (workers.py) never asks which type it runs: it asks its
launcher to start a worker (a typed key and the read end of its status pipe
come back: a pid, or a ThreadKey), to signal one, and what an `exited` line on
a status pipe means. A process worker's exit comes from waitpid() (SIGCHLD); a
thread worker's from that `exited N` line, turned into an ExitStatus here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .. import spawn
from .handles import ExitStatus, Key, ThreadKey, pid_of

if TYPE_CHECKING:
    from ..channel import Heartbeats, LifePipe
    from ..config import Config
    from ..signals import SignalPipe
    from ..threads import ThreadWorkers
    from ..unix.privileges import Identity
    from ..unix.sockets import Listener
    from ..worker import Worker


@dataclass(frozen=True)
class Started:
    """A started worker: the key the master knows it by (a process's pid, a thread's
    ThreadKey) and the read end of its status pipe."""

    key: Key
    status_fd: int


class Launcher(Protocol):
    def can_start(self) -> bool:
        """False while the launcher cannot start a worker yet (a mold still importing):
        it calls the reconciler back when it can."""
        ...

    def start_many(self, orders: list[tuple[int, int]]) -> list[Started | Exception]:
        """Start a worker for each (worker id, beat index), as one batch where that is
        faster (a mold forks them back to back); a worker that could not start is its
        error."""
        ...

    def signal(self, key: Key, signum: int) -> bool:
        """Deliver what `signum` means to the worker; False: it is abandoned (gone)."""
        ...

    def kill_group(self, key: Key, signum: int) -> bool:
        """Signal whatever the worker started (its process group); False if none."""
        ...

    def exit_line(self, key: Key, text: str) -> ExitStatus | None:
        """An `exited N` status line -> how it ended, or None where waitpid() tells."""
        ...

    def fds(self) -> list[int]:
        """The launcher's own descriptors: closed in every child of the master."""
        ...

    def reaped(self, pid: int, status: ExitStatus) -> bool:
        """True if the reaped child was the launcher's own (a mold), not a worker."""
        ...

    def begin_generation(self) -> None:
        """A reload starts a new generation of workers (a mold imports the code anew)."""
        ...

    def commit_generation(self) -> None: ...
    def abandon_generation(self) -> None: ...
    def settle(self) -> None:
        """Every worker started so far is the master's child (a mold's middle processes
        are gone): before an upgrade stops the master being a subreaper for a moment."""
        ...

    def close(self) -> None: ...
    def describe(self) -> dict[str, object] | None:
        """What `ctl status` shows of the launcher (a mold), if anything."""
        ...


class DirectLauncher:
    """A launcher with nothing of its own between the master and its workers."""

    def can_start(self) -> bool:
        return True

    def start(self, worker_id: int, beat_index: int) -> Started:
        """One worker: what each launcher of this kind implements; start_many loops it."""
        raise NotImplementedError

    def start_many(self, orders: list[tuple[int, int]]) -> list[Started | Exception]:
        out: list[Started | Exception] = []
        for worker_id, beat_index in orders:
            try:
                out.append(self.start(worker_id, beat_index))
            except (OSError, RuntimeError) as exc:
                out.append(exc)
        return out

    def fds(self) -> list[int]:
        return []

    def reaped(self, pid: int, status: ExitStatus) -> bool:
        return False

    def begin_generation(self) -> None:
        pass

    def commit_generation(self) -> None:
        pass

    def abandon_generation(self) -> None:
        pass

    def settle(self) -> None:
        pass

    def close(self) -> None:
        pass

    def describe(self) -> dict[str, object] | None:
        return None


class ProcessLauncher(DirectLauncher):
    """`process` and `spawn` workers: fork (then exec for spawn) in spawn.py."""

    def __init__(self, context: Callable[[], spawn.ForkContext]) -> None:
        self.context = context

    def start(self, worker_id: int, beat_index: int) -> Started:
        pid, status_fd = spawn.fork_worker(self.context(), worker_id, beat_index)
        return Started(pid, status_fd)

    def signal(self, key: Key, signum: int) -> bool:
        try:
            os.kill(pid_of(key), signum)
        except ProcessLookupError:
            pass
        return True

    def kill_group(self, key: Key, signum: int) -> bool:
        return spawn.kill_group(pid_of(key), signum)

    def exit_line(self, key: Key, text: str) -> ExitStatus | None:
        return None  # a process's exit is reaped, never believed from its pipe


class ThreadLauncher(DirectLauncher):
    """`thread` workers: threads of the master's process (threads.py)."""

    def __init__(self, threads: ThreadWorkers) -> None:
        self.threads = threads

    def start(self, worker_id: int, beat_index: int) -> Started:
        serial, status_fd = self.threads.start(worker_id, beat_index)
        return Started(ThreadKey(serial), status_fd)

    def signal(self, key: Key, signum: int) -> bool:
        return self.threads.signal(_serial(key), signum)

    def kill_group(self, key: Key, signum: int) -> bool:
        return False  # its children are the master's own

    def exit_line(self, key: Key, text: str) -> ExitStatus | None:
        self.threads.exited(_serial(key))
        return ExitStatus.from_line(text)


def _serial(key: Key) -> int:
    if not isinstance(key, ThreadKey):
        raise TypeError(f"pid {key} is not a thread worker")
    return key.serial


class Pipes(Protocol):
    """The reconciler's life pipe and heartbeat cells (workers.Workers)."""

    @property
    def life(self) -> LifePipe | None: ...
    @property
    def heartbeats(self) -> Heartbeats | None: ...
    def maintain(self) -> None: ...


class LaunchHost(Protocol):
    """What a new worker needs from its master, and what it must drop."""

    @property
    def pid(self) -> int: ...
    @property
    def server(self) -> Any: ...  # worker_class, hooks
    @property
    def workers(self) -> Pipes: ...
    @property
    def sockets(self) -> list[Listener]: ...
    @property
    def signals(self) -> SignalPipe | None: ...
    @property
    def identity(self) -> Identity | None: ...
    @property
    def cfg(self) -> Config: ...
    def master_fds(self) -> list[int]: ...


def fork_context(m: LaunchHost) -> Callable[[], spawn.ForkContext]:
    """What a forked child needs from the master, read afresh at each fork."""

    def after_fork(worker: Worker) -> None:
        m.server.hooks.call_strict("after_fork", m.server, worker)

    def after_mold_ready() -> None:
        m.server.hooks.call("after_mold_ready", m.server)

    def context() -> spawn.ForkContext:
        assert m.workers.life is not None and m.workers.heartbeats is not None
        assert m.signals is not None
        return spawn.ForkContext(
            master_pid=m.pid,
            config=m.cfg,
            worker_class=m.server.worker_class,
            life=m.workers.life,
            heartbeats=m.workers.heartbeats,
            sockets=m.sockets,
            master_fds=m.master_fds,
            restore_signals=m.signals.close,
            after_fork=after_fork,
            identity=m.identity,
            after_mold_ready=after_mold_ready,
        )

    return context


def for_type(worker_type: str, m: LaunchHost) -> Launcher:
    """The launcher of a worker type; the thread code is imported only for its type."""
    if worker_type == "thread":
        from ..threads import ThreadWorkers  # deferred: only thread workers need it

        def after_fork(worker: object) -> None:
            m.server.hooks.call_strict("after_fork", m.server, worker)

        assert m.workers.heartbeats is not None
        threads = ThreadWorkers(
            lambda: m.cfg, m.server.worker_class, m.workers.heartbeats, m.sockets, after_fork
        )
        return ThreadLauncher(threads)
    return ProcessLauncher(fork_context(m))
