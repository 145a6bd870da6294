#!/usr/bin/env python3
"""What no CPython pool can go below: the memory of an interpreter that does nothing, and of
a child forked from a warm mold that runs no line of Python; the cost of a fork. Run from
the checkout, with each interpreter to compare (each with svcengine importable, e.g. a venv
with `pip install -e .`):

    python bench/floor.py [--python PY ...] [--children 4] [--forks 30]

Per interpreter, in a fresh process of its own:
- idle: `time.sleep()` and nothing else, alone: USS and PSS (smaps_rollup).
- the pool's shape, running nothing: a "master" (svcengine's master and mold modules
  imported, gc.freeze()) forks a "mold" that imports the HTTP example (http.server),
  gc.collect() + gc.freeze(), and forks N children; all of them then only wait in
  pause(). PSS of the master and the mold, each child's USS and PSS (median). A pool
  that runs anything at all cannot be smaller.
- fork: the same process forks and the child writes the clock at once: fork() → first
  line of the child, median of --forks, by os.fork() and by libc's fork() (no CPython
  at-fork work).
Standard library only; changes nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PROBE = textwrap.dedent(
    """
    import ctypes, gc, json, os, signal, statistics, subprocess, sys, time
    REPO, CHILDREN, FORKS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

    def rollup(pid):
        d = {}
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                p = line.split()
                if len(p) == 3:
                    d[p[0].rstrip(":")] = int(p[1])
        return {"uss": d["Private_Clean"] + d["Private_Dirty"], "pss": d["Pss"]}

    out = {"version": sys.version.split()[0]}
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    time.sleep(1.0)  # settle: an idle process has no event to wait for
    out["idle"] = rollup(idle.pid)
    idle.kill()
    idle.wait()

    # the pool's shape with nothing running: a master holding svcengine's master code, a
    # mold forked from it holding the example too, children forked from the mold
    import svcengine.master, svcengine.child.mold  # noqa: E401
    gc.collect()
    gc.freeze()
    r, w = os.pipe()
    mold = os.fork()
    if mold == 0:
        sys.path.insert(0, os.path.join(REPO, "examples"))
        import http.server, http_worker  # noqa: E401
        gc.collect()
        gc.freeze()
        for _ in range(CHILDREN):
            if os.fork() == 0:
                signal.pause()
                os._exit(0)
        os.write(w, b"x")
        signal.pause()
        os._exit(0)
    os.read(r, 1)
    time.sleep(1.0)
    kids = [int(p) for p in open(f"/proc/{mold}/task/{mold}/children").read().split()]
    sizes = [rollup(p) for p in kids]
    out["child"] = {k: statistics.median(s[k] for s in sizes) for k in ("uss", "pss")}
    out["master"] = rollup(os.getpid())
    out["mold"] = rollup(mold)
    for p in (*kids, mold):
        os.kill(p, signal.SIGKILL)
    os.waitpid(mold, 0)  # the children are the mold's: gone with it (init reaps them)

    libc = ctypes.CDLL("libc.so.6")
    for name, fork in (("os.fork", os.fork), ("fork(2)", libc.fork)):
        lat = []
        for _ in range(FORKS):
            t0 = time.monotonic_ns()
            pid = fork()
            if pid == 0:
                os.write(w, b"%d" % time.monotonic_ns())
                os._exit(0)
            lat.append((int(os.read(r, 32)) - t0) / 1e6)
            os.waitpid(pid, 0)
        out[name] = statistics.median(lat)
    print(json.dumps(out))
    """
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", action="append", help="an interpreter (repeatable)")
    ap.add_argument("--children", type=int, default=4)
    ap.add_argument("--forks", type=int, default=30)
    args = ap.parse_args()
    rows = []
    for py in args.python or [sys.executable]:
        cmd = [py, "-c", PROBE, str(REPO), str(args.children), str(args.forks)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            print(f"{py}: failed: {done.stderr.strip()[-500:]}", file=sys.stderr)
            return 1
        rows.append(json.loads(done.stdout))
    print(
        f"| Python | idle interpreter alone: USS / PSS kB | the pool's shape, running nothing "
        f"({args.children} children): master PSS + mold PSS kB | a child: USS / PSS kB "
        f"| fork → child's first line: os.fork() / fork(2) ms |"
    )
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['version']} | {r['idle']['uss']:,} / {r['idle']['pss']:,} "
            f"| {r['master']['pss']:,} + {r['mold']['pss']:,} = "
            f"{r['master']['pss'] + r['mold']['pss']:,} "
            f"| {r['child']['uss']:,.0f} / {r['child']['pss']:,.0f} "
            f"| {r['os.fork']:.2f} / {r['fork(2)']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
