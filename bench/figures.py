"""run.py's figures: respawn latency, orphan lifetime, start and graceful stop, idle master.

Each figure is a function over ``Bench`` (the run's state: the collector, the instances it
started, the table's figures and the raw samples) and one peer; run.py lists them.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import procconn
from collector import Collector, Instance
from common import BENCH, MS, fmt_num, log
from peers import Peer
from procs import Marker, proc_counters, sig_masks


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
        self.samples: dict[str, dict[str, list[Any]]] = {}
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
        capped: bool = False,
        fmt: Callable[[float], str] | None = None,
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

    def keep(self, figure: str, peer: str, samples: list[Any]) -> None:
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
def respawn(b: Bench, peer: Peer) -> None:
    a = b.args
    inst, ready = b.start(peer, a.workers)
    try:
        alive = {pid: m.t_ns for pid, m in ready.items()}
        samples: list[dict[str, Any]] = []
        for _ in range(a.kills):
            victim = min(alive, key=alive.__getitem__)  # round robin: oldest first
            wait = alive[victim] + a.min_life * 1e9 - time.monotonic_ns()
            if wait > 0:
                time.sleep(wait / 1e9)
            known = set(inst.known_workers)
            t_kill = time.monotonic_ns()
            os.kill(victim, signal.SIGKILL)

            def new_marker(known: set[int] = known) -> Marker | None:
                for m in inst.marker_box.markers:
                    if m.kind == "ready" and m.pid not in known:
                        return m
                return None

            b.col.wait_for(lambda: new_marker() or inst.popen.poll() is not None, 30.0)
            m = new_marker()
            if m is None:
                raise RuntimeError(f"{peer.label}: no replacement within 30 s; {inst.tail()}")
            b.col.wait_for(partial(b.col.forked, m.pid), 2.0)
            b.col.wait_for(partial(b.col.all_gone, [victim]), 2.0)
            p, dead = b.col.proc(m.pid), b.col.proc(victim)
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
        b.keep("respawn", peer.label, samples)
        xs = [s["exit_ms"] for s in samples if s["exit_ms"] is not None]
        b.put(
            "respawn_exit",
            f"respawn: SIGKILL worker → killed worker gone, median of {len(xs)} (context)",
            "ms",
            peer.name,
            statistics.median(xs) if xs else None,
        )
        for what, title in (("fork_ms", "forked"), ("ready_ms", "running app code")):
            xs = [s[what] for s in samples if s[what] is not None]
            for q, qn in ((0.5, "median"), (0.95, "p95")):
                b.put(
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
def orphans(b: Bench, peer: Peer) -> list[float]:
    a = b.args
    n = a.orphans
    groups = [list(range(n))] if peer.orphans_concurrent else [[i] for i in range(n)]
    results: list[dict[str, Any]] = []
    for group in groups:
        insts: list[tuple[Instance, list[int]]] = []
        try:
            for _ in group:
                inst, ready = b.start(peer, a.workers)
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
            b.col.wait_for(
                partial(b.col.all_gone, all_workers),
                max(0.0, (deadline - time.monotonic_ns()) / 1e9),
            )
            b.col.sync()
            for (inst, workers), t_kill in zip(insts, kills, strict=True):
                left = [w for w in workers if b.col.alive(w)]
                master_exit_ns, _ = b.col.exit_of(inst.pid)
                r: dict[str, Any] = {
                    "ms": None,
                    "left": len(left),
                    "master_exit_ms": (master_exit_ns - t_kill) / MS,
                    "workers": [],
                }
                for w in workers:
                    if not b.col.alive(w):
                        t_exit, status = b.col.exit_of(w)
                        why = procconn.describe_status(status) if status is not None else "?"
                        r["workers"].append(((t_exit - t_kill) / MS, why))
                if not left:
                    r["ms"] = max(ms for ms, _ in r["workers"])
                results.append(r)
        finally:
            for inst, _ in insts:
                inst.finish()  # kills leftovers by pid, reaps them
    b.keep("orphan", peer.label, results)
    vals = [r["ms"] if r["ms"] is not None else float("inf") for r in results]
    log(
        f"orphans {peer.label}: "
        + ", ".join(f"{v:.1f}" if v != float("inf") else ">cap" for v in vals)
        + " ms"
    )
    return vals


def orphan_figures(b: Bench, res: dict[str, list[float]], others: list[str]) -> None:
    """Rows: svcengine (both PDEATHSIG settings) each against the other peers."""
    cap = b.args.orphan_cap
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
                b.put(
                    f"orphan{suffix}_{qn}",
                    f"orphans: SIGKILL master → last worker gone, {qn} of "
                    f"{len(vals) if vals else b.args.orphans}{extra}",
                    "ms",
                    col,
                    cap * 1000 if capped else v,
                    capped=capped,
                )
    for label in ("svcengine", *others):
        xs = [r["master_exit_ms"] for r in b.samples.get("orphan", {}).get(label, [])]
        if not xs:
            continue
        b.put(
            "orphan_master_median",
            f"orphans: SIGKILL master → master itself gone, median of {len(xs)} (context)",
            "ms",
            label,
            statistics.median(xs) if xs else None,
        )


# -- figures 3 and 5: start → ready, and graceful stop --
def start_stop(b: Bench, peer: Peer, n: int, trials: int) -> None:
    a = b.args
    starts, stops, rdy, wstops, firsts = [], [], [], [], []
    for _ in range(trials):
        inst = Instance(b, peer, n)
        try:
            ready = inst.wait_ready(n, 120.0)
            t_exec = inst.exec_ns()
            t_last = max(m.t_ns for m in ready.values())
            starts.append((t_last - t_exec) / MS)
            forks = [p.fork_ns for p in b.col.children(inst.pid)]
            firsts.append((min(forks) - t_exec) / MS if forks else None)
            rn = inst.wait_note("READY=1", 5.0) if peer.notifies else None
            rdy.append((rn - t_exec) / MS if rn else None)
            if len(starts) == 1 and (blk := sig_masks(inst.pid).get("SigBlk")):
                b.note(f"{peer.label}: the master runs with signals blocked: SigBlk={blk:#x}")
            time.sleep(a.settle)
            workers = inst.worker_pids()
            t_term, t_end, rc = inst.graceful_stop()
            stops.append((t_end - t_term) / MS)
            b.col.sync()
            outlived = [w for w in workers if b.col.alive(w)]
            gone = [b.col.exit_of(w)[0] for w in workers if not b.col.alive(w)]
            wstops.append((max(gone) - t_term) / MS if gone and not outlived else None)
            if outlived:
                b.note(
                    f"{peer.label}: {len(outlived)} workers outlived the master after "
                    f"{peer.stop_signal.name}"
                )
            if rc != 0:
                b.note(f"{peer.label}: exit status {rc} after {peer.stop_signal.name} (expected 0)")
        finally:
            inst.finish()
    b.keep(f"start_{n}", peer.label, starts)
    b.keep(f"stop_{n}", peer.label, stops)
    b.keep(f"wstop_{n}", peer.label, wstops)
    ws = [x for x in wstops if x is not None]
    b.put(
        f"wstop_{n}",
        f"graceful stop: stop signal to master → last worker gone ({n} idle workers), "
        f"median of {len(ws)}",
        "ms",
        peer.name,
        statistics.median(ws) if ws else None,
    )
    b.keep(f"ready1_{n}", peer.label, rdy)
    b.keep(f"fork1_{n}", peer.label, firsts)
    fs = [x for x in firsts if x is not None]
    b.put(
        f"fork1_{n}",
        f"start: exec → first worker forked ({n} workers), median of {len(fs)} (context)",
        "ms",
        peer.name,
        statistics.median(fs) if fs else None,
    )
    b.put(
        f"start_{n}",
        f"start: exec → all {n} workers running app code, median of {len(starts)}",
        "ms",
        peer.name,
        statistics.median(starts),
    )
    r = [x for x in rdy if x is not None]
    if peer.notifies and len(r) < len(rdy):
        b.note(
            f"{peer.label}: READY=1 never reached the bench's NOTIFY_SOCKET (waited 5 s after "
            f"all {n} workers ran) in {len(rdy) - len(r)} of {len(rdy)} starts"
        )
    b.put(
        f"ready1_{n}",
        f"start: exec → READY=1 on NOTIFY_SOCKET ({n} workers; gunicorn sends it before "
        f"forking), median of {len(r)}",
        "ms",
        peer.name,
        statistics.median(r) if r else None,
    )
    b.put(
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
def idle(b: Bench, peer: Peer, n: int) -> None:
    a = b.args
    inst, ready = b.start(peer, n, 120.0)
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
    b.keep(
        f"idle_{n}",
        peer.name,
        [{"master": [m0, m1], "seconds": secs, "workers_csw_per_s": wwake}],
    )
    s = f"over {a.idle_seconds:g} s, {n} workers"
    b.put(f"idle_wake_{n}", f"idle master: wakeups/s {s}", "1/s", peer.name, wake)
    b.put(
        f"idle_cpu_{n}",
        f"idle master: CPU ms per 10 s (utime+stime) {s}",
        "ms",
        peer.name,
        cpu,
    )
    b.put(
        f"idle_run_{n}",
        f"idle master: CPU µs per 10 s (schedstat) {s}",
        "µs",
        peer.name,
        run_us,
    )
    b.put(f"idle_wwake_{n}", f"idle workers: wakeups/s, all {n} together", "1/s", peer.name, wwake)
    b.put(
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
