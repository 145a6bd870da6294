#!/usr/bin/env python3
"""More figures, svcengine vs Gunicorn side by side in one run.

    python bench/more.py [--no-write] [--runs 3] [--load-seconds 20]

1. requests failed during a hot upgrade under load (4 HTTP workers, 8 client
   threads on loopback, a new connection per request);
2. memory of 4 idle HTTP workers: master RSS/PSS, per-worker PSS, total PSS
   (/proc/PID/smaps_rollup), plus bench/pss.py's preload off/on figures;
3. Ruby peers (ServerEngine, Unicorn) only when Debian's packages are installed.
Start and stop at 256 workers are bench/run.py's (--huge), timed by the kernel.

Prints a Markdown table (ratio = svcengine/gunicorn) and writes
docs/benchmarks-more.md, docs/benchmarks-more.json and bench/out/more-<stamp>.json.
A measurement, not a test. Needs root only for nothing; uses the project's .venv.
Every process started is ended by pid and checked gone; nothing is matched by name.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as dt
import http.client
import json
import os
import platform
import select
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

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
EXAMPLES = REPO / "examples"
VENV = REPO / ".venv"
VPY = VENV / "bin" / "python"
SVC = VENV / "bin" / "svcengine"
GUN = VENV / "bin" / "gunicorn"
PR_SET_CHILD_SUBREAPER = 36
MS = 1e6
MIB = 1024.0  # KiB per MiB


def log(msg: str) -> None:
    print(f"[more {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Processes: everything we start is a descendant (we are a child subreaper, so
# daemonized masters and orphaned workers come back to us); all ended by pid.


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


class Tracker:
    """Remembers every pid we started or saw in our trees; ends them by pid."""

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.popens: list[subprocess.Popen] = []

    def popen(self, argv: list[str], **kw) -> subprocess.Popen:
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

    def end_tree(self, root: int, extra: list[int] = (), timeout: float = 30.0) -> float:
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
        for name in os.listdir("/proc"):
            pid = int(name) if name.isdigit() else 0
            if pid and pid not in popen_pids and (st := proc_state(pid)) and st[1] == os.getpid():
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
        zombies = []
        for name in os.listdir("/proc"):
            if name.isdigit() and (s := proc_state(int(name))) and s[1] == os.getpid():
                zombies.append(int(name))
        msg = f"cleanup: {len(self.seen)} processes seen, {len(alive)} killed at the end"
        if still or zombies:
            return msg + f"; STILL THERE: {sorted(set(still))}, unreaped children {zombies}"
        return msg + ", all gone (checked in /proc)"


# ---------------------------------------------------------------------------
# Markers (bench/apps/marker.py) and sd_notify datagrams


@dataclass
class Inbox:
    path: str
    sock: socket.socket = field(init=False)
    markers: list[tuple[int, int, int]] = field(default_factory=list)  # pid, ppid, t_ns
    notes: list[tuple[int, str]] = field(default_factory=list)  # recv ns, text

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind(self.path)
        self.sock.setblocking(False)

    def drain(self, timeout: float) -> None:
        r, _, _ = select.select([self.sock], [], [], timeout)
        while r:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                break
            now = time.monotonic_ns()
            parts = data.decode(errors="replace").split()
            if len(parts) == 5 and parts[0] == "ready":
                self.markers.append((int(parts[1]), int(parts[2]), int(parts[3])))
            else:
                self.notes.append((now, data.decode(errors="replace")))

    def ready_of(self, ppid: int) -> dict[int, int]:
        """pid -> marker time, for workers of this master that are still alive."""
        out: dict[int, int] = {}
        for pid, pp, t in self.markers:
            if pp == ppid and pid not in out and not gone(pid):
                out[pid] = t
        return out

    def wait(self, pred, timeout: float, what: str, popen: subprocess.Popen | None = None):
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LISTEN_", "NOTIFY_", "WATCHDOG_", "GUNICORN_", "UNICORN_"))
    }
    env.update(extra)
    return env


def wait_file_pid(path: Path, timeout: float, not_pid: int = 0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            pid = int(path.read_text().strip())
            if pid != not_pid:
                return pid
        time.sleep(0.005)
    raise RuntimeError(f"{path}: no pid (other than {not_pid}) within {timeout:.0f}s")


# ---------------------------------------------------------------------------
# Client load


class Load:
    """N threads, a new loopback connection per request, until a deadline."""

    def __init__(self, port: int, clients: int, seconds: float) -> None:
        self.port = port
        self.seconds = seconds
        self.t0 = 0.0
        self.ok = 0
        self.failures: list[tuple[float, str]] = []  # (s since start, what)
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]

    def start(self) -> Load:
        self.t0 = time.monotonic()
        for t in self.threads:
            t.start()
        return self

    def _client(self) -> None:
        until = self.t0 + self.seconds
        while time.monotonic() < until:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                try:
                    conn.request("GET", "/")
                    resp = conn.getresponse()
                    resp.read()
                finally:
                    conn.close()
                with self.lock:
                    if resp.status == 200:
                        self.ok += 1
                    else:
                        self.failures.append((time.monotonic() - self.t0, f"HTTP {resp.status}"))
            except (OSError, http.client.HTTPException) as exc:
                with self.lock:
                    self.failures.append(
                        (time.monotonic() - self.t0, f"{type(exc).__name__}: {exc}")
                    )

    def join(self) -> None:
        for t in self.threads:
            t.join(self.seconds + 30)

    @property
    def total(self) -> int:
        return self.ok + len(self.failures)


# ---------------------------------------------------------------------------
# Memory


def smaps(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("Rss", "Pss"):
                out[k] = int(v.split()[0])  # KiB
    return out


def memory_of(master: int, workers: list[int]) -> dict[str, float]:
    m = smaps(master)
    ws = [smaps(w) for w in workers]
    return {
        "master_rss": m["Rss"] / MIB,
        "master_pss": m["Pss"] / MIB,
        "worker_pss": statistics.mean(w["Pss"] for w in ws) / MIB,
        "worker_rss": statistics.mean(w["Rss"] for w in ws) / MIB,
        "total_pss": (m["Pss"] + sum(w["Pss"] for w in ws)) / MIB,
        "workers": len(ws),
    }


# ---------------------------------------------------------------------------
# The bench


class More:
    def __init__(self, args: argparse.Namespace, tracker: Tracker) -> None:
        self.args = args
        self.t = tracker
        self.stamp = time.strftime("%Y%m%d-%H%M%S")
        self.outdir = BENCH / "out" / f"more-{self.stamp}"
        self.outdir.mkdir(parents=True, exist_ok=True)
        self.seq = 0
        self.rows: dict[str, dict] = {}  # key -> title, unit, values{peer: float|None}
        self.samples: dict[str, dict] = {}
        self.notes: list[str] = []
        self.errors: list[str] = []

    def note(self, msg: str) -> None:
        if msg not in self.notes:
            self.notes.append(msg)
            log("note: " + msg)

    def put(self, key: str, title: str, unit: str, peer: str, value: float | None, **kw) -> None:
        row = self.rows.setdefault(key, {"title": title, "unit": unit, "values": {}, **kw})
        row["values"][peer] = value

    def newdir(self, tag: str) -> Path:
        self.seq += 1
        d = self.outdir / f"{self.seq:03d}-{tag}"
        d.mkdir()
        return d

    # -- figure 1: hot upgrade under load --
    def upgrade_svcengine(self, run: int) -> dict:
        d = self.newdir("svc-upgrade")
        port = free_port()
        pidf = d / "app.pid"
        cfg = d / "svcengine.toml"
        cfg.write_text(
            'worker = "http_worker:HttpWorker"\nworkers = 4\n'
            f'listen = ["127.0.0.1:{port}"]\npython_path = [{json.dumps(str(EXAMPLES))}]\n'
            f"name = {json.dumps(f'more-up-{self.stamp}-{run}')}\n"
        )
        base = [str(SVC)]
        out = open(d / "output.log", "wb")  # noqa: SIM115
        try:
            p = self.t.popen(
                [
                    *base,
                    "--daemonize",
                    "--pid",
                    str(pidf),
                    "--log",
                    str(d / "svcengine.log"),
                    "--config",
                    str(cfg),
                ],
                cwd=d,
                env=clean_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            rc = p.wait(60)
            if rc != 0:
                raise RuntimeError(f"svcengine --daemonize exited {rc}: {tail(d)}")
            old = int(pidf.read_text())
            old_tree = self.t.note_tree(old)
            new = 0
            try:
                load = Load(port, self.args.clients, self.args.load_seconds).start()
                time.sleep(self.args.upgrade_at)
                t_up = time.monotonic() - load.t0
                ctl = self.t.popen(
                    [*base, "ctl", "--pid", str(pidf), "upgrade"],
                    cwd=d,
                    env=clean_env(),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
                ctl_out, _ = ctl.communicate(timeout=90)
                t_done = time.monotonic() - load.t0
                if ctl.returncode != 0:
                    self.note(
                        f"svcengine run {run}: ctl upgrade exited {ctl.returncode}: {ctl_out}"
                    )
                new = int(pidf.read_text())
                left_old = self.t.wait_gone(old_tree, 30.0)
                t_old_gone = time.monotonic() - load.t0
                new_tree = self.t.note_tree(new)
                load.join()
            finally:
                cur = new or old
                self.t.end_tree(cur, extra=old_tree)
            return self._upgrade_result(
                "svcengine",
                run,
                load,
                t_up,
                t_done,
                t_old_gone,
                old,
                new,
                left_old,
                len(new_tree) - 1,
                ctl_out.strip(),
            )
        finally:
            out.close()

    def upgrade_gunicorn(self, run: int) -> dict:
        d = self.newdir("gun-upgrade")
        port = free_port()
        pidf = d / "gun.pid"
        inbox = Inbox(str(d / "m.sock"))
        out = open(d / "output.log", "wb")  # noqa: SIM115
        try:
            p = self.t.popen(
                gunicorn_argv(d, 4, f"127.0.0.1:{port}", pidf),
                cwd=d,
                env=clean_env(SVCBENCH_MARKER=inbox.path),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            old = p.pid
            inbox.wait(lambda: len(inbox.ready_of(old)) >= 4, 60, "gunicorn 4 workers", p)
            old_tree = self.t.note_tree(old)
            new = 0
            try:
                load = Load(port, self.args.clients, self.args.load_seconds).start()
                time.sleep(self.args.upgrade_at)
                t_up = time.monotonic() - load.t0
                os.kill(old, signal.SIGUSR2)
                # gunicorn 2x: the new master writes PIDFILE.2 (older ones renamed the old
                # pidfile to PIDFILE.oldbin); take whichever names a new pid first.
                new = self._gunicorn_new_master(d, pidf, old)
                self.t.seen.add(new)
                inbox.wait(lambda: len(inbox.ready_of(new)) >= 4, 60, "new master's workers")
                t_ready = time.monotonic() - load.t0
                os.kill(old, signal.SIGTERM)
                p.wait(60)
                left_old = self.t.wait_gone(old_tree, 30.0)
                t_old_gone = time.monotonic() - load.t0
                new_tree = self.t.note_tree(new)
                load.join()
                promoted = wait_file_pid(pidf, 5.0, not_pid=old) == new
                if not promoted:
                    self.note(f"gunicorn run {run}: {pidf.name} never named the new master")
            finally:
                cur = new if new and not gone(new) else old
                self.t.end_tree(cur, extra=old_tree + ([old] if cur != old else []))
                inbox.close()
            return self._upgrade_result(
                "gunicorn",
                run,
                load,
                t_up,
                t_ready,
                t_old_gone,
                old,
                new,
                left_old,
                len(new_tree) - 1,
                f"USR2 → new master {new} with 4 workers booted at +{t_ready - t_up:.2f}s; "
                f"TERM old {old}; pidfile promoted: {promoted}",
            )
        finally:
            out.close()

    @staticmethod
    def _gunicorn_new_master(d: Path, pidf: Path, old: int) -> int:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for cand in (pidf.with_name(pidf.name + ".2"), pidf):
                with contextlib.suppress(OSError, ValueError):
                    pid = int(cand.read_text().strip())
                    if pid != old:
                        return pid
            time.sleep(0.005)
        raise RuntimeError(f"gunicorn: no new master pidfile within 60s: {tail(d)}")

    def _upgrade_result(
        self, peer, run, load, t_up, t_done, t_old_gone, old, new, left_old, nworkers, info
    ) -> dict:
        kinds: dict[str, int] = {}
        for _, what in load.failures:
            kinds[what] = kinds.get(what, 0) + 1
        r = {
            "run": run,
            "total": load.total,
            "ok": load.ok,
            "failed": len(load.failures),
            "failure_kinds": kinds,
            "failure_times_s": [round(t, 3) for t, _ in load.failures],
            "upgrade_at_s": round(t_up, 3),
            "upgrade_done_s": round(t_done, 3),
            "old_gone_s": round(t_old_gone, 3),
            "old_master": old,
            "new_master": new,
            "old_left": left_old,
            "new_workers": nworkers,
            "info": info,
        }
        if not new or new == old:
            self.note(f"{peer} run {run}: the master was not replaced ({info})")
        if left_old:
            self.note(f"{peer} run {run}: old pids {left_old} still alive 30 s after the upgrade")
        log(
            f"upgrade {peer} run {run}: {r['failed']} failed of {r['total']} "
            f"(upgrade at {t_up:.1f}s, done {t_done:.1f}s, old tree gone {t_old_gone:.1f}s) "
            f"{kinds or ''}"
        )
        return r

    def upgrade_unicorn(self, run: int) -> dict:
        """Unicorn's documented procedure: USR2 (the old pidfile becomes .oldbin, the new
        master writes the pidfile), wait for the new workers, then QUIT (graceful) the old."""
        d = self.newdir("uni-upgrade")
        port = free_port()
        pidf = d / "unicorn.pid"
        inbox = Inbox(str(d / "m.sock"))
        out = open(d / "output.log", "wb")  # noqa: SIM115
        try:
            p = self.t.popen(
                unicorn_argv(f"127.0.0.1:{port}"),
                cwd=d,
                env=clean_env(
                    SVCBENCH_MARKER=inbox.path, SVCBENCH_PIDFILE=str(pidf), SVCBENCH_WORKERS="4"
                ),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            old = p.pid
            inbox.wait(lambda: len(inbox.ready_of(old)) >= 4, 60, "unicorn 4 workers", p)
            old_tree = self.t.note_tree(old)
            new = 0
            try:
                load = Load(port, self.args.clients, self.args.load_seconds).start()
                time.sleep(self.args.upgrade_at)
                t_up = time.monotonic() - load.t0
                os.kill(old, signal.SIGUSR2)
                new = wait_file_pid(pidf, 60, not_pid=old)
                self.t.seen.add(new)
                inbox.wait(lambda: len(inbox.ready_of(new)) >= 4, 60, "new master's workers")
                t_ready = time.monotonic() - load.t0
                oldbin = pidf.with_name(pidf.name + ".oldbin").exists()
                os.kill(old, signal.SIGQUIT)
                p.wait(60)
                left_old = self.t.wait_gone(old_tree, 30.0)
                t_old_gone = time.monotonic() - load.t0
                new_tree = self.t.note_tree(new)
                load.join()
            finally:
                cur = new if new and not gone(new) else old
                self.t.end_tree(cur, extra=old_tree + ([old] if cur != old else []))
                inbox.close()
            return self._upgrade_result(
                "unicorn",
                run,
                load,
                t_up,
                t_ready,
                t_old_gone,
                old,
                new,
                left_old,
                len(new_tree) - 1,
                f"USR2 → new master {new} with 4 workers ready at +{t_ready - t_up:.2f}s "
                f"(.oldbin seen: {oldbin}); QUIT old {old}",
            )
        finally:
            out.close()

    def upgrades(self) -> None:
        peers = [("svcengine", self.upgrade_svcengine), ("gunicorn", self.upgrade_gunicorn)]
        if self.ruby_ok:
            peers.append(("unicorn", self.upgrade_unicorn))
        res: dict[str, list[dict]] = {peer: [] for peer, _ in peers}
        for run in range(1, self.args.runs + 1):
            for peer, fn in peers:
                try:
                    res[peer].append(fn(run))
                except Exception as e:
                    self.errors.append(f"upgrade {peer} run {run}: {type(e).__name__}: {e}")
                    log("ERROR " + self.errors[-1])
        self.samples["upgrade"] = res
        a = self.args
        for peer, rs in res.items():
            for r in rs:
                self.put(
                    f"upgrade_failed_{r['run']}",
                    f"hot upgrade under load, run {r['run']}: failed requests "
                    f"(of total in {a.load_seconds:g} s)",
                    "requests",
                    peer,
                    r["failed"],
                )
                self.rows[f"upgrade_failed_{r['run']}"].setdefault("of", {})[peer] = r["total"]
            if rs:
                self.put(
                    "upgrade_failed_total",
                    f"hot upgrade under load: failed requests, all {len(rs)} runs",
                    "requests",
                    peer,
                    sum(r["failed"] for r in rs),
                )
                self.rows["upgrade_failed_total"].setdefault("of", {})[peer] = sum(
                    r["total"] for r in rs
                )
                self.put(
                    "upgrade_rps",
                    f"hot upgrade under load: requests/s served, mean of {len(rs)} runs (context)",
                    "1/s",
                    peer,
                    statistics.mean(r["ok"] / a.load_seconds for r in rs),
                )
                self.put(
                    "upgrade_time",
                    "hot upgrade: signal → new workers ready (svcengine: `ctl upgrade` returned; "
                    f"others: 4 new workers' markers), median of {len(rs)} (context)",
                    "s",
                    peer,
                    statistics.median(r["upgrade_done_s"] - r["upgrade_at_s"] for r in rs),
                )
                self.put(
                    "upgrade_old_gone",
                    "hot upgrade: signal → old master and old workers all gone, "
                    f"median of {len(rs)} (context)",
                    "s",
                    peer,
                    statistics.median(r["old_gone_s"] - r["upgrade_at_s"] for r in rs),
                )

    # -- figure 2: memory --
    def mem_svcengine(self, variant: str = "http") -> dict[str, float]:
        """variant: "http" (examples/http_worker.py as is), "http_preload" (the same with
        `preload = true`), "idle" (bench/apps/idle.py: no HTTP code at all)."""
        d = self.newdir(f"svc-mem-{variant}")
        notify = Inbox(str(d / "n.sock"))
        cfg = d / "svcengine.toml"
        if variant == "idle":
            cfg.write_text(
                'worker = "idle:IdleWorker"\nworkers = 4\n'
                f"python_path = [{json.dumps(str(APPS))}]\n"
            )
        else:
            cfg.write_text(
                f'worker = "http_worker:HttpWorker"\nworkers = 4\n'
                f'listen = ["127.0.0.1:{free_port()}"]\n'
                f"python_path = [{json.dumps(str(EXAMPLES))}]\n"
                + ("preload = true\n" if variant == "http_preload" else "")
            )
        argv = [str(SVC), "--foreground", "--config", str(cfg), "--log", str(d / "svcengine.log")]
        out = open(d / "output.log", "wb")  # noqa: SIM115
        p = None
        try:
            p = self.t.popen(
                argv,
                cwd=d,
                env=clean_env(NOTIFY_SOCKET=notify.path),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            notify.wait(
                lambda: any("READY=1" in t.split("\n") for _, t in notify.notes),
                60,
                "svcengine READY=1",
                p,
            )
            return self._mem(p.pid, 4)
        finally:
            if p is not None:
                self.t.end_tree(p.pid)
            notify.close()
            out.close()

    def mem_gunicorn(self) -> dict[str, float]:
        d = self.newdir("gun-mem")
        inbox = Inbox(str(d / "m.sock"))
        out = open(d / "output.log", "wb")  # noqa: SIM115
        p = None
        try:
            p = self.t.popen(
                gunicorn_argv(d, 4, f"127.0.0.1:{free_port()}", None),
                cwd=d,
                env=clean_env(SVCBENCH_MARKER=inbox.path),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            inbox.wait(lambda: len(inbox.ready_of(p.pid)) >= 4, 60, "gunicorn 4 workers", p)
            return self._mem(p.pid, 4)
        finally:
            if p is not None:
                self.t.end_tree(p.pid)
            inbox.close()
            out.close()

    def mem_ruby(self, tag: str, argv: list[str], **env: str) -> dict[str, float]:
        d = self.newdir(f"{tag}-mem")
        inbox = Inbox(str(d / "m.sock"))
        out = open(d / "output.log", "wb")  # noqa: SIM115
        p = None
        try:
            p = self.t.popen(
                argv,
                cwd=d,
                env=clean_env(SVCBENCH_MARKER=inbox.path, SVCBENCH_WORKERS="4", **env),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            inbox.wait(lambda: len(inbox.ready_of(p.pid)) >= 4, 60, f"{tag} 4 workers", p)
            return self._mem(p.pid, 4)
        finally:
            if p is not None:
                self.t.end_tree(p.pid)
            inbox.close()
            out.close()

    def mem_serverengine(self) -> dict[str, float]:
        return self.mem_ruby(
            "se",
            serverengine_argv(),
            SVCBENCH_PORT=str(free_port()),
        )

    def mem_unicorn(self) -> dict[str, float]:
        return self.mem_ruby("uni", unicorn_argv(f"127.0.0.1:{free_port()}"))

    def _mem(self, master: int, n: int) -> dict[str, float]:
        time.sleep(self.args.settle * 2)
        workers = [w for w in children(master)]
        self.t.seen.update(workers)
        if len(workers) != n:
            self.note(f"memory: master {master} has {len(workers)} children, expected {n}")
        m = memory_of(master, workers)
        with contextlib.suppress(OSError):
            m["master_threads"] = len(os.listdir(f"/proc/{master}/task"))
        return m

    def memory(self) -> None:
        res = {}
        for peer, fn in (
            ("svcengine", self.mem_svcengine),
            ("gunicorn", self.mem_gunicorn),
            ("svcengine preload", lambda: self.mem_svcengine("http_preload")),
            ("svcengine idle", lambda: self.mem_svcengine("idle")),
            *(
                (("serverengine", self.mem_serverengine), ("unicorn", self.mem_unicorn))
                if self.ruby_ok
                else ()
            ),
        ):
            try:
                res[peer] = fn()
                log(f"memory {peer}: {fmt_mem(res[peer])}")
            except Exception as e:
                self.errors.append(f"memory {peer}: {type(e).__name__}: {e}")
                log("ERROR " + self.errors[-1])
        self.samples["memory"] = res
        variants = {k: v for k, v in res.items() if k.startswith("svcengine ")}
        res = {k: v for k, v in res.items() if not k.startswith("svcengine ")}
        for key, title in (
            ("master_rss", "memory, 4 idle HTTP workers: master RSS"),
            ("master_pss", "memory, 4 idle HTTP workers: master PSS"),
            ("worker_pss", "memory, 4 idle HTTP workers: PSS per worker, mean"),
            ("worker_rss", "memory, 4 idle HTTP workers: RSS per worker, mean (context)"),
            ("total_pss", "memory, 4 idle HTTP workers: total PSS, master + workers"),
        ):
            for peer, m in res.items():
                self.put(f"mem_{key}", title, "MiB", peer, m[key])
        # Context: examples/http_worker.py imports http.server (and email, html, ...) in
        # each worker after the fork; gunicorn's own HTTP code is imported by its master
        # before it forks. Same gunicorn instance in the gunicorn column.
        for variant, what in (
            (
                "svcengine preload",
                "svcengine with `preload = true` (http.server imported "
                "before the fork, as gunicorn's HTTP code is)",
            ),
            (
                "svcengine idle",
                "svcengine running bench/apps/idle.py (no HTTP code; no listening socket)",
            ),
        ):
            if variant not in variants:
                continue
            for key, what_key in (
                ("worker_pss", "PSS per worker, mean"),
                ("total_pss", "total PSS"),
            ):
                k = f"mem_{key}_{variant.split()[1]}"
                self.put(
                    k,
                    f"memory, 4 idle workers: {what_key}, {what} (context)",
                    "MiB",
                    "svcengine",
                    variants[variant][key],
                )
                if "gunicorn" in res:
                    self.put(k, "", "MiB", "gunicorn", res["gunicorn"][key])

    def preload(self) -> None:
        """bench/pss.py as it is (svcengine only): preload off vs on."""
        d = self.newdir("pss")
        with open(d / "output.log", "w") as out:
            p = self.t.popen(
                [str(VPY), str(BENCH / "pss.py"), "--workers", "4"],
                cwd=REPO,
                env=clean_env(),
                stdout=subprocess.PIPE,
                stderr=out,
                text=True,
            )
            stdout, _ = p.communicate(timeout=180)
        if p.returncode != 0:
            raise RuntimeError(f"bench/pss.py exited {p.returncode}: {tail(d)}")
        self.samples["pss_py"] = {"stdout": stdout}
        self.pss_table = [ln for ln in stdout.splitlines() if ln.startswith("|")]
        vals = {}
        for ln in self.pss_table[2:]:
            cells = [c.strip() for c in ln.strip("|").split("|")]
            vals[cells[0]] = {"off": float(cells[1]), "on": float(cells[2])}
        self.samples["pss_py"]["values"] = vals
        log(f"bench/pss.py: {vals}")

    # -- figure 3: Ruby peers --
    def ruby(self) -> str:
        """Are Debian's ruby-serverengine and unicorn installed? Sets self.ruby_ok."""
        why = ruby_missing()
        self.ruby_ok = ok = not why
        if not ok:
            msg = f"Ruby peers (ServerEngine, Unicorn) skipped: {why}; to include them: {RUBY_HINT}"
        else:
            msg = (
                "Ruby peers: Debian's ruby-serverengine and unicorn are installed: measured in "
                "the memory figure (both) and the upgrade figure (Unicorn; ServerEngine has no "
                "hot master upgrade: its signals restart workers inside the same server process)"
            )
        log(msg)
        return msg


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(x) for x in f.read().split()]


def gunicorn_argv(d: Path, n: int, bind: str, pidfile: Path | None) -> list[str]:
    argv = [
        str(GUN),
        "--config",
        str(APPS / "gunicorn_conf.py"),
        "--workers",
        str(n),
        "--worker-class",
        "sync",
        "--bind",
        bind,
        "--control-socket",
        str(d / "ctl.sock"),
        "--pythonpath",
        str(APPS),
        "--error-logfile",
        str(d / "gunicorn.log"),
    ]
    if pidfile is not None:
        argv += ["--pid", str(pidfile)]
    return [*argv, "hello:app"]


def tail(d: Path, n: int = 5) -> str:
    lines = []
    for f in sorted(d.glob("*.log")):
        with contextlib.suppress(OSError):
            lines += [f"{f.name}: {x}" for x in f.read_text(errors="replace").splitlines()[-n:]]
    return " | ".join(lines) or f"(no logs in {d})"


def fmt_mem(m: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in m.items())


# ---------------------------------------------------------------------------
# Report


def fmt_num(v: float | None) -> str:
    if v is None:
        return "n/a"
    if v == 0:
        return "0"
    if isinstance(v, int):  # counts
        return f"{int(v)}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return "n/a"
    if b == 0:
        return "= (both 0)" if a == 0 else "∞"
    r = a / b
    return f"{r:.3g}" if r < 1000 else f"{r:.0f}"


PEER_ORDER = ("svcengine", "gunicorn", "serverengine", "unicorn")


def table(rows: dict[str, dict]) -> list[str]:
    extra = [p for p in PEER_ORDER[2:] if any(p in r["values"] for r in rows.values())]
    peers = ["svcengine", "gunicorn", *extra]
    head = ["figure", "unit", *peers, *(f"svcengine/{p}" for p in peers[1:])]
    out = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in rows.values():
        v = row["values"]
        cells = []
        for peer in peers:
            s = fmt_num(v[peer]) if peer in v else "—"
            if row.get("of") and peer in row["of"]:
                s += f" of {row['of'][peer]}"
            cells.append(s)
        cells += [ratio(v.get("svcengine"), v.get(p)) for p in peers[1:]]
        out.append(f"| {row['title']} | {row['unit']} | {' | '.join(cells)} |")
    return out


def versions() -> dict[str, str]:
    info = {}
    r = subprocess.run(
        [str(VPY), "-c", "import sys; print(sys.version.split()[0])"],
        capture_output=True,
        text=True,
    )
    info["python"] = r.stdout.strip()
    for pkg in ("svcengine", "gunicorn"):
        r = subprocess.run(
            [str(VPY), "-c", f"import importlib.metadata as m; print(m.version({pkg!r}))"],
            capture_output=True,
            text=True,
        )
        info[pkg] = r.stdout.strip() or "?"
    git = ["git", "-C", str(REPO)]
    r = subprocess.run(
        [*git, "log", "-1", "--format=%h %cd", "--date=short", "--", "svcengine"],
        capture_output=True,
        text=True,
    )
    info["commit"] = r.stdout.strip() or "?"
    r = subprocess.run(
        [*git, "status", "--porcelain", "--", "svcengine"], capture_output=True, text=True
    )
    info["dirty"] = "yes" if r.stdout.strip() else "no"
    return info


def cpu_busy() -> tuple[int, int]:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def busy_pct(a: tuple[int, int], b: tuple[int, int]) -> float:
    return 100.0 * (b[0] - a[0]) / max(1, b[1] - a[1])


def wait_quiet(limit: float, quiet: float = 15.0) -> float:
    """Wait up to `limit` s until the machine is < `quiet` % busy over 2 s; return the last %."""
    deadline = time.monotonic() + limit
    while True:
        a = cpu_busy()
        time.sleep(2)
        pct = busy_pct(a, cpu_busy())
        if pct < quiet or time.monotonic() >= deadline:
            return pct
        log(f"machine {pct:.0f}% busy (something else is running); waiting up to {limit:.0f} s")


def ensure_env(install: bool) -> None:
    if not VPY.exists():
        raise SystemExit(f"{VENV} missing: run ./dev test first")
    byte_compile(VPY, APPS, EXAMPLES, REPO / "svcengine")
    if not SVC.exists():
        if not install:
            raise SystemExit("svcengine not in .venv")
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "-e", str(REPO)], check=True)
    if not GUN.exists():
        if not install:
            raise SystemExit("gunicorn not in .venv")
        log("installing gunicorn into .venv")
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "gunicorn"], check=True)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=3, help="upgrade runs per peer (3)")
    ap.add_argument("--load-seconds", type=float, default=20.0, help="client load per run (20)")
    ap.add_argument("--upgrade-at", type=float, default=8.0, help="s into the load (8)")
    ap.add_argument("--clients", type=int, default=8, help="client threads (8)")
    ap.add_argument("--settle", type=float, default=1.0, help="s idle before stop / memory (1)")
    ap.add_argument("--only", default="", help="comma list: upgrade,memory,pss")
    ap.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="S",
        help="wait up to S s for the machine to be < 15%% CPU busy before starting",
    )
    ap.add_argument("--output", default=str(REPO / "docs" / "benchmarks-more.md"))
    ap.add_argument("--no-write", action="store_true", help="print only (JSON still in bench/out)")
    ap.add_argument("--no-install", action="store_true", help="never pip install")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(","))) or {"upgrade", "memory", "pss"}

    # Children inherit ignored dispositions across exec; undo any the shell gave us.
    for s in (
        signal.SIGQUIT,
        signal.SIGHUP,
        signal.SIGUSR1,
        signal.SIGUSR2,
        signal.SIGTTIN,
        signal.SIGTTOU,
        signal.SIGPIPE,
    ):
        if signal.getsignal(s) == signal.SIG_IGN:
            signal.signal(s, signal.SIG_DFL)

    def on_term(_sig, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise SystemExit("prctl(PR_SET_CHILD_SUBREAPER) failed")
    ensure_env(not args.no_install)
    tracker = Tracker()
    b = More(args, tracker)
    env = versions()
    log(f"versions {env}; logs in {b.outdir}")
    load_before = wait_quiet(args.wait_quiet)
    if load_before > 15:
        b.note(f"the machine was {load_before:.0f}% busy just before the run started")
    t_start = time.monotonic()
    c1 = cpu_busy()
    rc = 0
    ruby_msg = ""
    b.pss_table = []
    phase_load: dict[str, float] = {}

    def phase(name: str, fn) -> None:
        c = cpu_busy()
        try:
            fn()
        except Exception as e:
            b.errors.append(f"{name}: {type(e).__name__}: {e}")
            log("ERROR " + b.errors[-1])
        finally:
            phase_load[name] = round(busy_pct(c, cpu_busy()), 1)

    ruby_msg = b.ruby()  # always: the Ruby peers join the upgrade and memory figures
    if b.ruby_ok:
        env.update(ruby_versions())
    try:
        if "upgrade" in only:
            phase("upgrade", b.upgrades)
        if "memory" in only:
            phase("memory", b.memory)
        if "pss" in only:
            phase("bench/pss.py", b.preload)
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        rc = 130
    finally:
        cleanup = tracker.cleanup()
    took = time.monotonic() - t_start
    load_during = busy_pct(c1, cpu_busy())
    if "STILL THERE" in cleanup:
        b.errors.append(cleanup)
    log(cleanup)

    exe = Path(sys.executable)
    exe_s = str(exe.relative_to(REPO)) if exe.is_relative_to(REPO) else exe.name
    cmd = shlex.join([exe_s, "bench/more.py", *sys.argv[1:]])
    m = machine()
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = table(b.rows)
    print()
    print("\n".join(lines))
    if b.pss_table:
        print()
        print("\n".join(b.pss_table))
    if ruby_msg:
        print("\n" + ruby_msg)
    for e in b.errors:
        print("ERROR: " + e)
    print(f"\n{cleanup}; took {took:.0f} s")

    result = {
        "date": now,
        "command": cmd,
        "took_s": round(took, 1),
        "machine": m,
        "versions": env,
        "load": {
            "before_pct": round(load_before, 1),
            "during_pct": round(load_during, 1),
            "phases_pct": phase_load,
            "loadavg_end": open("/proc/loadavg").read().split()[0],
        },
        "rows": b.rows,
        "samples": b.samples,
        "pss_table": b.pss_table,
        "ruby": ruby_msg,
        "notes": b.notes,
        "errors": b.errors,
        "cleanup": cleanup,
    }
    blob = json.dumps(result, indent=1, default=str, ensure_ascii=False)
    (BENCH / "out" / f"more-{b.stamp}.json").write_text(blob)
    if not args.no_write and rc == 0:
        out = Path(args.output)
        out.write_text(report(result, lines, b, args))
        out.with_suffix(".json").write_text(blob)
        print(f"wrote {out} and {out.with_suffix('.json')}")
    return rc or (1 if b.errors else 0)


def report(res: dict, lines: list[str], b: More, args: argparse.Namespace) -> str:
    m, v = res["machine"], res["versions"]
    raw = Path(args.output).with_suffix(".json").name
    doc = [
        "# More benchmarks: svcengine vs Gunicorn (upgrade under load, memory), with Ruby peers",
        "",
        "Written by `bench/more.py`; the other figures are in [benchmarks.md](benchmarks.md). "
        "Every number below comes from one run of the command shown, on the machine shown; "
        f"the raw samples are in [{raw}]({raw}).",
        "",
        f"- date: {res['date']}",
        f"- command: `{res['command']}` (took {res['took_s']:.0f} s)",
        f"- machine: nproc {m['nproc']} ({m['cpu']}), {m['memory']}, kernel {m['kernel']}, "
        f"{m['os']}",
        f"- python (peers, .venv): {v['python']}; bench: {platform.python_version()}",
        f"- svcengine {v['svcengine']}, last commit to svcengine/: {v['commit']}"
        + (" (svcengine/ had uncommitted edits)" if v["dirty"] == "yes" else "")
        + f"; gunicorn {v['gunicorn']} (sync workers, defaults)"
        + (
            f"; ruby {v['ruby']}, ServerEngine {v['serverengine']} (process workers, no "
            f"supervisor), Unicorn {v['unicorn']} (Debian packages)"
            if "ruby" in v
            else ""
        ),
        f"- CPU busy (all cores, bench included): {res['load']['before_pct']:.0f}% in the 2 s "
        f"before, {res['load']['during_pct']:.0f}% over the run ("
        + ", ".join(f"{k} {v:.0f}%" for k, v in res["load"]["phases_pct"].items())
        + f"); loadavg {res['load']['loadavg_end']} at the end. This bench alone keeps "
        "the machine busy during the upgrade runs (8 client threads + 4 workers); more than "
        "that means something else was running.",
        "",
        "Ratio = svcengine / peer (below 1: svcengine fewer/smaller/faster).",
        "",
        *lines,
        "",
    ]
    if res["pss_table"]:
        doc += [
            "## `preload` (bench/pss.py, svcengine only)",
            "",
            "`bench/pss.py --workers 4`, run by this bench as it is: a worker module that imports "
            "several stdlib packages and builds a ~30 MB table at import.",
            "",
            *res["pss_table"],
            "",
        ]
    doc += ["## Ruby peers", "", res["ruby"] or "not run (`--only`)", ""]
    up = b.samples.get("upgrade", {})
    if up:
        doc += ["## Upgrade runs", ""]
        for peer, rs in up.items():
            for r in rs:
                kinds = ", ".join(f"{k} ×{n}" for k, n in r["failure_kinds"].items()) or "none"
                doc.append(
                    f"- {peer} run {r['run']}: {r['failed']} failed of {r['total']}; signal at "
                    f"{r['upgrade_at_s']:.1f} s, new workers ready at {r['upgrade_done_s']:.1f} s, "
                    f"old tree gone at {r['old_gone_s']:.1f} s; master {r['old_master']} → "
                    f"{r['new_master']}; failures: {kinds}"
                )
        doc.append("")
    doc += [
        "## How each figure is taken",
        "",
        f"- hot upgrade: 4 workers serving hello-world HTTP on 127.0.0.1 (svcengine: "
        "`examples/http_worker.py` HttpWorker with `listen`, started with `svcengine "
        "--daemonize --pid P`; gunicorn: sync workers, `bench/apps/hello.py`, `--pid P`). "
        f"{args.clients} client threads in the bench, a new connection per request "
        f"(`http.client`, 10 s timeout), for {args.load_seconds:g} s; {args.upgrade_at:g} s in: "
        "svcengine `svcengine ctl --pid P upgrade` (USR2, waits for the outcome); gunicorn USR2 "
        "to the master, wait for the new master's pid file (gunicorn 2x writes `P.2`, and renames "
        "it to `P` once promoted) and for its 4 workers' `post_worker_init` markers, then TERM to "
        "the old master. A failure is a connection error, a timeout or a non-200 status. "
        "The upgrade-time context row counts, for svcengine, the start of the `svcengine ctl` "
        "Python process too (its USR2 is sent once it has started), on a machine kept busy by "
        "the load; gunicorn's starts at the bench's own `os.kill`. "
        f"{args.runs} runs each, interleaved.",
        "- memory: a fresh instance of each with 4 HTTP workers on loopback (the upgrade "
        f"figure's apps), {args.settle * 2:g} s after all workers are ready (svcengine: READY=1 "
        "on the bench's NOTIFY_SOCKET; gunicorn: 4 markers); RSS and PSS from "
        "`/proc/PID/smaps_rollup`. PSS splits each shared page between the processes sharing "
        "it, so master + workers PSS is what the service really costs. "
        "`examples/http_worker.py` imports `http.server` (which pulls in `email`, `html`, "
        "`mimetypes`, `socketserver`) in every worker after the fork, while gunicorn's master "
        "has imported gunicorn's own HTTP code before forking and `bench/apps/hello.py` imports "
        "nothing; the two context rows (svcengine with `preload = true`, and svcengine running "
        "`bench/apps/idle.py`) separate that from svcengine's own cost.",
        *(
            [
                "- Ruby peers (Debian's packages): Unicorn runs `bench/apps/hello.ru` with "
                "`bench/apps/unicorn_conf.rb` (4 workers, `-E none`, marker from "
                "`after_worker_ready`); its upgrade is Unicorn's documented one: USR2, wait for "
                "the new master's pidfile and its 4 workers, then QUIT (Unicorn's graceful stop; "
                "its TERM is the quick one) to the old master. ServerEngine runs "
                "`bench/apps/serverengine_hello.rb`: 4 `process` workers, no supervisor process, "
                "serving hello-world HTTP/1.0 on a TCP socket the server binds before forking "
                "(marker from the first line of `run`). Memory only: ServerEngine has no hot "
                "master upgrade.",
            ]
            if "ruby" in v
            else []
        ),
        "- processes: started with `subprocess.Popen(restore_signals=True, "
        "start_new_session=True)`; the bench is a child subreaper, so daemonized and upgraded "
        "masters stay its descendants. Each instance is ended by pid (TERM, then SIGKILL by pid "
        "after 30 s) and every pid is checked gone in /proc; " + res["cleanup"] + ".",
    ]
    if b.notes or b.errors:
        doc += ["", "## Observations from this run", ""]
        doc += [f"- {n}" for n in b.notes]
        doc += [f"- ERROR: {e}" for e in b.errors]
    return "\n".join(doc) + "\n"


if __name__ == "__main__":
    sys.exit(main())
