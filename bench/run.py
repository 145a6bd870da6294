#!/usr/bin/env python3
"""svcengine vs Gunicorn (and Ruby's ServerEngine and Unicorn), side by side, in one run.

    python bench/run.py [--quick] [--peers svcengine,gunicorn,serverengine,unicorn] ...

Process events (fork/exec/exit) are timed by the kernel through the proc
connector (bench/procconn.py, needs root); "app code is running" is a datagram
each worker's app sends with its CLOCK_MONOTONIC time (bench/apps/marker.py).
Prints a table and writes docs/benchmarks.md. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as dt
import json
import os
import platform
import selectors
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import procconn
from common import (
    RUBY_HINT,
    byte_compile,
    machine,
    ruby_missing,
    ruby_versions,
    serverengine_argv,
    unicorn_argv,
)

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
APPS = BENCH / "apps"
VENV = REPO / ".venv"
VPY = VENV / "bin" / "python"
MS = 1e6  # ns per ms
PR_SET_CHILD_SUBREAPER = 36
BUSY_REDO = 25.0  # % CPU busy with others' work during a figure: --wait-quiet redoes it
GUNICORN_ARGS = ""  # --gunicorn-args
SVC_SRC: Path | None = None  # a byte-compiled snapshot of svcengine/, first on PYTHONPATH


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Event collection: one thread reads the proc connector and the apps' datagrams


@dataclass
class Proc:
    pid: int
    ppid: int
    fork_ns: int
    exec_ns: int | None = None
    exit_ns: int | None = None  # last thread of the process seen exiting
    leader_exited: bool = False
    exit_code: int | None = None


@dataclass(frozen=True)
class Marker:
    kind: str
    pid: int
    ppid: int
    t_ns: int
    worker_id: int


@dataclass
class Inbox:
    path: str
    sock: socket.socket
    markers: list[Marker] = field(default_factory=list)
    notes: list[tuple[int, str]] = field(default_factory=list)  # (recv ns, sd_notify text)


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
            notes: list[tuple[Inbox, bytes, int]] = []
            for inbox in list(self._inboxes.values()):
                while True:
                    try:
                        data = inbox.sock.recv(4096)
                    except (BlockingIOError, OSError):
                        break
                    notes.append((inbox, data, time.monotonic_ns()))
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
                for inbox, data, recv_ns in notes:
                    self._on_datagram(inbox, data, recv_ns)
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

    @staticmethod
    def _on_datagram(inbox: Inbox, data: bytes, recv_ns: int) -> None:
        text = data.decode("utf-8", "replace")
        parts = text.split()
        if (
            len(parts) == 5
            and parts[0].isalpha()
            and all(p.lstrip("-").isdigit() for p in parts[1:])
        ):
            kind, pid, ppid, t_ns, wid = parts
            inbox.markers.append(Marker(kind, int(pid), int(ppid), int(t_ns), int(wid)))
        else:
            inbox.notes.append((recv_ns, text))

    # -- caller side --
    def _kick(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    def open_inbox(self, path: str) -> Inbox:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.bind(path)
        s.setblocking(False)
        inbox = Inbox(path, s)
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


# ---------------------------------------------------------------------------
# Peers and their running instances


class Peer:
    name = "?"  # the table column
    label = "?"  # logs and errors
    tag = "?"  # directory names
    stop_signal = signal.SIGTERM  # the peer's graceful stop
    # Orphan trials all at once: the peer's workers notice a dead master only on a timer
    # (or never), so serial trials would each wait out the cap.
    orphans_concurrent = False
    notifies = True  # sends READY=1 to NOTIFY_SOCKET

    def argv_env(self, inst: Instance) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError


class Svcengine(Peer):
    def __init__(self, pdeathsig: bool = True) -> None:
        self.pdeathsig = pdeathsig
        self.name = "svcengine"
        self.label = "svcengine" if pdeathsig else "svcengine (worker_pdeathsig = false)"
        self.tag = "svc" if pdeathsig else "svc-nopds"

    def argv_env(self, inst: Instance) -> tuple[list[str], dict[str, str]]:
        cfg = inst.dir / "svcengine.toml"
        cfg.write_text(
            'worker = "idle:IdleWorker"\n'
            f"workers = {inst.nworkers}\n"
            f"python_path = [{json.dumps(str(APPS))}]\n"
            f"worker_pdeathsig = {'true' if self.pdeathsig else 'false'}\n"
        )
        argv = [
            str(VENV / "bin" / "svcengine"),
            "--foreground",
            "--config",
            str(cfg),
            "--name",
            "bench",
            "--log",
            str(inst.dir / "svcengine.log"),
        ]
        return argv, ({"PYTHONPATH": str(SVC_SRC)} if SVC_SRC else {})


class Gunicorn(Peer):
    name = label = "gunicorn"
    tag = "gun"
    orphans_concurrent = True  # sync workers check their parent every timeout / 2 = 15 s

    def argv_env(self, inst: Instance) -> tuple[list[str], dict[str, str]]:
        argv = [
            str(VENV / "bin" / "gunicorn"),
            *shlex.split(GUNICORN_ARGS),
            "--config",
            str(APPS / "gunicorn_conf.py"),
            "--workers",
            str(inst.nworkers),
            "--worker-class",
            "sync",
            "--bind",
            f"unix:{inst.dir / 'http.sock'}",
            # default on, default path shared by all instances: give each its own
            "--control-socket",
            str(inst.dir / "ctl.sock"),
            "--pythonpath",
            str(APPS),
            "--error-logfile",
            str(inst.dir / "gunicorn.log"),
            "hello:app",
        ]
        return argv, {}


class ServerEngine(Peer):
    """bench/apps/serverengine_hello.rb: process workers, no supervisor process, so the
    launched ruby is the server that forks the workers."""

    name = label = "serverengine"
    tag = "se"
    notifies = False
    # A worker keeps the read end of its own heartbeat pipe: its writes never fail once the
    # server is gone, so orphans live on (docs/architecture.md, "ServerEngine's orphan bug").
    orphans_concurrent = True

    def argv_env(self, inst: Instance) -> tuple[list[str], dict[str, str]]:
        return serverengine_argv(), {
            "SVCBENCH_WORKERS": str(inst.nworkers),
            "SVCBENCH_UNIX": str(inst.dir / "http.sock"),
            "SVCBENCH_LOG": str(inst.dir / "serverengine.log"),
        }


class Unicorn(Peer):
    """bench/apps/hello.ru under bench/apps/unicorn_conf.rb; logs to stderr (output.log)."""

    name = label = "unicorn"
    tag = "uni"
    notifies = False
    stop_signal = signal.SIGQUIT  # TERM is Unicorn's quick shutdown

    def argv_env(self, inst: Instance) -> tuple[list[str], dict[str, str]]:
        return unicorn_argv(str(inst.dir / "http.sock")), {"SVCBENCH_WORKERS": str(inst.nworkers)}


PEERS: dict[str, Callable[[], Peer]] = {
    "svcengine": Svcengine,
    "gunicorn": Gunicorn,
    "serverengine": ServerEngine,
    "unicorn": Unicorn,
}
RUBY_PEERS = ("serverengine", "unicorn")


class Instance:
    """One started peer: a master and its workers, all known by pid."""

    seq = 0

    def __init__(self, bench: Bench, peer: Peer, nworkers: int) -> None:
        Instance.seq += 1
        self.bench, self.peer, self.nworkers = bench, peer, nworkers
        self.dir = bench.outdir / f"{Instance.seq:03d}-{peer.tag}-{nworkers}w"
        self.dir.mkdir(parents=True)
        self.marker_box = bench.col.open_inbox(str(self.dir / "m.sock"))
        self.notify_box = bench.col.open_inbox(str(self.dir / "n.sock"))
        argv, extra = peer.argv_env(self)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "NOTIFY_"))}
        env.update(extra)
        env["SVCBENCH_MARKER"] = self.marker_box.path
        env["NOTIFY_SOCKET"] = self.notify_box.path
        env.pop("WATCHDOG_USEC", None)
        env.pop("WATCHDOG_PID", None)
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
            rc = self.popen.poll()
            why = f"master exited with {rc}" if rc is not None else f"timeout {timeout:.0f}s"
            raise RuntimeError(
                f"{self.peer.label}: {len(got)}/{n} workers ready ({why}); {self.tail()}"
            )
        for m in got.values():
            if m.ppid != self.pid:
                self.bench.note(
                    f"{self.peer.label}: worker {m.pid}'s parent is {m.ppid}, "
                    f"not the launched pid {self.pid}"
                )
        self.known_workers.update(got)
        return got

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
        lines: list[str] = []
        for f in sorted(self.dir.glob("*.log")):
            with contextlib.suppress(OSError):
                lines += [
                    f"{f.name}: {ln}" for ln in f.read_text(errors="replace").splitlines()[-n:]
                ]
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
            col.wait_for(lambda left=left: not any(col.alive(x) for x in left), 5.0)
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


# ---------------------------------------------------------------------------
# Small helpers


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    if len(s) == 1:
        return s[0]
    k = (len(s) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    if k == lo or s[hi] == float("inf"):  # inf - inf is nan; past the cap is past the cap
        return s[hi] if k > lo else s[lo]
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def reap(pids: list[int], timeout: float = 2.0) -> set[int]:
    """waitpid() each pid that is our child; a multi-threaded process becomes
    reapable only when its last thread is gone, so retry briefly."""
    pending = set(pids)
    deadline = time.monotonic() + timeout
    while pending:
        for pid in list(pending):
            try:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    pending.discard(pid)
            except ChildProcessError:
                pending.discard(pid)  # not our child, or already reaped
        if pending and time.monotonic() < deadline:
            time.sleep(0.005)
        else:
            break
    return pending


def proc_counters(pid: int) -> dict[str, float]:
    """Context switches over every thread, CPU from /proc/PID/stat and schedstat."""
    csw = 0
    run_ns = 0
    threads = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            for line in open(f"/proc/{pid}/task/{task}/status"):
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    csw += int(line.split()[1])
            run_ns += int(open(f"/proc/{pid}/task/{task}/schedstat").read().split()[0])
            threads += 1
    stat = open(f"/proc/{pid}/stat").read()
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15)
    return {
        "csw": csw,
        "cpu_ms": ticks * 1000 / os.sysconf("SC_CLK_TCK"),
        "run_ns": run_ns,
        "threads": threads,
    }


def sig_masks(pid: int) -> dict[str, int]:
    out = {}
    with contextlib.suppress(OSError):
        for line in open(f"/proc/{pid}/status"):
            k, _, v = line.partition(":")
            if k in ("SigIgn", "SigBlk"):
                out[k] = int(v.strip(), 16)
    return out


# ---------------------------------------------------------------------------
# The bench


@dataclass
class Figure:
    key: str
    title: str
    unit: str
    values: dict[str, str] = field(default_factory=dict)  # peer label -> formatted
    raw: dict[str, float | None] = field(default_factory=dict)  # for the ratio
    capped: dict[str, bool] = field(default_factory=dict)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.outdir = BENCH / "out" / stamp
        self.outdir.mkdir(parents=True, exist_ok=True)
        self.col = Collector()
        self.instances: list[Instance] = []
        self.notes: list[str] = []
        self.errors: list[str] = []
        self.figures: dict[str, Figure] = {}
        self.samples: dict[str, dict[str, list]] = {}
        self.phase_load: dict[str, tuple[float, float]] = {}  # CPU busy %: all, ours

    def note(self, msg: str) -> None:
        if msg not in self.notes:
            self.notes.append(msg)
            log("note: " + msg)

    def fig(self, key: str, title: str, unit: str) -> Figure:
        if key not in self.figures:
            self.figures[key] = Figure(key, title, unit)
        return self.figures[key]

    def put(
        self,
        key: str,
        title: str,
        unit: str,
        peer: str,
        value: float | None,
        *,
        capped=False,
        fmt=None,
    ) -> None:
        f = self.fig(key, title, unit)
        f.raw[peer] = value
        f.capped[peer] = capped
        if value is None:
            f.values[peer] = "n/a"
        elif capped:
            f.values[peer] = f">{value:g}"
        else:
            f.values[peer] = (fmt or fmt_num)(value)

    def keep(self, figure: str, peer: str, samples: list) -> None:
        self.samples.setdefault(figure, {})[peer] = samples

    def start(
        self, peer: Peer, n: int, timeout: float = 60.0
    ) -> tuple[Instance, dict[int, Marker]]:
        inst = Instance(self, peer, n)
        try:
            ready = inst.wait_ready(n, timeout)
        except BaseException:
            inst.finish()
            raise
        return inst, ready

    # -- figure 1: respawn latency --
    def respawn(self, peer: Peer) -> None:
        a = self.args
        inst, ready = self.start(peer, a.workers)
        try:
            alive = {pid: m.t_ns for pid, m in ready.items()}
            samples = []
            for _ in range(a.kills):
                victim = min(alive, key=alive.__getitem__)  # round robin: oldest first
                wait = alive[victim] + a.min_life * 1e9 - time.monotonic_ns()
                if wait > 0:
                    time.sleep(wait / 1e9)
                known = set(inst.known_workers)
                t_kill = time.monotonic_ns()
                os.kill(victim, signal.SIGKILL)

                def new_marker(known=known) -> Marker | None:
                    for m in inst.marker_box.markers:
                        if m.kind == "ready" and m.pid not in known:
                            return m
                    return None

                self.col.wait_for(lambda: new_marker() or inst.popen.poll() is not None, 30.0)
                m = new_marker()
                if m is None:
                    raise RuntimeError(f"{peer.label}: no replacement within 30 s; {inst.tail()}")
                self.col.wait_for(lambda m=m: m.pid in self.col.procs, 2.0)
                self.col.wait_for(lambda v=victim: not self.col.alive(v), 2.0)
                p, dead = self.col.proc(m.pid), self.col.proc(victim)
                samples.append(
                    {
                        "victim": victim,
                        "new": m.pid,
                        "exit_ms": (dead.exit_ns - t_kill) / MS if dead and dead.exit_ns else None,
                        "fork_ms": (p.fork_ns - t_kill) / MS if p else None,
                        "ready_ms": (m.t_ns - t_kill) / MS,
                    }
                )
                inst.known_workers.add(m.pid)
                del alive[victim]
                alive[m.pid] = m.t_ns
                inst.reap_orphans()
            self.keep("respawn", peer.label, samples)
            xs = [s["exit_ms"] for s in samples if s["exit_ms"] is not None]
            self.put(
                "respawn_exit",
                f"respawn: SIGKILL worker → killed worker gone, median of {len(xs)} (context)",
                "ms",
                peer.name,
                statistics.median(xs) if xs else None,
            )
            for what, title in (("fork_ms", "forked"), ("ready_ms", "running app code")):
                xs = [s[what] for s in samples if s[what] is not None]
                for q, qn in ((0.5, "median"), (0.95, "p95")):
                    self.put(
                        f"respawn_{what}_{qn}",
                        f"respawn: SIGKILL worker → replacement {title}, {qn} of {len(xs)}",
                        "ms",
                        peer.name,
                        pct(xs, q) if xs else None,
                    )
            log(
                f"respawn {peer.label}: median fork "
                f"{pct([s['fork_ms'] for s in samples], 0.5):.2f} ms, "
                f"ready {pct([s['ready_ms'] for s in samples], 0.5):.2f} ms"
            )
        finally:
            inst.finish()

    # -- figure 2: orphan lifetime --
    def orphans(self, peer: Peer) -> list[float]:
        a = self.args
        n = a.orphans
        groups = [list(range(n))] if peer.orphans_concurrent else [[i] for i in range(n)]
        results = []
        for group in groups:
            insts: list[tuple[Instance, list[int]]] = []
            try:
                for _ in group:
                    inst, ready = self.start(peer, a.workers)
                    insts.append((inst, list(ready)))
                time.sleep(0.3)  # let workers settle into their idle wait
                kills = []
                for inst, _workers in insts:
                    inst.check_alive("before SIGKILL")
                for inst, _workers in insts:
                    t = time.monotonic_ns()
                    os.kill(inst.pid, signal.SIGKILL)
                    kills.append(t)
                for inst, _ in insts:
                    inst.popen.wait()
                deadline = max(kills) + a.orphan_cap * 1e9
                all_workers = [w for _, ws in insts for w in ws]
                self.col.wait_for(
                    lambda ws=all_workers: not any(self.col.alive(w) for w in ws),
                    max(0.0, (deadline - time.monotonic_ns()) / 1e9),
                )
                self.col.sync()
                for (inst, workers), t_kill in zip(insts, kills, strict=True):
                    left = [w for w in workers if self.col.alive(w)]
                    master = self.col.proc(inst.pid)
                    r = {
                        "ms": None,
                        "left": len(left),
                        "master_exit_ms": (master.exit_ns - t_kill) / MS,
                        "workers": [],
                    }
                    for w in workers:
                        p = self.col.proc(w)
                        if p.leader_exited:
                            r["workers"].append(
                                ((p.exit_ns - t_kill) / MS, procconn.describe_status(p.exit_code))
                            )
                    if not left:
                        r["ms"] = max(ms for ms, _ in r["workers"])
                    results.append(r)
            finally:
                for inst, _ in insts:
                    inst.finish()  # kills leftovers by pid, reaps them
        self.keep("orphan", peer.label, results)
        vals = [r["ms"] if r["ms"] is not None else float("inf") for r in results]
        log(
            f"orphans {peer.label}: "
            + ", ".join(f"{v:.1f}" if v != float("inf") else ">cap" for v in vals)
            + " ms"
        )
        return vals

    def orphan_figures(self, res: dict[str, list[float]], others: list[str]) -> None:
        """Rows: svcengine (both PDEATHSIG settings) each against the other peers."""
        cap = self.args.orphan_cap
        for suffix, svc_label in (
            ("", "svcengine"),
            ("_nopds", "svcengine (worker_pdeathsig = false)"),
        ):
            if suffix and svc_label not in res:
                continue
            extra = ", svcengine with worker_pdeathsig = false" if suffix else ""
            for q, qn in ((1.0, "max"), (0.5, "median")):
                for label, col in ((svc_label, "svcengine"), *((o, o) for o in others)):
                    vals = res.get(label)
                    v = pct(vals, q) if vals else None
                    capped = v == float("inf")
                    self.put(
                        f"orphan{suffix}_{qn}",
                        f"orphans: SIGKILL master → last worker gone, {qn} of "
                        f"{len(vals) if vals else self.args.orphans}{extra}",
                        "ms",
                        col,
                        cap * 1000 if capped else v,
                        capped=capped,
                    )
        for label in ("svcengine", *others):
            xs = [r["master_exit_ms"] for r in self.samples.get("orphan", {}).get(label, [])]
            if not xs:
                continue
            self.put(
                "orphan_master_median",
                f"orphans: SIGKILL master → master itself gone, median of {len(xs)} (context)",
                "ms",
                label,
                statistics.median(xs) if xs else None,
            )

    # -- figures 3 and 5: start → ready, and graceful stop --
    def start_stop(self, peer: Peer, n: int, trials: int) -> None:
        a = self.args
        starts, stops, rdy, wstops, firsts = [], [], [], [], []
        for _ in range(trials):
            inst = Instance(self, peer, n)
            try:
                ready = inst.wait_ready(n, 120.0)
                t_exec = inst.exec_ns()
                t_last = max(m.t_ns for m in ready.values())
                starts.append((t_last - t_exec) / MS)
                forks = [p.fork_ns for p in self.col.children(inst.pid)]
                firsts.append((min(forks) - t_exec) / MS if forks else None)
                rn = inst.wait_note("READY=1", 5.0) if peer.notifies else None
                rdy.append((rn - t_exec) / MS if rn else None)
                if len(starts) == 1 and (blk := sig_masks(inst.pid).get("SigBlk")):
                    self.note(
                        f"{peer.label}: the master runs with signals blocked: SigBlk={blk:#x}"
                    )
                time.sleep(a.settle)
                workers = inst.worker_pids()
                t_term, t_end, rc = inst.graceful_stop()
                stops.append((t_end - t_term) / MS)
                self.col.sync()
                outlived = [w for w in workers if self.col.alive(w)]
                gone = [self.col.proc(w).exit_ns for w in workers if not self.col.alive(w)]
                wstops.append((max(gone) - t_term) / MS if gone and not outlived else None)
                if outlived:
                    self.note(
                        f"{peer.label}: {len(outlived)} workers outlived the master after "
                        f"{peer.stop_signal.name}"
                    )
                if rc != 0:
                    self.note(
                        f"{peer.label}: exit status {rc} after {peer.stop_signal.name} (expected 0)"
                    )
            finally:
                inst.finish()
        self.keep(f"start_{n}", peer.label, starts)
        self.keep(f"stop_{n}", peer.label, stops)
        self.keep(f"wstop_{n}", peer.label, wstops)
        ws = [x for x in wstops if x is not None]
        self.put(
            f"wstop_{n}",
            f"graceful stop: stop signal to master → last worker gone ({n} idle workers), "
            f"median of {len(ws)}",
            "ms",
            peer.name,
            statistics.median(ws) if ws else None,
        )
        self.keep(f"ready1_{n}", peer.label, rdy)
        self.keep(f"fork1_{n}", peer.label, firsts)
        fs = [x for x in firsts if x is not None]
        self.put(
            f"fork1_{n}",
            f"start: exec → first worker forked ({n} workers), median of {len(fs)} (context)",
            "ms",
            peer.name,
            statistics.median(fs) if fs else None,
        )
        self.put(
            f"start_{n}",
            f"start: exec → all {n} workers running app code, median of {len(starts)}",
            "ms",
            peer.name,
            statistics.median(starts),
        )
        r = [x for x in rdy if x is not None]
        if peer.notifies and len(r) < len(rdy):
            self.note(
                f"{peer.label}: READY=1 never reached the bench's NOTIFY_SOCKET (waited 5 s after "
                f"all {n} workers ran) in {len(rdy) - len(r)} of {len(rdy)} starts"
            )
        self.put(
            f"ready1_{n}",
            f"start: exec → READY=1 on NOTIFY_SOCKET ({n} workers; gunicorn sends it before "
            f"forking), median of {len(r)}",
            "ms",
            peer.name,
            statistics.median(r) if r else None,
        )
        self.put(
            f"stop_{n}",
            f"graceful stop: stop signal to master → master exit ({n} idle workers), "
            f"median of {len(stops)}",
            "ms",
            peer.name,
            statistics.median(stops),
        )
        log(
            f"start/stop {peer.label} x{n}: start median {statistics.median(starts):.1f} ms, "
            f"stop median {statistics.median(stops):.1f} ms"
        )

    # -- figure 4: idle master --
    def idle(self, peer: Peer, n: int) -> None:
        a = self.args
        inst, ready = self.start(peer, n, 120.0)
        try:
            time.sleep(a.settle)
            workers = list(ready)
            m0 = proc_counters(inst.pid)
            w0 = {w: proc_counters(w) for w in workers}
            t0 = time.monotonic()
            time.sleep(a.idle_seconds)
            m1 = proc_counters(inst.pid)
            w1 = {w: proc_counters(w) for w in workers}
            secs = time.monotonic() - t0
        finally:
            inst.finish()
        wake = (m1["csw"] - m0["csw"]) / secs
        cpu = (m1["cpu_ms"] - m0["cpu_ms"]) * 10 / secs
        run_us = (m1["run_ns"] - m0["run_ns"]) / 1000 * 10 / secs
        wwake = sum(w1[w]["csw"] - w0[w]["csw"] for w in workers) / secs
        self.keep(
            f"idle_{n}",
            peer.name,
            [{"master": [m0, m1], "seconds": secs, "workers_csw_per_s": wwake}],
        )
        s = f"over {a.idle_seconds:g} s, {n} workers"
        self.put(f"idle_wake_{n}", f"idle master: wakeups/s {s}", "1/s", peer.name, wake)
        self.put(
            f"idle_cpu_{n}",
            f"idle master: CPU ms per 10 s (utime+stime) {s}",
            "ms",
            peer.name,
            cpu,
        )
        self.put(
            f"idle_run_{n}",
            f"idle master: CPU µs per 10 s (schedstat) {s}",
            "µs",
            peer.name,
            run_us,
        )
        self.put(
            f"idle_wwake_{n}", f"idle workers: wakeups/s, all {n} together", "1/s", peer.name, wwake
        )
        self.put(
            f"threads_{n}",
            f"master threads while idle ({n} workers)",
            "",
            peer.name,
            float(m1["threads"]),
            fmt=lambda v: f"{v:.0f}",
        )
        log(
            f"idle {peer.label} x{n}: {wake:.2f} wakeups/s, {cpu:.1f} ms CPU/10 s, "
            f"workers {wwake:.2f}/s"
        )


def fmt_num(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def ratio(f: Figure, a: str, b: str) -> str:
    x, y = f.raw.get(a), f.raw.get(b)
    if x is None or y is None:
        return "n/a"
    cx, cy = f.capped.get(a), f.capped.get(b)
    if cx and cy:
        return "n/a"
    if y == 0:
        return "= (both 0)" if x == 0 else "∞"
    r = x / y
    s = f"{r:.3g}" if r < 1000 else f"{r:.0f}"
    if cy and not cx:
        return f"<{s}"
    if cx and not cy:
        return f">{s}"
    return s


# ---------------------------------------------------------------------------
# Setup, report, main


def ensure_env(peers: list[str], install: bool, rev: str, outdir: Path) -> dict[str, str]:
    """The project venv with gunicorn (and svcengine, editable) in it; the peers' versions."""
    global SVC_SRC
    info: dict[str, str] = {}
    if not VPY.exists():
        if not install:
            raise SystemExit(f"{VENV} missing: run ./dev test (or drop --no-install)")
        log(f"creating {VENV}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    if "gunicorn" in peers and not (VENV / "bin" / "gunicorn").exists():
        if not install:
            raise SystemExit("gunicorn missing from .venv (drop --no-install)")
        log("installing gunicorn from PyPI into .venv")
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "gunicorn"], check=True)
    if "svcengine" in peers and not (VENV / "bin" / "svcengine").exists():
        if not (REPO / "svcengine" / "cli.py").exists():
            raise SystemExit("svcengine/cli.py does not exist yet: use --peers gunicorn")
        if not install:
            raise SystemExit("svcengine not installed in .venv (drop --no-install)")
        log("installing svcengine (editable) into .venv")
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "-e", str(REPO)], check=True)
    ver = subprocess.run(
        [str(VPY), "-c", "import sys; print(sys.version.split()[0])"],
        capture_output=True,
        text=True,
    )
    info["python"] = ver.stdout.strip()
    if any(p in RUBY_PEERS for p in peers):
        info.update(ruby_versions())
    for pkg in (p for p in peers if p not in RUBY_PEERS):
        r = subprocess.run(
            [str(VPY), "-c", f"import importlib.metadata as m; print(m.version({pkg!r}))"],
            capture_output=True,
            text=True,
        )
        info[pkg] = r.stdout.strip() or "?"
    git = ["git", "-C", str(REPO)]
    r = subprocess.run(
        [*git, "log", "-1", "--format=%h %cd", "--date=short", rev or "HEAD", "--", "svcengine"],
        capture_output=True,
        text=True,
    )
    # svcengine runs from a byte-compiled snapshot, as an installed package (pip, the .deb)
    # does: an editable tree under PYTHONDONTWRITEBYTECODE recompiles itself at every start.
    SVC_SRC = outdir / "svcengine-src"
    SVC_SRC.mkdir(parents=True)
    if rev:
        if r.returncode:
            raise SystemExit(f"--svcengine-rev {rev}: {r.stderr.strip()}")
        archive = subprocess.run(
            [*git, "archive", rev, "svcengine"], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(SVC_SRC)], input=archive.stdout, check=True)
    else:
        shutil.copytree(
            REPO / "svcengine", SVC_SRC / "svcengine", ignore=shutil.ignore_patterns("__pycache__")
        )
    byte_compile(VPY, SVC_SRC, APPS)
    if "svcengine" in peers:
        where = subprocess.run(
            [str(VPY), "-c", "import svcengine; print(svcengine.__file__)"],
            env={**os.environ, "PYTHONPATH": str(SVC_SRC)},
            cwd=outdir,  # as for the peers: not the repo, whose svcengine/ would win
            capture_output=True,
            text=True,
        ).stdout.strip()
        if not where.startswith(str(SVC_SRC)):
            raise SystemExit(f"the snapshot in {SVC_SRC} does not win over {where}")
    if rev:
        info["commit"] = f"{r.stdout.strip()} (svcengine/ from `git archive {rev}`)"
    else:
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "svcengine"], capture_output=True, text=True
        )
        info["commit"] = (r.stdout.strip() or "no commits yet") + (
            " + uncommitted changes in svcengine/ (working tree)" if dirty.stdout.strip() else ""
        )
    return info


def cpu_times() -> list[int]:
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:]]


def busy(a: list[int], b: list[int]) -> float:
    d = [y - x for x, y in zip(a, b, strict=False)]
    total = sum(d[:8]) or 1
    return 100.0 * (1 - (d[3] + d[4]) / total)  # idle + iowait


NCPU = os.cpu_count() or 1


def own_cpu() -> float:
    """CPU seconds of the bench and of every process it started and reaped (the peers' masters
    reap their workers; orphans are reaped here)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def background_load(seconds: float = 2.0) -> str:
    """How busy the machine is before we start anything: others' load skews latencies."""
    a = cpu_times()
    time.sleep(seconds)
    b = cpu_times()
    la = open("/proc/loadavg").read().split()[0]
    return f"{busy(a, b):.0f}% CPU busy over {seconds:g} s, loadavg {la}"


def wait_quiet(limit: float) -> None:
    """Wait up to ``limit`` s for the machine to be < 15 % busy over 2 s."""
    if limit <= 0:
        return
    deadline = time.monotonic() + limit
    while (load := background_load()) and float(load.split("%")[0]) > 15:
        if time.monotonic() > deadline:
            log(f"still busy after {limit:g} s: {load}; going on")
            return
        log(f"waiting for a quiet machine: {load}")
        time.sleep(3)


KEEP = "<!-- bench/run.py keeps what follows this line when it rewrites the file -->"
ORDER = (
    "respawn_exit",
    "respawn_fork",
    "respawn_ready",
    "orphan_",
    "orphan_nopds",
    "orphan_master",
    "start_",
    "fork1_",
    "ready1_",
    "idle_",
    "threads_",
    "wstop_",
    "stop_",
)


def table(b: Bench, labels: list[str]) -> list[str]:
    others = [lb for lb in labels if lb != "svcengine"] if "svcengine" in labels else []
    head = ["figure", "unit", *labels, *(f"svcengine/{o}" for o in others)]
    rows = [head, ["---"] * len(head)]

    def rank(f: Figure) -> int:
        hits = [(len(p), i) for i, p in enumerate(ORDER) if f.key.startswith(p)]
        return max(hits)[1] if hits else len(ORDER)  # the longest matching prefix

    for f in sorted(b.figures.values(), key=rank):
        row = [f.title, f.unit, *[f.values.get(lb, "—") for lb in labels]]
        row += [ratio(f, "svcengine", o) for o in others]
        rows.append(row)
    return ["| " + " | ".join(r) + " |" for r in rows]


def write_doc(b: Bench, path: Path, labels: list[str], env: dict[str, str], t_total: float) -> None:
    m = machine()
    cmd = "python bench/run.py" + ("" if len(sys.argv) == 1 else " " + shlex.join(sys.argv[1:]))
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmarks: svcengine vs Gunicorn, ServerEngine and Unicorn",
        "",
        "Written by `bench/run.py` (method and options: [bench/README.md](../bench/README.md)).",
        "Every number below comes from one run of the command shown, on the machine shown.",
        "",
        f"- date: {now}",
        f"- command: `{cmd}` (took {t_total:.0f} s)",
        f"- machine: nproc {m['nproc']} ({m['cpu']}), {m['memory']}, "
        f"kernel {m['kernel']}, {m['os']}",
        f"- python (peers, .venv): {env.get('python', '?')}; bench: {platform.python_version()}",
        f"- background load: before the run {env.get('load_before', '?')}; "
        f"{env.get('load_during', '?')}",
        f"- svcengine {env.get('svcengine', 'n/a')}, "
        f"last commit to svcengine/: {env.get('commit', '?')}; "
        f"gunicorn {env.get('gunicorn', 'n/a')} (sync workers, defaults)"
        + (
            f"; ServerEngine {env['serverengine']} and Unicorn {env['unicorn']} on ruby "
            f"{env['ruby']} (Debian's packages)"
            if "ruby" in env
            else ""
        ),
        "",
        "Ratio = svcengine / peer (below 1: svcengine smaller/faster; "
        "`<` or `>` where one side hit the cap). — : not measured; n/a: no value "
        "(the Ruby peers don't send sd_notify READY=1).",
        "",
        *table(b, labels),
        "",
        "## How each figure is taken",
        "",
        "- Process fork/exec/exit times are the kernel's own (Linux proc connector, "
        "CLOCK_MONOTONIC); the bench sends signals and notes CLOCK_MONOTONIC right before.",
        '- "Running app code" is a datagram each worker sends with its CLOCK_MONOTONIC time: '
        "svcengine from the first line of `Worker.run()` (an idle worker), gunicorn from its "
        "`post_worker_init` hook (after the WSGI app is loaded, before the request loop), "
        "ServerEngine from the first line of its worker's `run` (`bench/apps/serverengine_hello.rb`"
        ": `process` workers, no supervisor process, a unix socket bound by the server before it "
        "forks), Unicorn from its `after_worker_ready` hook (`bench/apps/unicorn_conf.rb`, "
        "`hello.ru`, `-E none`, a unix socket).",
        f"- respawn: {b.args.workers} workers, killed round-robin (oldest first), each having "
        f"lived ≥ {b.args.min_life:g} s since it was ready (svcengine backs off workers that "
        "crash within ~1 s of their start; the same pacing is used for gunicorn).",
        "- orphans: SIGKILL to the master, then the kernel's exit events of its workers; a trial "
        f"whose workers outlive {b.args.orphan_cap:g} s is reported as over the cap and its "
        "workers are killed by pid. Gunicorn and ServerEngine trials run concurrently (their time "
        "is set by a timer — gunicorn's sync worker checks its parent every `timeout`/2 = 15 s — "
        "or never comes, not by CPU); svcengine and Unicorn trials run one at a time.",
        "- start: from the master's exec (kernel event) to the last worker's app-ready marker. "
        "READY=1 is when the bench's NOTIFY_SOCKET received it (gunicorn sends it before it forks "
        "any worker; svcengine once every worker is ready).",
        f"- graceful stop: same instances as start, after {b.args.settle:g} s idle: the peer's "
        "graceful stop signal (SIGTERM; SIGQUIT for Unicorn, whose TERM is a quick stop) → the "
        "kernel's exit events of the last worker and of the master.",
        f"- idle: after {b.args.settle:g} s settle, {b.args.idle_seconds:g} s of "
        "voluntary+nonvoluntary context switches summed over the master's threads "
        "(/proc/PID/task/*/status), CPU from utime+stime (/proc/PID/stat, clock ticks) and from "
        "schedstat (ns).",
    ]
    if b.notes or b.errors:
        lines += ["", "## Observations from this run", ""]
        lines += [f"- {n}" for n in b.notes]
        lines += [f"- ERROR: {e}" for e in b.errors]
    lines += [
        "",
        "## Machine load per phase",
        "",
        "CPU busy over each phase, as a share of all cores: all of it, and in brackets the share "
        "the bench and the processes it started used themselves (their CPU times once reaped). "
        "Much more in the first than in the second means something else was running:",
        "",
        "; ".join(f"{k} {v:.0f}% ({o:.0f}%)" for k, (v, o) in b.phase_load.items()),
    ]
    lines += ["", "## Samples", ""]
    for fig, per in b.samples.items():
        for peer, xs in per.items():
            if fig == "respawn":
                desc = "; ".join(
                    f"{s['fork_ms']:.2f}/{s['ready_ms']:.2f}" if s["fork_ms"] is not None else "?"
                    for s in xs
                )
                lines.append(f"- respawn {peer} (fork/ready ms): {desc}")
            elif fig == "orphan":
                desc = ", ".join(f"{s['ms']:.1f}" if s["ms"] is not None else ">cap" for s in xs)
                lines.append(f"- orphans {peer} (ms): {desc}")
            elif fig.startswith(("start_", "fork1_", "stop_", "wstop_", "ready1_")):
                desc = ", ".join(f"{x:.1f}" if x is not None else "—" for x in xs)
                lines.append(f"- {fig} {peer} (ms): {desc}")
    kept = ""  # a hand-written reading of the figures, below KEEP, survives a rewrite
    with contextlib.suppress(OSError):
        old = path.read_text()
        if KEEP in old:
            kept = "\n" + old[old.index(KEEP) :]
    path.write_text("\n".join(lines) + "\n" + kept)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--peers",
        default=",".join(PEERS),
        help="comma list (default: %(default)s; the Ruby peers are skipped with a line saying "
        f"why when Debian's packages are missing: {RUBY_HINT})",
    )
    ap.add_argument("--workers", type=int, default=4, help="pool size for most figures (default 4)")
    ap.add_argument("--big", type=int, default=64, help="large pool size (default 64)")
    ap.add_argument("--huge", type=int, default=256, help="start/stop only; 0: skip (256)")
    ap.add_argument("--huge-starts", type=int, default=3, help="start/stop trials at --huge (3)")
    ap.add_argument("--kills", type=int, default=20, help="respawn samples (default 20)")
    ap.add_argument("--min-life", type=float, default=1.5, help="s a worker lives before its kill")
    ap.add_argument("--orphans", type=int, default=10, help="orphan trials (default 10)")
    ap.add_argument("--orphan-cap", type=float, default=20.0, help="s to wait for orphans (20)")
    ap.add_argument("--starts", type=int, default=5, help="start/stop trials per size (5)")
    ap.add_argument("--idle-seconds", type=float, default=10.0, help="idle window (10)")
    ap.add_argument("--settle", type=float, default=1.0, help="s idle before stop/idle figures (1)")
    ap.add_argument("--quick", action="store_true", help="few samples, short windows: a smoke run")
    ap.add_argument("--only", default="", help="comma list of figures: respawn,orphans,start,idle")
    ap.add_argument("--output", default=str(REPO / "docs" / "benchmarks.md"), help="report path")
    ap.add_argument("--no-write", action="store_true", help="print only, don't write the report")
    ap.add_argument("--no-install", action="store_true", help="never pip install")
    ap.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        metavar="S",
        help="wait up to S s (before each figure: up to 60 s) for the machine to be "
        "< 15%% CPU busy",
    )
    ap.add_argument(
        "--gunicorn-args",
        default="",
        metavar="ARGS",
        help="extra gunicorn options, e.g. '--no-control-socket' (shell-quoted string)",
    )
    ap.add_argument(
        "--svcengine-rev",
        default="",
        metavar="REV",
        help="run svcengine/ as committed at REV (git archive) instead of the working tree",
    )
    args = ap.parse_args()
    if args.quick:  # smaller defaults; options given explicitly still win
        ap.set_defaults(kills=6, orphans=3, starts=2, idle_seconds=3.0, big=16, huge=32)
        ap.set_defaults(huge_starts=1)
        args = ap.parse_args()
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    if unknown := [p for p in peers if p not in PEERS]:
        raise SystemExit(f"--peers: unknown {', '.join(unknown)} (known: {', '.join(PEERS)})")
    skipped = ""
    if any(p in RUBY_PEERS for p in peers) and (why := ruby_missing()):
        if args.peers != ap.get_default("peers"):
            raise SystemExit(f"--peers asks for Ruby peers, but {why}: {RUBY_HINT}")
        skipped = f"Ruby peers (ServerEngine, Unicorn) skipped: {why}; to include them: {RUBY_HINT}"
        log(skipped)
        peers = [p for p in peers if p not in RUBY_PEERS]
    global GUNICORN_ARGS
    GUNICORN_ARGS = args.gunicorn_args
    only = set(filter(None, args.only.split(","))) or {"respawn", "orphans", "start", "idle"}
    if os.geteuid() != 0:
        raise SystemExit("run as root: the proc connector needs CAP_NET_ADMIN")

    # Children inherit ignored dispositions across exec: undo any the shell gave us.
    for s in (
        signal.SIGQUIT,
        signal.SIGHUP,
        signal.SIGUSR1,
        signal.SIGUSR2,
        signal.SIGTTIN,
        signal.SIGTTOU,
    ):
        if signal.getsignal(s) == signal.SIG_IGN:
            signal.signal(s, signal.SIG_DFL)
    stop_req = []

    def on_term(sig, _frame):
        stop_req.append(sig)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGTERM, on_term)
    # Orphaned workers come to us, so we can reap them and check they're gone.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

    b = Bench(args)
    if skipped:
        b.note(skipped)
    env = ensure_env(peers, not args.no_install, args.svcengine_rev, b.outdir)
    log(f"versions: {env}; logs in {b.outdir}")
    wait_quiet(args.wait_quiet)
    env["load_before"] = background_load()
    t_start = time.monotonic()
    log(f"before the run: {env['load_before']}")
    if float(env["load_before"].split("%")[0]) > 10:
        b.note(f"the machine was busy before the run started ({env['load_before']})")
    stat0 = cpu_times()
    svc, svc_nopds = Svcengine(True), Svcengine(False)
    order = [svc if name == "svcengine" else make() for name, make in PEERS.items()]
    order = [p for p in order if p.name in peers]
    labels = [p.name for p in order]
    others = [p.name for p in order if p is not svc]

    def attempt(what: str, fn, *a):
        """Run one figure; with --wait-quiet, redo it (twice at most) if the
        machine was busy with something else meanwhile."""
        for tries in range(3):
            wait_quiet(min(args.wait_quiet, 60.0))
            c0, t0, own0 = cpu_times(), time.monotonic(), own_cpu()
            try:
                result = fn(*a)
            except KeyboardInterrupt:
                raise
            except Exception as e:  # record, go on with the other figures
                msg = f"{what}: {type(e).__name__}: {e}"
                b.errors.append(msg)
                log("ERROR " + msg)
                return None
            finally:
                load = busy(c0, cpu_times())
                ours = 100 * (own_cpu() - own0) / ((time.monotonic() - t0) * NCPU)
                b.phase_load[what] = (load, ours)
            others = load - ours
            if args.wait_quiet <= 0 or others <= BUSY_REDO or tries == 2:
                return result
            b.note(f"{what}: redone, other processes kept the machine {others:.0f}% busy")
        return None

    rc = 0
    try:
        for p in order:
            if "idle" in only:
                attempt(f"idle {p.label} x{args.workers}", b.idle, p, args.workers)
        for p in order:
            if "idle" in only:
                attempt(f"idle {p.label} x{args.big}", b.idle, p, args.big)
        for p in order:
            if "respawn" in only:
                attempt(f"respawn {p.label}", b.respawn, p)
        sizes = [(args.workers, args.starts), (args.big, args.starts)]
        sizes += [(args.huge, args.huge_starts)] if args.huge else []
        for n, trials in sizes:
            for p in order:
                if "start" in only:
                    attempt(f"start/stop {p.label} x{n}", b.start_stop, p, n, trials)
        if "orphans" in only:
            res = {}
            rest = [p for p in order if p is not svc]
            for p in ([svc, svc_nopds] if svc in order else []) + rest:
                res[p.label] = attempt(f"orphans {p.label}", b.orphans, p)
            b.orphan_figures({k: v for k, v in res.items() if v}, others)
    except KeyboardInterrupt:
        log(f"interrupted ({stop_req or 'SIGINT'}): cleaning up")
        rc = 130
    finally:
        leftovers = cleanup(b)
    t_total = time.monotonic() - t_start
    stat1 = cpu_times()
    env["load_during"] = (
        f"{busy(stat0, stat1):.0f}% CPU busy over the run, bench included; "
        f"loadavg {open('/proc/loadavg').read().split()[0]} at the end"
    )

    lines = table(b, labels)
    print()
    print("\n".join(lines))
    if b.errors:
        print("\nerrors:\n  " + "\n  ".join(b.errors))
    print(f"\n{leftovers}; {b.col.pc.overruns} proc-connector overruns; took {t_total:.0f} s")
    if b.col.pc.overruns:
        b.note(f"{b.col.pc.overruns} proc-connector receive overruns: some kernel events were lost")
    if not args.no_write and rc == 0:
        write_doc(b, Path(args.output), labels, env, t_total)
        print(f"wrote {args.output}")
    (b.outdir / "results.json").write_text(
        json.dumps(
            {
                "figures": {k: f.values for k, f in b.figures.items()},
                "samples": b.samples,
                "notes": b.notes,
                "errors": b.errors,
            },
            indent=1,
            default=str,
        )
    )
    b.col.close()
    return rc or (1 if b.errors else 0)


def cleanup(b: Bench) -> str:
    """End every process the bench started, by pid, and check with the kernel."""
    for inst in b.instances:
        with contextlib.suppress(Exception):
            inst.finish()
    col = b.col
    col.sync()
    me = os.getpid()
    with col.cond:
        started = [p for p in col.procs.values() if p.pid != me]
    left = [p.pid for p in started if not p.leader_exited]
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if left:
        col.wait_for(lambda: not any(col.alive(x) for x in left), 5.0)
    popen_pids = {i.pid for i in b.instances}
    reap([p.pid for p in started if p.pid not in popen_pids])
    still = [x for x in left if col.alive(x)]
    ours = []  # anything still in /proc with the bench as its parent (zombies included)
    for p in started:
        with contextlib.suppress(OSError):
            st = open(f"/proc/{p.pid}/stat").read()
            if int(st[st.rindex(")") + 2 :].split()[1]) == me:
                ours.append(p.pid)
    msg = f"cleanup: {len(started)} processes started, {len(left)} killed at the end by pid"
    if still or ours:
        msg += f", STILL THERE: alive {still}, children of the bench {ours}"
        b.errors.append(msg)
    else:
        msg += ", all gone"
    return msg


if __name__ == "__main__":
    sys.exit(main())
