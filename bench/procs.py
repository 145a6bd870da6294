"""Processes the benches start, what they read from /proc, and how busy the machine is.

Everything started is a descendant (run.py and more.py make themselves child subreapers,
so daemonized masters and orphaned workers come back to them) and is ended by pid; nothing
is matched by name. The apps' markers and sd_notify datagrams arrive in an ``Inbox``.
Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from common import log

T = TypeVar("T")
MIB = 1024.0  # KiB per MiB

# ---------------------------------------------------------------------------
# /proc


def proc_state(pid: int) -> tuple[str, int] | None:
    """(state letter, ppid), or None when the pid is not in /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = st[st.rindex(")") + 2 :].split()
    return rest[0], int(rest[1])


def gone(pid: int) -> bool:
    """True once the pid has exited (a zombie counts as gone; ours are reaped)."""
    s = proc_state(pid)
    if s is None:
        return True
    if s[0] in "ZX":
        if s[1] == os.getpid():
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        return True
    return False


def ppids() -> dict[int, int]:
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            s = proc_state(int(name))
            if s is not None:
                out[int(name)] = s[1]
    return out


def our_children() -> list[int]:
    """Every pid in /proc whose parent is this process (zombies included)."""
    me = os.getpid()
    return [pid for pid, ppid in ppids().items() if ppid == me]


def descendants(root: int) -> list[int]:
    """Live descendants of root (zombies excluded), from one /proc scan."""
    pp = ppids()
    kids: dict[int, list[int]] = {}
    for pid, ppid in pp.items():
        kids.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        for k in kids.get(todo.pop(), []):
            if not gone(k):
                out.append(k)
                todo.append(k)
    return out


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(x) for x in f.read().split()]


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


def smaps(pid: int) -> dict[str, int]:
    """KiB from /proc/PID/smaps_rollup: Rss, Pss, and Uss (Private_Clean + Private_Dirty: what
    the process alone holds, freed when it exits)."""
    out = {"Uss": 0}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("Rss", "Pss"):
                out[k] = int(v.split()[0])
            elif k in ("Private_Clean", "Private_Dirty"):
                out["Uss"] += int(v.split()[0])
    return out


def memory_of(master: int, workers: list[int], helpers: Iterable[int] = ()) -> dict[str, float]:
    """MiB: the master's, the workers' (mean) and the total; ``helpers``: the pool's processes that
    are neither (e.g. a mold), counted in the total and in ``helpers_pss``."""
    m = smaps(master)
    ws = [smaps(w) for w in workers]
    hs = [smaps(h) for h in helpers]
    return {
        "master_rss": m["Rss"] / MIB,
        "master_pss": m["Pss"] / MIB,
        "worker_pss": statistics.mean(w["Pss"] for w in ws) / MIB,
        "worker_rss": statistics.mean(w["Rss"] for w in ws) / MIB,
        "worker_uss": statistics.mean(w["Uss"] for w in ws) / MIB,
        "helpers_pss": sum(h["Pss"] for h in hs) / MIB,
        "total_pss": (m["Pss"] + sum(w["Pss"] for w in ws) + sum(h["Pss"] for h in hs)) / MIB,
        "workers": len(ws),
    }


def accept_queue(port: int) -> int:
    """Connections waiting to be accepted on 127.0.0.1:``port``: a listening socket's rx_queue in
    /proc/net/tcp is its accept queue (sk_ack_backlog)."""
    want = f"0100007F:{port:04X}"
    queued = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[1] == want and fields[3] == "0A":  # local address, state LISTEN
                queued += int(fields[4].split(":")[1], 16)
    return queued


def wait_file_pid(path: Path, timeout: float, not_pid: int = 0) -> int:
    """The first pid other than ``not_pid`` read from any of ``path`` (a pidfile)."""
    return wait_pidfiles([path], timeout, not_pid)


def wait_pidfiles(paths: list[Path], timeout: float, not_pid: int = 0) -> int:
    """The first pid other than ``not_pid`` that one of ``paths`` names, trying them in order."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in paths:
            with contextlib.suppress(OSError, ValueError):
                pid = int(path.read_text().strip())
                if pid != not_pid:
                    return pid
        time.sleep(0.005)
    names = " or ".join(map(str, paths))
    raise RuntimeError(f"{names}: no pid (other than {not_pid}) within {timeout:.0f}s")


def tail(d: Path, n: int = 5) -> list[str]:
    """The last ``n`` lines of each log in ``d``, each prefixed with its file's name."""
    lines = []
    for f in sorted(d.glob("*.log")):
        with contextlib.suppress(OSError):
            lines += [f"{f.name}: {x}" for x in f.read_text(errors="replace").splitlines()[-n:]]
    return lines


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# ---------------------------------------------------------------------------
# Tracker: every pid we started or saw, ended by pid


class Tracker:
    """Remembers every pid we started or saw in our trees; ends them by pid."""

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.popens: list[subprocess.Popen[Any]] = []

    def popen(self, argv: list[str], **kw: Any) -> subprocess.Popen[Any]:
        p = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            restore_signals=True,
            start_new_session=True,
            close_fds=True,
            **kw,
        )
        self.popens.append(p)
        self.seen.add(p.pid)
        return p

    def note_tree(self, root: int) -> list[int]:
        tree = [root, *descendants(root)]
        self.seen.update(tree)
        return tree

    def wait_gone(self, pids: list[int], timeout: float) -> list[int]:
        deadline = time.monotonic() + timeout
        while True:
            for p in self.popens:
                if p.pid in pids:
                    p.poll()
            left = [p for p in pids if not gone(p)]
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(0.01)

    def end(self, pids: list[int], sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        """Signal each pid, wait until gone; SIGKILL by pid whatever is left."""
        self.seen.update(pids)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        left = self.wait_gone(pids, timeout)
        if left:
            log(f"still alive {timeout:.0f}s after signal {sig}: {left}; SIGKILL by pid")
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            left = self.wait_gone(left, 10.0)
            if left:
                raise RuntimeError(f"pids {left} survive SIGKILL")

    def end_tree(self, root: int, extra: Iterable[int] = (), timeout: float = 30.0) -> float:
        """TERM the master, wait for it and every descendant (and extra pids) to
        be gone; return seconds from TERM to all gone."""
        tree = self.note_tree(root) + [p for p in extra if not gone(p)]
        t0 = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.kill(root, signal.SIGTERM)
        left = self.wait_gone(tree, timeout)
        took = time.monotonic() - t0
        if left:
            self.end(left, signal.SIGKILL, 10.0)
        # workers forked after our snapshot (a respawn racing the TERM)
        late = descendants(root) if not gone(root) else []
        if late:
            self.end(late, signal.SIGKILL, 10.0)
        self.reap_strays()
        return took

    def reap_strays(self) -> None:
        """Reap zombies reparented to us (we are a subreaper): e.g. the middle process of
        `svcengine --daemonize`'s double fork, whose parent exits first."""
        popen_pids = {p.pid for p in self.popens}
        for pid in our_children():
            if pid not in popen_pids:
                self.seen.add(pid)
                gone(pid)  # reaps it if it is a zombie of ours

    def cleanup(self) -> str:
        """At the end: SIGKILL by pid anything we started that is still alive,
        then check that no pid we know of and no descendant of ours is left."""
        for p in self.popens:
            p.poll()
        mine = descendants(os.getpid())
        alive = sorted({p for p in self.seen if not gone(p)} | set(mine))
        if alive:
            log(f"cleanup: SIGKILL by pid {alive}")
            self.end(alive, signal.SIGKILL, 10.0)
        for p in self.popens:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(5)
        still = [p for p in self.seen if not gone(p)] + descendants(os.getpid())
        zombies = our_children()
        msg = f"cleanup: {len(self.seen)} processes seen, {len(alive)} killed at the end"
        if still or zombies:
            return msg + f"; STILL THERE: {sorted(set(still))}, unreaped children {zombies}"
        return msg + ", all gone (checked in /proc)"


# ---------------------------------------------------------------------------
# Inbox: the apps' markers (bench/apps/marker.py) and sd_notify datagrams


@dataclass(frozen=True)
class Marker:
    kind: str
    pid: int
    ppid: int
    t_ns: int
    worker_id: int


class Inbox:
    """A unix datagram socket the apps (markers) or a master (sd_notify) write to."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.markers: list[Marker] = []
        self.notes: list[tuple[int, str]] = []  # (recv ns, sd_notify text)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind(path)
        self.sock.setblocking(False)

    def receive(self) -> list[tuple[bytes, int]]:
        """Every datagram queued now, each with its receive time (ns); never blocks."""
        got: list[tuple[bytes, int]] = []
        while True:
            try:
                data = self.sock.recv(4096)
            except (BlockingIOError, OSError):
                return got
            got.append((data, time.monotonic_ns()))

    def take(self, data: bytes, recv_ns: int) -> None:
        """``KIND PID PPID NS ID`` is a marker; anything else is sd_notify text."""
        text = data.decode("utf-8", "replace")
        parts = text.split()
        if (
            len(parts) == 5
            and parts[0].isalpha()
            and all(p.lstrip("-").isdigit() for p in parts[1:])
        ):
            kind, pid, ppid, t_ns, wid = parts
            self.markers.append(Marker(kind, int(pid), int(ppid), int(t_ns), int(wid)))
        else:
            self.notes.append((recv_ns, text))

    # -- used on its own (more.py); run.py's Collector reads it from its thread --
    def drain(self, timeout: float) -> None:
        r, _, _ = select.select([self.sock], [], [], timeout)
        if r:
            for data, recv_ns in self.receive():
                self.take(data, recv_ns)

    def ready_of(self, ppid: int) -> dict[int, int]:
        """pid -> marker time, for workers of this master that are still alive."""
        out: dict[int, int] = {}
        for m in self.markers:
            if m.kind == "ready" and m.ppid == ppid and m.pid not in out and not gone(m.pid):
                out[m.pid] = m.t_ns
        return out

    def has_note(self, line: str) -> bool:
        return any(line in t.split("\n") for _, t in self.notes)

    def wait(
        self,
        pred: Callable[[], T],
        timeout: float,
        what: str,
        popen: subprocess.Popen[Any] | None = None,
    ) -> T:
        deadline = time.monotonic() + timeout
        while True:
            got = pred()
            if got:
                return got
            if popen is not None and popen.poll() is not None:
                raise RuntimeError(f"{what}: master exited with {popen.returncode}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"{what}: timeout after {timeout:.0f}s")
            self.drain(min(left, 0.05))

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


# ---------------------------------------------------------------------------
# How busy the machine is


def cpu_times() -> list[int]:
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:]]


def busy(a: list[int], b: list[int]) -> float:
    """% of all cores busy between two cpu_times() (guest time is already in user)."""
    d = [y - x for x, y in zip(a, b, strict=False)]
    total = sum(d[:8]) or 1
    return 100.0 * (1 - (d[3] + d[4]) / total)  # idle + iowait


NCPU = os.cpu_count() or 1


def own_cpu() -> float:
    """CPU seconds of the bench and of every process it started and reaped (the peers' masters
    reap their workers; orphans are reaped here)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def busy_over(seconds: float = 2.0) -> float:
    a = cpu_times()
    time.sleep(seconds)
    return busy(a, cpu_times())


def background_load(seconds: float = 2.0) -> str:
    """How busy the machine is before we start anything: others' load skews latencies."""
    return f"{busy_over(seconds):.0f}% CPU busy over {seconds:g} s, loadavg {loadavg()}"


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
