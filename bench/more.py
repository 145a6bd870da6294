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
import datetime as dt
import json
import shlex
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import common
from common import (
    APPS,
    BENCH,
    EXAMPLES,
    REPO,
    VPY,
    add_wait_quiet,
    log,
    machine,
)
from memory import memory, preload
from more_report import report, table
from peers import ruby_missing, ruby_skipped, ruby_versions
from procs import Tracker, busy, busy_over, cpu_times, loadavg, tail, wait_quiet
from upgrade import upgrades

common.LOG_NAME = "more"
SCENARIOS: dict[str, tuple[str, Callable[[More], None]]] = {  # --only name: phase, function
    "upgrade": ("upgrade", upgrades),
    "memory": ("memory", memory),
    "pss": ("bench/pss.py", preload),
}


class More:
    """The run's state: where its instances live, the table's rows and the raw samples."""

    def __init__(self, args: argparse.Namespace, tracker: Tracker) -> None:
        self.args = args
        self.t = tracker
        self.stamp = time.strftime("%Y%m%d-%H%M%S")
        self.outdir = BENCH / "out" / f"more-{self.stamp}"
        self.outdir.mkdir(parents=True, exist_ok=True)
        self.seq = 0
        self.rows: dict[str, dict[str, Any]] = {}  # key -> title, unit, values{peer: float|None}
        self.samples: dict[str, dict[str, Any]] = {}
        self.notes: list[str] = []
        self.errors: list[str] = []
        self.pss_table: list[str] = []
        self.ruby_ok = False
        self.phase_load: dict[str, float] = {}

    def note(self, msg: str) -> None:
        if msg not in self.notes:
            self.notes.append(msg)
            log("note: " + msg)

    def error(self, msg: str) -> None:
        self.errors.append(msg)
        log("ERROR " + msg)

    def put(
        self, key: str, title: str, unit: str, peer: str, value: float | None, **kw: Any
    ) -> None:
        row = self.rows.setdefault(key, {"title": title, "unit": unit, "values": {}, **kw})
        row["values"][peer] = value

    def newdir(self, tag: str) -> Path:
        self.seq += 1
        d = self.outdir / f"{self.seq:03d}-{tag}"
        d.mkdir()
        return d

    @staticmethod
    def tail(d: Path) -> str:
        return " | ".join(tail(d)) or f"(no logs in {d})"

    def phase(self, name: str, fn: Callable[[More], None]) -> None:
        """Run one scenario; an error is recorded and the others go on."""
        c = cpu_times()
        try:
            fn(self)
        except Exception as e:
            self.error(f"{name}: {type(e).__name__}: {e}")
        finally:
            self.phase_load[name] = round(busy(c, cpu_times()), 1)

    def ruby(self) -> str:
        """Are Debian's ruby-serverengine and unicorn installed? Sets ruby_ok."""
        why = ruby_missing()
        self.ruby_ok = not why
        if why:
            msg = ruby_skipped(why)
        else:
            msg = (
                "Ruby peers: Debian's ruby-serverengine and unicorn are installed: measured in "
                "the memory figure (both) and the upgrade figure (Unicorn; ServerEngine has no "
                "hot master upgrade: its signals restart workers inside the same server process)"
            )
        log(msg)
        return msg


def ensure_env(install: bool) -> None:
    common.ensure_venv(install, ["svcengine", "gunicorn"])
    common.byte_compile(VPY, APPS, EXAMPLES, REPO / "svcengine")


def versions() -> dict[str, str]:
    info = common.venv_versions(["svcengine", "gunicorn"])
    info["commit"] = common.svcengine_commit().stdout.strip() or "?"
    info["dirty"] = "yes" if common.svcengine_dirty() else "no"
    return info


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=3, help="upgrade runs per peer (3)")
    ap.add_argument("--load-seconds", type=float, default=20.0, help="client load per run (20)")
    ap.add_argument("--upgrade-at", type=float, default=8.0, help="s into the load (8)")
    ap.add_argument("--clients", type=int, default=8, help="client threads (8)")
    ap.add_argument("--settle", type=float, default=1.0, help="s idle before stop / memory (1)")
    ap.add_argument("--only", default="", help="comma list: upgrade,memory,pss")
    add_wait_quiet(ap, "wait up to S s for the machine to be < 15%% CPU busy before starting")
    ap.add_argument("--output", default=str(REPO / "docs" / "benchmarks-more.md"))
    ap.add_argument("--no-write", action="store_true", help="print only (JSON still in bench/out)")
    ap.add_argument("--no-install", action="store_true", help="never pip install")
    return ap.parse_args()


def main() -> int:
    args = parse_args()
    only = set(filter(None, args.only.split(","))) or set(SCENARIOS)

    def on_term(_sig: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    # Children inherit ignored dispositions across exec; undo any the shell gave us.
    common.prepare_process(signal.SIGPIPE)
    ensure_env(not args.no_install)
    tracker = Tracker()
    b = More(args, tracker)
    env = versions()
    log(f"versions {env}; logs in {b.outdir}")
    wait_quiet(args.wait_quiet)
    load_before = busy_over()
    if load_before > 15:
        b.note(f"the machine was {load_before:.0f}% busy just before the run started")
    t_start = time.monotonic()
    c1 = cpu_times()
    rc = 0
    ruby_msg = b.ruby()  # always: the Ruby peers join the upgrade and memory figures
    if b.ruby_ok:
        env.update(ruby_versions())
    try:
        for key, (name, fn) in SCENARIOS.items():
            if key in only:
                b.phase(name, fn)
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        rc = 130
    finally:
        cleanup = tracker.cleanup()
    took = time.monotonic() - t_start
    load_during = busy(c1, cpu_times())
    if "STILL THERE" in cleanup:
        b.errors.append(cleanup)
    log(cleanup)
    load = {
        "before_pct": round(load_before, 1),
        "during_pct": round(load_during, 1),
        "phases_pct": b.phase_load,
        "loadavg_end": loadavg(),
    }
    return write(b, env, load, took, ruby_msg, cleanup, rc)


def write(
    b: More,
    env: dict[str, str],
    load: dict[str, Any],
    took: float,
    ruby_msg: str,
    cleanup: str,
    rc: int,
) -> int:
    """Print the tables, write bench/out/more-STAMP.json and (unless --no-write or
    interrupted) the report and its JSON."""
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
        "load": load,
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
    if not b.args.no_write and rc == 0:
        out = Path(b.args.output)
        out.write_text(report(result, lines, b, b.args))
        out.with_suffix(".json").write_text(blob)
        print(f"wrote {out} and {out.with_suffix('.json')}")
    return rc or (1 if b.errors else 0)


if __name__ == "__main__":
    sys.exit(main())
