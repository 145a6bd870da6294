"""What run.py observes: the kernel's process events and the apps' datagrams, read by one
thread (``Collector``), and the peers' running instances (``Instance``), all known by pid.

Process events (fork/exec/exit) come from the proc connector (bench/procconn.py, needs root)
with the kernel's CLOCK_MONOTONIC timestamps; "app code is running" is a datagram each worker's
app sends with its own CLOCK_MONOTONIC time (bench/apps/marker.py).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import procconn
from common import clean_env
from peers import Peer
from procs import Inbox, Marker, reap, tail

if TYPE_CHECKING:
    from figures import Bench


@dataclass
class Proc:
    pid: int
    ppid: int
    fork_ns: int
    exec_ns: int | None = None
    exit_ns: int | None = None  # last thread of the process seen exiting
    leader_exited: bool = False
    exit_code: int | None = None


class Collector:
    """Owns the proc connector and every unix datagram socket the apps write to.

    Everything it learns is guarded by ``cond``; waiters use ``wait_for``.
    Only descendants of the bench are recorded.
    """

    def __init__(self) -> None:
        self.pc = procconn.ProcConnector()
        self.cond = threading.Condition()
        self.procs: dict[int, Proc] = {}
        self.tracked: set[int] = {os.getpid()}
        self.started = 0  # drain passes begun
        self.done = 0  # drain passes finished
        self._pending: list[tuple[str, Inbox]] = []
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.pc.fileno(), selectors.EVENT_READ, None)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._inboxes: dict[int, Inbox] = {}
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="collector", daemon=True)
        self._thread.start()

    # -- thread side --
    def _loop(self) -> None:
        while not self._stop:
            self._sel.select()
            # Drain everything, every time: a pass is a full sweep (see sync()).
            with self.cond:
                self.started += 1
                this_pass = self.started
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 4096)
            events = self.pc.read()
            notes = [
                (inbox, got) for inbox in list(self._inboxes.values()) for got in inbox.receive()
            ]
            with self.cond:
                for op, inbox in self._pending:
                    fd = inbox.sock.fileno()
                    if op == "add":
                        self._inboxes[fd] = inbox
                        self._sel.register(fd, selectors.EVENT_READ, None)
                    else:
                        self._inboxes.pop(fd, None)
                        self._sel.unregister(fd)
                        inbox.sock.close()
                self._pending.clear()
                for ev in events:
                    self._on_event(ev)
                for inbox, (data, recv_ns) in notes:
                    inbox.take(data, recv_ns)
                self.done = this_pass
                self.cond.notify_all()

    def _on_event(self, ev: procconn.Event) -> None:
        if ev.what == procconn.PROC_EVENT_FORK:
            if not ev.is_thread and ev.parent_tgid in self.tracked:
                self.tracked.add(ev.tgid)
                self.procs[ev.tgid] = Proc(ev.tgid, ev.parent_tgid, ev.ts_ns)
        elif ev.what == procconn.PROC_EVENT_EXEC:
            p = self.procs.get(ev.tgid)
            if p is not None:
                p.exec_ns = ev.ts_ns
        elif ev.what == procconn.PROC_EVENT_EXIT:
            p = self.procs.get(ev.tgid)
            if p is not None:
                p.exit_ns = max(p.exit_ns or 0, ev.ts_ns)
                if not ev.is_thread:
                    p.leader_exited = True
                    p.exit_code = ev.exit_code

    # -- caller side --
    def _kick(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    def open_inbox(self, path: str) -> Inbox:
        inbox = Inbox(path)
        with self.cond:
            self._pending.append(("add", inbox))
        self.sync()
        return inbox

    def close_inbox(self, inbox: Inbox) -> None:
        with self.cond:
            self._pending.append(("del", inbox))
        self.sync()
        with contextlib.suppress(OSError):
            os.unlink(inbox.path)

    def sync(self, timeout: float = 5.0) -> None:
        """Return once everything already queued for us has been processed."""
        with self.cond:
            want = self.started + 1
        self._kick()
        with self.cond:
            self.cond.wait_for(lambda: self.done >= want, timeout)

    def wait_for(self, pred: Callable[[], object], timeout: float) -> object:
        with self.cond:
            return self.cond.wait_for(pred, timeout)

    def proc(self, pid: int) -> Proc | None:
        with self.cond:
            return self.procs.get(pid)

    def children(self, pid: int) -> list[Proc]:
        with self.cond:
            return [p for p in self.procs.values() if p.ppid == pid]

    def descendants(self, pid: int) -> list[Proc]:
        with self.cond:
            out, todo = [], [pid]
            while todo:
                cur = todo.pop()
                for p in self.procs.values():
                    if p.ppid == cur and p.pid != pid:
                        out.append(p)
                        todo.append(p.pid)
            return out

    def forked(self, pid: int) -> bool:
        """Its fork event has come."""
        with self.cond:
            return pid in self.procs

    def exit_of(self, pid: int) -> tuple[int, int | None]:
        """(time, status) of a process's exit as the kernel reported it; the status is None
        until its leader's exit event has come."""
        with self.cond:
            p = self.procs.get(pid)
            if p is None or p.exit_ns is None:
                raise RuntimeError(f"no exit event from the kernel for pid {pid}")
            return p.exit_ns, p.exit_code

    def all_gone(self, pids: list[int]) -> bool:
        return not any(self.alive(p) for p in pids)

    def alive(self, pid: int) -> bool:
        """Per the kernel's exit events (a zombie counts as gone)."""
        with self.cond:
            p = self.procs.get(pid)
            return p is not None and not p.leader_exited

    def close(self) -> None:
        self._stop = True
        self._kick()
        self._thread.join(5)
        self.pc.close()


class Instance:
    """One started peer: a master and its workers, all known by pid."""

    seq = 0

    def __init__(self, bench: Bench, peer: Peer, nworkers: int, port: int = 0) -> None:
        """``port``: the peer's HTTP app on 127.0.0.1:port; 0: on a unix socket (svcengine: the
        idle app)."""
        Instance.seq += 1
        self.bench, self.peer, self.nworkers = bench, peer, nworkers
        self.dir = bench.outdir / f"{Instance.seq:03d}-{peer.tag}-{nworkers}w"
        self.dir.mkdir(parents=True)
        self.marker_box = bench.col.open_inbox(str(self.dir / "m.sock"))
        self.notify_box = bench.col.open_inbox(str(self.dir / "n.sock"))
        argv, extra = peer.argv_env(self.dir, nworkers, port or self.dir / "http.sock")
        env = clean_env(
            **extra, SVCBENCH_MARKER=self.marker_box.path, NOTIFY_SOCKET=self.notify_box.path
        )
        self.argv = argv
        self.out = open(self.dir / "output.log", "wb")
        self.t_popen_ns = time.monotonic_ns()
        try:
            self.popen = subprocess.Popen(
                argv,
                env=env,
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=self.out,
                stderr=subprocess.STDOUT,
                restore_signals=True,
                start_new_session=True,
                close_fds=True,
            )
        except BaseException:
            bench.col.close_inbox(self.marker_box)
            bench.col.close_inbox(self.notify_box)
            self.out.close()
            raise
        self.pid = self.popen.pid
        bench.instances.append(self)
        self.known_workers: set[int] = set()
        self.finished = False

    # -- observations --
    def ready_markers(self) -> dict[int, Marker]:
        """pid -> first 'ready' marker, for workers the kernel hasn't seen exit."""
        col = self.bench.col
        with col.cond:
            out: dict[int, Marker] = {}
            for m in self.marker_box.markers:
                if m.kind == "ready" and m.pid not in out:
                    p = col.procs.get(m.pid)
                    if p is None or not p.leader_exited:
                        out[m.pid] = m
            return out

    def wait_ready(self, n: int, timeout: float) -> dict[int, Marker]:
        col = self.bench.col

        def enough() -> bool:
            return len(self.ready_markers()) >= n or self.popen.poll() is not None

        col.wait_for(enough, timeout)
        got = self.ready_markers()
        if len(got) < n:
            raise self.not_up(f"{len(got)}/{n} workers ready", timeout)
        for m in got.values():
            if m.ppid != self.pid:
                self.bench.note(
                    f"{self.peer.label}: worker {m.pid}'s parent is {m.ppid}, "
                    f"not the launched pid {self.pid}"
                )
        self.known_workers.update(got)
        return got

    def wait_all_ready(self, n: int, timeout: float) -> int:
        """When all ``n`` workers were up: the last app-ready marker, or when READY=1 came for a
        peer whose app sends no marker (svcengine's examples/http_worker.py as it is: its master
        sends READY=1 once every worker has imported its module and is about to call run())."""
        if self.peer.http_markers:
            return max(m.t_ns for m in self.wait_ready(n, timeout).values())
        popen = self.popen
        self.bench.col.wait_for(
            lambda: self.notify_box.has_note("READY=1") or popen.poll() is not None, timeout
        )
        t = self.wait_note("READY=1", 0)
        if t is None:
            raise self.not_up("no READY=1", timeout)
        return t

    def not_up(self, what: str, timeout: float) -> RuntimeError:
        rc = self.popen.poll()
        why = f"master exited with {rc}" if rc is not None else f"timeout {timeout:.0f}s"
        return RuntimeError(f"{self.peer.label}: {what} ({why}); {self.tail()}")

    def exec_ns(self) -> int:
        col = self.bench.col
        col.wait_for(lambda: (p := col.procs.get(self.pid)) and p.exec_ns, 2.0)
        p = col.proc(self.pid)
        if p is None or p.exec_ns is None:
            self.bench.note("no exec event for a master: start time counted from Popen")
            return self.t_popen_ns
        return p.exec_ns

    def wait_note(self, line: str, timeout: float) -> int | None:
        """Receive time of the first sd_notify datagram holding ``line``."""

        def first() -> int | None:
            for t, txt in self.notify_box.notes:
                if line in txt.split("\n"):
                    return t
            return None

        self.bench.col.wait_for(lambda: first() is not None, timeout)
        with self.bench.col.cond:
            return first()

    def check_alive(self, when: str) -> None:
        self.bench.col.sync()
        if not self.bench.col.alive(self.pid):
            rc = self.popen.wait()
            raise RuntimeError(f"{self.peer.label}: master exited ({rc}) {when}; {self.tail()}")

    def tail(self, n: int = 6) -> str:
        lines = tail(self.dir, n)
        return "log tail: " + (" | ".join(lines) if lines else "(empty)") + f" [{self.dir}]"

    def worker_pids(self) -> list[int]:
        return [p.pid for p in self.bench.col.descendants(self.pid)]

    # -- endings --
    def graceful_stop(self, timeout: float = 60.0) -> tuple[int, int, int]:
        """Send the peer's graceful stop signal to the master; return (signal time, master exit
        time, exit status)."""
        sig = self.peer.stop_signal
        self.check_alive(f"before {sig.name}")
        t0 = time.monotonic_ns()
        os.kill(self.pid, sig)
        try:
            rc = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_all()
            raise RuntimeError(
                f"{self.peer.label}: no exit {timeout:.0f}s after {sig.name}"
            ) from None
        t_wait = time.monotonic_ns()
        self.bench.col.sync()
        p = self.bench.col.proc(self.pid)
        t_end = p.exit_ns if p and p.exit_ns else t_wait
        return t0, t_end, rc

    def kill_all(self) -> None:
        """SIGKILL the master and every descendant still alive, by pid; reap."""
        col = self.bench.col
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.popen.wait()
        col.sync()
        for _ in range(3):
            left = [p.pid for p in col.descendants(self.pid) if not p.leader_exited]
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            col.wait_for(partial(col.all_gone, left), 5.0)
            if not left:
                break
        self.reap_orphans()

    def reap_orphans(self) -> None:
        """Orphaned workers are reparented to the bench (a subreaper): reap them by pid."""
        reap([p.pid for p in self.bench.col.descendants(self.pid) if p.leader_exited])

    def finish(self) -> None:
        self.kill_all()
        if not self.finished:
            self.finished = True
            self.bench.col.close_inbox(self.marker_box)
            self.bench.col.close_inbox(self.notify_box)
            self.out.close()
