"""The master's side of the mold (child/mold.py): one mold per generation of workers.

`process` workers are forked by the mold of their generation, never by the master, so
the master never imports the app. A reload (HUP) makes a new mold, which imports the
code as it is now; the previous one stays until the reload completes, so a reload that
is abandoned goes back to it (and a respawn after that forks the code that worked). A
mold that dies is replaced: at once if it was ready and lived, else after a delay that
doubles with each quick death in a row (backoff.py); its workers serve on.

Asking for workers is synchronous: a batch of requests, then every answer within
ANSWER_TIMEOUT (moldlink.py). Until a new mold has imported, the launcher cannot start
workers (`can_start()` is False) and calls the reconciler back once it can.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .. import spawn
from ..child import mold as child_mold
from ..unix import linux as _linux
from . import moldlink
from .backoff import Retry
from .handles import ExitStatus
from .launchers import Launcher, LaunchHost, ProcessLauncher, Started, for_type, fork_context
from .loop import Loop

log = logging.getLogger("svcengine.master")

ANSWER_TIMEOUT = 10.0  # s for the mold's answer to one fork request


@dataclass
class Mold:
    generation: int
    pid: int
    sock: socket.socket
    born: float
    ready: bool = False  # takes fork requests (cleared once lost)
    was_ready: bool = False  # it imported: its death is no crash loop if it lived
    note: str = ""
    workers: int = 0  # forked so far


class MoldHost(LaunchHost, Protocol):
    @property
    def loop(self) -> Loop: ...
    @property
    def clock(self) -> Callable[[], float]: ...


def launcher_for(m: MoldHost) -> Launcher:
    """`process` workers with `mold = true` (the default): a MoldLauncher, when this
    kernel can re-parent a worker to the master (a subreaper) and wait on a pidfd."""
    cfg = m.cfg
    if cfg.worker_type == "process" and cfg.mold:
        if _linux.HAS_PIDFD and (m.pid == 1 or _linux.set_child_subreaper()):
            return MoldLauncher(fork_context(m), m.loop, m.clock, m.workers.maintain)
        log.warning("mold = true needs pidfd and PR_SET_CHILD_SUBREAPER: forking from the master")
    return for_type(cfg.worker_type, m)


class MoldLauncher(ProcessLauncher):
    """A Launcher for `process` workers forked by a mold (signalled as any process)."""

    def __init__(
        self,
        context: Callable[[], spawn.ForkContext],
        loop: Loop,
        clock: Callable[[], float],
        on_ready: Callable[[], None],
    ) -> None:
        super().__init__(context)
        self.loop = loop
        self.clock = clock
        self.on_ready = on_ready  # the reconciler's maintain(): a mold can fork now
        self.current: Mold | None = None
        self.previous: Mold | None = None  # the last generation's, while a reload may fail
        self.generation = 0
        self.retry = Retry(loop.timers, self.can_start)  # the next mold, after a death
        self._closed = False
        self._stopped: set[int] = set()  # molds we killed: their exit is no news

    # --- Launcher ---------------------------------------------------------------------
    def can_start(self) -> bool:
        if self.current is None and not self.retry.pending and not self._closed:
            self._make()
        return self.current is not None and self.current.ready

    def start_many(self, orders: list[tuple[int, int]]) -> list[Started | Exception]:
        """All requests first, then the answers (in any order): the mold forks the next
        middle process while the last one forks its worker."""
        m = self.current
        if m is None or not m.ready:
            return [RuntimeError("the mold is not ready") for _ in orders]
        pipes: dict[int, int] = {}  # worker id -> its status pipe's read end
        answers: dict[int, moldlink.Forked] = {}
        try:
            pipes = moldlink.order_workers(m.sock, orders)
            moldlink.collect(m.sock, set(pipes), ANSWER_TIMEOUT, answers)
        except moldlink.LinkError as exc:
            self._lost(m, str(exc))  # every worker it did not answer for: an error below
        out: list[Started | Exception] = []
        for worker_id, _ in orders:
            status_r = pipes.get(worker_id)
            forked = answers.get(worker_id)
            if status_r is None or forked is None or forked.pid is None:
                if status_r is not None:
                    os.close(status_r)
                why = forked.error if forked else "did not answer"
                out.append(RuntimeError(f"the mold (pid {m.pid}): {why}"))
                continue
            m.workers += 1
            os.set_blocking(status_r, False)
            out.append(Started(forked.pid, status_r))
        return out

    def fds(self) -> list[int]:
        """Our ends of the molds' sockets: the master's alone, closed in every child."""
        return [
            m.sock.fileno()
            for m in (self.current, self.previous)
            if m is not None and m.sock.fileno() >= 0
        ]

    def reaped(self, pid: int, status: ExitStatus) -> bool:
        """True if `pid` was a mold (ours to replace), not a worker."""
        if pid in self._stopped:
            self._stopped.discard(pid)
            return True
        for m in (self.current, self.previous):
            if m is not None and m.pid == pid:
                self._forget(m)
                if m is self.previous:
                    self.previous = None
                    return True
                self.current = None
                if self._closed:
                    return True
                cause = str(status)
                delay = self.retry.exited(cause, self.clock() - m.born, m.was_ready)
                when = f" in {delay:g}s" if delay else ""
                log.warning(
                    "mold gen %d (pid %d) %s; making a new one%s", m.generation, pid, cause, when
                )
                return True
        return False

    # --- generations (changes.py and lifecycle.py) -------------------------------------
    def begin_generation(self) -> None:
        """A reload: the next worker comes from a new mold, importing the code as it is now."""
        if self.previous is not None:
            self._stop(self.previous)
        self.previous, self.current = self.current, None
        self.retry.cancel()  # an operator's reload need not wait out a crash loop's delay
        self.can_start()

    def commit_generation(self) -> None:
        """The reload completed: the previous generation's mold is not needed any more."""
        if self.previous is not None:
            self._stop(self.previous)
            self.previous = None

    def abandon_generation(self) -> None:
        """The reload was abandoned: back to the previous mold (if it still lives)."""
        if self.previous is None:
            return
        if self.current is not None:
            self._stop(self.current)
        self.current, self.previous = self.previous, None
        self.retry.cancel()  # the new code's crash loop, if any, is over

    def settle(self) -> None:
        for m in (self.current, self.previous):
            if m is not None and m.ready:
                try:
                    moldlink.ask(m.sock, b"sync", ANSWER_TIMEOUT)
                except moldlink.LinkError as exc:  # killed: its middle processes are gone
                    self._lost(m, str(exc))

    def close(self) -> None:
        """The master is leaving: its molds go with it."""
        self._closed = True
        self.retry.cancel()
        for m in (self.current, self.previous):
            if m is not None:
                self._stop(m)
        self.current = self.previous = None

    def describe(self) -> dict[str, object] | None:
        """`ctl status`'s mold: between a death and the next mold, pid None and retry_in."""
        m = self.current
        if m is None and not self.retry.pending:
            return None
        return {
            "pid": m.pid if m else None,
            "generation": m.generation if m else None,
            "ready": m.ready if m else False,
            "forked": m.workers if m else 0,
            "import_error": (m.note or None) if m else None,  # each worker imports (and fails)
            **self.retry.status(),
        }

    # --- the mold process -------------------------------------------------------------
    def _make(self) -> None:
        ctx = self.context()
        self.generation += 1
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.set_inheritable(False)
        theirs.set_inheritable(False)
        generation = self.generation

        def body() -> int:
            ours.close()
            life_fd = spawn.detach(ctx)
            if life_fd is None:
                return 1
            os.close(ctx.heartbeats.fd)  # the mapping stays; the fd was only for spawn
            return child_mold.run(child_mold.spec_from(ctx, generation, life_fd), theirs)

        spawn.warn_threads(f"forking the mold gen {self.generation}")
        gc.freeze()  # the master's own objects: a collection here never unshares their pages
        try:
            pid = spawn.fork_child(body)
        except OSError as exc:
            ours.close()
            theirs.close()
            delay = self.retry.failed(f"cannot fork: {exc}")
            log.error("cannot fork the mold: %s; retrying in %gs", exc, delay)
            return
        theirs.close()
        ours.setblocking(False)
        m = Mold(generation, pid, ours, self.clock())
        self.current = m
        self.loop.register(ours.fileno(), lambda _fd: self._on_message(m))
        log.info("mold gen %d started (pid %d)", generation, pid)

    def _on_message(self, m: Mold) -> None:
        """Only `ready` comes unasked (and a fork answer the master gave up waiting for:
        dropped); anything else, or EOF, is the end of that mold."""
        try:
            data = m.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data.startswith((b"pid ", b"error ")):
            log.debug("mold gen %d: dropped %r", m.generation, data[:200])
            return
        if not data or m.ready or not data.startswith(b"ready"):
            self._forget(m)  # its exit is reaped: reaped() replaces it
            return
        m.ready = m.was_ready = True
        m.note = data[6:].decode("utf-8", "replace")
        log.info("mold gen %d (pid %d) ready", m.generation, m.pid)
        if m is self.current:
            self.retry.backoff.ready()
            self.on_ready()

    def _lost(self, m: Mold, why: str) -> None:
        log.error(
            "mold gen %d (pid %d) %s: killing it; a new one follows", m.generation, m.pid, why
        )
        self._forget(m)
        _kill(m.pid)

    def _stop(self, m: Mold) -> None:
        self._forget(m)
        self._stopped.add(m.pid)
        _kill(m.pid)  # it holds nothing to save; its exit is reaped as any child's

    def _forget(self, m: Mold) -> None:
        """No more requests to this mold: until it is reaped (and replaced, if current)
        can_start() is false."""
        m.ready = False
        if m.sock.fileno() >= 0:
            self.loop.unregister(m.sock.fileno())
            m.sock.close()


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
