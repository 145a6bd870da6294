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
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import FrameType
from typing import TypeVar

import figures
import serving
from common import (
    APPS,
    REPO,
    VPY,
    add_wait_quiet,
    byte_compile,
    ensure_venv,
    log,
    prepare_process,
    svcengine_commit,
    svcengine_dirty,
    venv_versions,
)
from figures import Bench
from peers import (
    PEERS,
    RUBY_HINT,
    RUBY_PEERS,
    Gunicorn,
    Peer,
    ServerEngine,
    Svcengine,
    Unicorn,
    ruby_missing,
    ruby_skipped,
    ruby_versions,
)
from procs import (
    NCPU,
    background_load,
    busy,
    cpu_times,
    loadavg,
    own_cpu,
    proc_state,
    reap,
    wait_quiet,
)
from run_report import table, write_doc

T = TypeVar("T")
BUSY_REDO = 25.0  # % CPU busy with others' work during a figure: --wait-quiet redoes it
FIGURES = ("respawn", "orphans", "start", "idle", "http")


# The figures' counts, sizes and windows: flag, type, default, help.
NUMBERS: tuple[tuple[str, type, float, str], ...] = (
    ("--workers", int, 4, "pool size for most figures (default 4)"),
    ("--big", int, 64, "large pool size (default 64)"),
    ("--huge", int, 256, "start/stop only; 0: skip (256)"),
    ("--huge-starts", int, 3, "start/stop trials at --huge (3)"),
    ("--kills", int, 20, "respawn samples (default 20)"),
    ("--min-life", float, 1.5, "s a worker lives before its kill"),
    ("--orphans", int, 10, "orphan trials (default 10)"),
    ("--orphan-cap", float, 20.0, "s to wait for orphans (20)"),
    ("--starts", int, 5, "start/stop trials per size (5)"),
    ("--idle-seconds", float, 10.0, "idle window (10)"),
    ("--settle", float, 1.0, "s idle before stop/idle figures (1)"),
)


def ensure_env(
    peers: list[str], install: bool, rev: str, outdir: Path
) -> tuple[dict[str, str], Path]:
    """The project venv with gunicorn (and svcengine, editable) in it; the peers' versions, and
    the byte-compiled snapshot of svcengine/ and examples/ the svcengine peer runs from."""
    ensure_venv(install, [p for p in ("gunicorn", "svcengine") if p in peers])
    info = venv_versions([p for p in peers if p not in RUBY_PEERS])
    if any(p in RUBY_PEERS for p in peers):
        info.update(ruby_versions())
    r = svcengine_commit(rev)
    # svcengine runs from a byte-compiled snapshot, as an installed package (pip, the .deb)
    # does: an editable tree under PYTHONDONTWRITEBYTECODE recompiles itself at every start.
    src = outdir / "svcengine-src"
    src.mkdir(parents=True)
    if rev:
        if r.returncode:
            raise SystemExit(f"--svcengine-rev {rev}: {r.stderr.strip()}")
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", rev, "svcengine", "examples"],
            capture_output=True,
            check=True,
        )
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True)
    else:
        for tree in ("svcengine", "examples"):
            shutil.copytree(REPO / tree, src / tree, ignore=shutil.ignore_patterns("__pycache__"))
    byte_compile(VPY, src, APPS)
    if "svcengine" in peers:
        where = subprocess.run(
            [str(VPY), "-c", "import svcengine; print(svcengine.__file__)"],
            env={**os.environ, "PYTHONPATH": str(src)},
            cwd=outdir,  # as for the peers: not the repo, whose svcengine/ would win
            capture_output=True,
            text=True,
        ).stdout.strip()
        if not where.startswith(str(src)):
            raise SystemExit(f"the snapshot in {src} does not win over {where}")
    if rev:
        info["commit"] = f"{r.stdout.strip()} (svcengine/, examples/ from `git archive {rev}`)"
    else:
        info["commit"] = (r.stdout.strip() or "no commits yet") + (
            " + uncommitted changes in svcengine/ (working tree)" if svcengine_dirty() else ""
        )
    return info, src


def parse_args() -> tuple[argparse.Namespace, argparse.ArgumentParser]:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--peers",
        default=",".join(PEERS),
        help="comma list (default: %(default)s; the Ruby peers are skipped with a line saying "
        f"why when Debian's packages are missing: {RUBY_HINT})",
    )
    for flag, kind, default, text in NUMBERS:
        ap.add_argument(flag, type=kind, default=default, help=text)
    ap.add_argument("--quick", action="store_true", help="few samples, short windows: a smoke run")
    ap.add_argument("--only", default="", help=f"comma list of figures: {','.join(FIGURES)}")
    ap.add_argument("--output", default=str(REPO / "docs" / "benchmarks.md"), help="report path")
    ap.add_argument("--no-write", action="store_true", help="print only, don't write the report")
    ap.add_argument("--no-install", action="store_true", help="never pip install")
    add_wait_quiet(
        ap, "wait up to S s (before each figure: up to 60 s) for the machine to be < 15%% CPU busy"
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
    return args, ap


def choose_peers(args: argparse.Namespace, default: str) -> tuple[list[str], str]:
    """The --peers names, without the Ruby ones when Debian's packages are missing (then the
    line saying so is returned too; naming them explicitly is an error)."""
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    if unknown := [p for p in peers if p not in PEERS]:
        raise SystemExit(f"--peers: unknown {', '.join(unknown)} (known: {', '.join(PEERS)})")
    skipped = ""
    if any(p in RUBY_PEERS for p in peers) and (why := ruby_missing()):
        if args.peers != default:
            raise SystemExit(f"--peers asks for Ruby peers, but {why}: {RUBY_HINT}")
        skipped = ruby_skipped(why)
        log(skipped)
        peers = [p for p in peers if p not in RUBY_PEERS]
    return peers, skipped


def attempt(b: Bench, what: str, fn: Callable[..., T], *a: object) -> T | None:
    """Run one figure; with --wait-quiet, redo it (twice at most) if the
    machine was busy with something else meanwhile."""
    wait_limit = b.args.wait_quiet
    for tries in range(3):
        wait_quiet(min(wait_limit, 60.0))
        c0, t0, own0 = cpu_times(), time.monotonic(), own_cpu()
        try:
            result = fn(b, *a)
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
        if wait_limit <= 0 or others <= BUSY_REDO or tries == 2:
            return result
        b.note(f"{what}: redone, other processes kept the machine {others:.0f}% busy")
    return None


def run_figures(b: Bench, order: list[Peer], svc_nopds: Svcengine, only: set[str]) -> None:
    """The figures in their order, each peer in turn (interleaved)."""
    args = b.args
    for n in (args.workers, args.big):
        for p in order:
            if "idle" in only:
                attempt(b, f"idle {p.label} x{n}", figures.idle, p, n)
    for p in order:
        if "respawn" in only:
            attempt(b, f"respawn {p.label}", figures.respawn, p)
    sizes = [(args.workers, args.starts), (args.big, args.starts)]
    sizes += [(args.huge, args.huge_starts)] if args.huge else []
    for n, trials in sizes:
        for p in order:
            if "start" in only:
                attempt(b, f"start/stop {p.label} x{n}", figures.start_stop, p, n, trials)
    if "orphans" in only:
        res: dict[str, list[float] | None] = {}
        svc = [p for p in order if isinstance(p, Svcengine)]
        rest = [p for p in order if not isinstance(p, Svcengine)]
        for p in ([*svc, svc_nopds] if svc else []) + rest:
            res[p.label] = attempt(b, f"orphans {p.label}", figures.orphans, p)
        others = [p.name for p in rest]
        figures.orphan_figures(b, {k: v for k, v in res.items() if v}, others)
    if "http" in only:  # examples/http_worker.py with defaults, and the peers' hello-world HTTP
        for p in order:
            attempt(b, f"http {p.label}", serving.http_pool, p)
        for n, trials in sizes[1:]:
            for p in order:
                attempt(b, f"http start {p.label} x{n}", serving.http_start, p, n, trials)


def main() -> int:
    args, ap = parse_args()
    peers, skipped = choose_peers(args, ap.get_default("peers"))
    only = set(filter(None, args.only.split(","))) or set(FIGURES)
    if unknown := only - set(FIGURES):
        raise SystemExit(f"--only: unknown {','.join(sorted(unknown))} (known: {FIGURES})")
    if os.geteuid() != 0:
        raise SystemExit("run as root: the proc connector needs CAP_NET_ADMIN")

    # Children inherit ignored dispositions across exec: undo any the shell gave us.
    # Orphaned workers come to us, so we can reap them and check they're gone.
    prepare_process()
    stop_req: list[int] = []

    def on_term(sig: int, _frame: FrameType | None) -> None:
        stop_req.append(sig)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGTERM, on_term)

    b = Bench(args)
    if skipped:
        b.note(skipped)
    env, src = ensure_env(peers, not args.no_install, args.svcengine_rev, b.outdir)
    log(f"versions: {env}; logs in {b.outdir}")
    wait_quiet(args.wait_quiet)
    env["load_before"] = background_load()
    t_start = time.monotonic()
    log(f"before the run: {env['load_before']}")
    if float(env["load_before"].split("%")[0]) > 10:
        b.note(f"the machine was busy before the run started ({env['load_before']})")
    stat0 = cpu_times()
    made: dict[str, Peer] = {
        "svcengine": Svcengine(True, src),
        "gunicorn": Gunicorn(args.gunicorn_args),
        "serverengine": ServerEngine(),
        "unicorn": Unicorn(),
    }
    order = [made[name] for name in PEERS if name in peers]
    labels = [p.name for p in order]

    rc = 0
    try:
        run_figures(b, order, Svcengine(False, src), only)
    except KeyboardInterrupt:
        log(f"interrupted ({stop_req or 'SIGINT'}): cleaning up")
        rc = 130
    finally:
        leftovers = cleanup(b)
    t_total = time.monotonic() - t_start
    env["load_during"] = (
        f"{busy(stat0, cpu_times()):.0f}% CPU busy over the run, bench included; "
        f"loadavg {loadavg()} at the end"
    )
    return report(b, labels, env, t_total, leftovers, rc)


def report(
    b: Bench, labels: list[str], env: dict[str, str], t_total: float, leftovers: str, rc: int
) -> int:
    """Print the table, write the report (unless --no-write or interrupted) and results.json."""
    lines = table(b, labels)
    print()
    print("\n".join(lines))
    if b.errors:
        print("\nerrors:\n  " + "\n  ".join(b.errors))
    print(f"\n{leftovers}; {b.col.pc.overruns} proc-connector overruns; took {t_total:.0f} s")
    if b.col.pc.overruns:
        b.note(f"{b.col.pc.overruns} proc-connector receive overruns: some kernel events were lost")
    if not b.args.no_write and rc == 0:
        write_doc(b, Path(b.args.output), labels, env, t_total)
        print(f"wrote {b.args.output}")
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
        col.wait_for(partial(col.all_gone, left), 5.0)
    popen_pids = {i.pid for i in b.instances}
    reap([p.pid for p in started if p.pid not in popen_pids])
    still = [x for x in left if col.alive(x)]
    # anything still in /proc with the bench as its parent (zombies included)
    ours = [p.pid for p in started if (st := proc_state(p.pid)) and st[1] == me]
    msg = f"cleanup: {len(started)} processes started, {len(left)} killed at the end by pid"
    if still or ours:
        msg += f", STILL THERE: alive {still}, children of the bench {ours}"
        b.errors.append(msg)
    else:
        msg += ", all gone"
    return msg


if __name__ == "__main__":
    sys.exit(main())
