"""more.py's first figure: requests failed during a hot upgrade under load.

4 HTTP workers on 127.0.0.1, ``--clients`` threads making a new connection per request;
``--upgrade-at`` s in, svcengine's `ctl upgrade`, or a peer's own upgrade by signal (USR2,
the new master's workers ready, the old master's graceful stop).
"""

from __future__ import annotations

import http.client
import os
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from common import EXAMPLES, clean_env, log
from peers import Gunicorn, Peer, Svcengine, Unicorn
from procs import Inbox, free_port, gone

if TYPE_CHECKING:
    from more import More


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


@dataclass
class Upgrade:
    """One upgrade run's outcome; times in s since the load started."""

    peer: str
    run: int
    old: int  # the master before
    new: int = 0  # and after
    t_up: float = 0.0  # the upgrade begun
    t_done: float = 0.0  # the new workers ready (svcengine: `ctl upgrade` returned)
    t_old_gone: float = 0.0  # the old master and its workers all gone
    left_old: tuple[int, ...] = ()
    new_workers: int = 0
    info: str = ""


def start_load(b: More, port: int) -> tuple[Load, float]:
    """The client load, and ``--upgrade-at`` s later the time the upgrade begins."""
    load = Load(port, b.args.clients, b.args.load_seconds).start()
    time.sleep(b.args.upgrade_at)
    return load, time.monotonic() - load.t0


def upgrade_svcengine(b: More, run: int) -> dict[str, Any]:
    """`svcengine --daemonize --pid P`, then `svcengine ctl --pid P upgrade` under load."""
    svc = Svcengine()
    d = b.newdir("svc-upgrade")
    port = free_port()
    pidf = d / "app.pid"
    cfg = svc.config(
        d / "svcengine.toml",
        worker="http_worker:HttpWorker",
        workers=4,
        listen=[f"127.0.0.1:{port}"],
        python_path=[str(EXAMPLES)],
        name=f"more-up-{b.stamp}-{run}",
    )
    with open(d / "output.log", "wb") as out:
        p = b.t.popen(
            svc.argv("--daemonize", "--pid", pidf, "--log", d / "svcengine.log", "--config", cfg),
            cwd=d,
            env=clean_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        rc = p.wait(60)
    if rc != 0:
        raise RuntimeError(f"svcengine --daemonize exited {rc}: {b.tail(d)}")
    u = Upgrade("svcengine", run, int(pidf.read_text()))
    old_tree = b.t.note_tree(u.old)
    try:
        load, u.t_up = start_load(b, port)
        ctl = b.t.popen(
            svc.argv("ctl", "--pid", pidf, "upgrade"),
            cwd=d,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        ctl_out, _ = ctl.communicate(timeout=90)
        u.t_done = time.monotonic() - load.t0
        if ctl.returncode != 0:
            b.note(f"svcengine run {run}: ctl upgrade exited {ctl.returncode}: {ctl_out}")
        u.new = int(pidf.read_text())
        retired(b, u, load, old_tree)
    finally:
        b.t.end_tree(u.new or u.old, extra=old_tree)
    u.info = ctl_out.strip()
    return result(b, load, u)


def upgrade_by_signal(b: More, run: int, peer: Peer) -> dict[str, Any]:
    """USR2 to the master; wait for the new master's pid (its pidfile) and its 4 workers'
    markers; then the peer's graceful stop (TERM; Unicorn: QUIT) to the old master."""
    d = b.newdir(f"{peer.tag}-upgrade")
    port = free_port()
    pidf = d / f"{peer.name}.pid"
    inbox = Inbox(str(d / "m.sock"))
    argv, env = peer.argv_env(d, 4, port, pidf)
    with open(d / "output.log", "wb") as out:
        p = b.t.popen(
            argv,
            cwd=d,
            env=clean_env(SVCBENCH_MARKER=inbox.path, **env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    u = Upgrade(peer.name, run, p.pid)
    old_tree: list[int] = []
    try:
        inbox.wait(lambda: len(inbox.ready_of(u.old)) >= 4, 60, f"{peer.name} 4 workers", p)
        old_tree = b.t.note_tree(u.old)
        load, u.t_up = start_load(b, port)
        os.kill(u.old, signal.SIGUSR2)
        u.new = peer.new_master(d, pidf, u.old)
        b.t.seen.add(u.new)
        inbox.wait(lambda: len(inbox.ready_of(u.new)) >= 4, 60, "new master's workers")
        u.t_done = time.monotonic() - load.t0
        oldbin = peer.oldbin_seen(pidf)
        os.kill(u.old, peer.stop_signal)
        p.wait(60)
        retired(b, u, load, old_tree)
        promoted = peer.promoted(pidf, u.old, u.new)
        if promoted is False:
            b.note(f"{peer.name} run {run}: {pidf.name} never named the new master")
    finally:
        cur = u.new if u.new and not gone(u.new) else u.old
        b.t.end_tree(cur, extra=old_tree + ([u.old] if cur != u.old else []))
        inbox.close()
    u.info = peer.upgrade_info.format(
        old=u.old, new=u.new, ready_s=u.t_done - u.t_up, oldbin=oldbin, promoted=promoted
    )
    return result(b, load, u)


def retired(b: More, u: Upgrade, load: Load, old_tree: list[int]) -> None:
    """Wait for the old tree to be gone; note the new one; let the load finish."""
    u.left_old = tuple(b.t.wait_gone(old_tree, 30.0))
    u.t_old_gone = time.monotonic() - load.t0
    u.new_workers = len(b.t.note_tree(u.new)) - 1
    load.join()


def result(b: More, load: Load, u: Upgrade) -> dict[str, Any]:
    kinds: dict[str, int] = {}
    for _, what in load.failures:
        kinds[what] = kinds.get(what, 0) + 1
    r = {
        "run": u.run,
        "total": load.total,
        "ok": load.ok,
        "failed": len(load.failures),
        "failure_kinds": kinds,
        "failure_times_s": [round(t, 3) for t, _ in load.failures],
        "upgrade_at_s": round(u.t_up, 3),
        "upgrade_done_s": round(u.t_done, 3),
        "old_gone_s": round(u.t_old_gone, 3),
        "old_master": u.old,
        "new_master": u.new,
        "old_left": list(u.left_old),
        "new_workers": u.new_workers,
        "info": u.info,
    }
    peer, run = u.peer, u.run
    if not u.new or u.new == u.old:
        b.note(f"{peer} run {run}: the master was not replaced ({u.info})")
    if u.left_old:
        b.note(f"{peer} run {run}: old pids {list(u.left_old)} still alive 30 s after the upgrade")
    log(
        f"upgrade {peer} run {run}: {r['failed']} failed of {r['total']} "
        f"(upgrade at {u.t_up:.1f}s, done {u.t_done:.1f}s, old tree gone {u.t_old_gone:.1f}s) "
        f"{kinds or ''}"
    )
    return r


def upgrades(b: More) -> None:
    """The figure: each peer in turn, ``--runs`` times."""
    peers: list[tuple[str, Callable[[More, int], dict[str, Any]]]] = [
        ("svcengine", upgrade_svcengine),
        ("gunicorn", partial(upgrade_by_signal, peer=Gunicorn())),
    ]
    if b.ruby_ok:
        peers.append(("unicorn", partial(upgrade_by_signal, peer=Unicorn())))
    res: dict[str, list[dict[str, Any]]] = {peer: [] for peer, _ in peers}
    for run in range(1, b.args.runs + 1):
        for peer, fn in peers:
            try:
                res[peer].append(fn(b, run))
            except Exception as e:
                b.error(f"upgrade {peer} run {run}: {type(e).__name__}: {e}")
    b.samples["upgrade"] = res
    a = b.args
    for peer, rs in res.items():
        for r in rs:
            b.put(
                f"upgrade_failed_{r['run']}",
                f"hot upgrade under load, run {r['run']}: failed requests "
                f"(of total in {a.load_seconds:g} s)",
                "requests",
                peer,
                r["failed"],
            )
            b.rows[f"upgrade_failed_{r['run']}"].setdefault("of", {})[peer] = r["total"]
        if rs:
            b.put(
                "upgrade_failed_total",
                f"hot upgrade under load: failed requests, all {len(rs)} runs",
                "requests",
                peer,
                sum(r["failed"] for r in rs),
            )
            b.rows["upgrade_failed_total"].setdefault("of", {})[peer] = sum(r["total"] for r in rs)
            b.put(
                "upgrade_rps",
                f"hot upgrade under load: requests/s served, mean of {len(rs)} runs (context)",
                "1/s",
                peer,
                statistics.mean(r["ok"] / a.load_seconds for r in rs),
            )
            b.put(
                "upgrade_time",
                "hot upgrade: signal → new workers ready (svcengine: `ctl upgrade` returned; "
                f"others: 4 new workers' markers), median of {len(rs)} (context)",
                "s",
                peer,
                statistics.median(r["upgrade_done_s"] - r["upgrade_at_s"] for r in rs),
            )
            b.put(
                "upgrade_old_gone",
                "hot upgrade: signal → old master and old workers all gone, "
                f"median of {len(rs)} (context)",
                "s",
                peer,
                statistics.median(r["old_gone_s"] - r["upgrade_at_s"] for r in rs),
            )
