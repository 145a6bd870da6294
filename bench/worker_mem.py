#!/usr/bin/env python3
"""What one svcengine worker costs: USS/PSS of each worker and the mold, and where a
worker's private pages are (per mapping). Run from the checkout:

    python bench/worker_mem.py [--app http|idle] [--workers 4] [--requests 0] [--maps]
                               [--runs 1] [--env NAME=VALUE ...]

USS = Private_Clean + Private_Dirty of /proc/PID/smaps_rollup: what the kernel would free
if the process died. Readiness is the master's READY=1 on a NOTIFY_SOCKET; the master
(default settings otherwise, logging to a file) is stopped with TERM and waited for.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def rollup(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1])
    out["USS"] = out["Private_Clean"] + out["Private_Dirty"]
    return out


def mappings(pid: int) -> dict[str, int]:
    """Private kB per mapping name; anonymous regions are named by their size."""
    per: dict[str, int] = collections.Counter()
    name = ""
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$", line)
            if m:
                start, end, perms, path = m.groups()
                size = (int(end, 16) - int(start, 16)) // 1024
                label = os.path.basename(path) if path else f"anon {size} kB"
                name = f"{label} {perms}" if path and not path.startswith("[") else label
                continue
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                per[name] += int(line.split()[1])
    return {k: v for k, v in per.items() if v}


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode(errors="replace")


def started(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rpartition(")")[2].split()[19])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(args: argparse.Namespace, run: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        path = os.path.join(tmp, "notify.sock")
        notify.bind(path)
        notify.settimeout(60)
        port = free_port()
        if args.app == "idle":
            app = f'worker = "idle:IdleWorker"\npython_path = ["{HERE / "apps"}"]\n'
        else:
            app = (
                f'worker = "http_worker:HttpWorker"\npython_path = ["{REPO / "examples"}"]\n'
                f'listen = ["127.0.0.1:{port}"]\n'
            )
        config = Path(tmp) / "app.toml"
        if args.no_ready:
            app += "worker_graceful_kill_timeout = 0.5\n"
        config.write_text(
            f'{app}workers = {args.workers}\nname = "wmem{os.getpid()}-{run}"\n'
            f'log = "{tmp}/svcengine.log"\n{args.extra}'
        )
        env = {**os.environ, "NOTIFY_SOCKET": path, "SVCBENCH_MARKER": ""}
        env.pop("SVCBENCH_MARKER")
        for item in args.env:
            k, _, v = item.partition("=")
            env[k] = v
        proc = subprocess.Popen(
            [sys.executable, "-m", "svcengine", "--config", str(config)],
            env=env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            if args.no_ready:  # workers paused before READY: wait for them to exist
                deadline = time.monotonic() + 60
                while len(children(proc.pid)) < args.workers + 1:
                    if time.monotonic() > deadline:
                        raise TimeoutError("workers did not come")
                    time.sleep(0.1)
            else:
                while b"READY=1" not in notify.recv(4096):
                    pass
            for _ in range(args.requests):
                url = f"http://127.0.0.1:{port}/"
                urllib.request.urlopen(url, timeout=10).read()
            time.sleep(args.settle)
            kids = children(proc.pid)
            molds = sorted((p for p in kids if " mold " in cmdline(p)), key=started)[:1]
            workers = [p for p in kids if p not in molds]
            result: dict[str, object] = {
                "workers": [rollup(p) for p in workers],
                "mold": [rollup(p) for p in molds],
                "master": rollup(proc.pid),
            }
            if args.maps and workers:
                result["maps"] = mappings(workers[0])
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
            notify.close()
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--app", choices=("http", "idle"), default="http")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--requests", type=int, default=0, help="HTTP requests before measuring")
    ap.add_argument("--settle", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--maps", action="store_true", help="per-mapping private kB of one worker")
    ap.add_argument("--no-ready", action="store_true", help="measure before READY=1")
    ap.add_argument("--extra", default="", help="more TOML lines for the config")
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE for the master")
    args = ap.parse_args()
    uss: list[float] = []
    pss: list[float] = []
    for run in range(args.runs):
        r = measure(args, run)
        ws = r["workers"]
        assert isinstance(ws, list)
        uss.append(statistics.mean(w["USS"] for w in ws))
        pss.append(statistics.mean(w["Pss"] for w in ws))
        mold = r["mold"]
        master = r["master"]
        assert isinstance(mold, list) and isinstance(master, dict)
        line = f"run {run}: worker USS {uss[-1]:.0f} kB, PSS {pss[-1]:.0f} kB"
        line += f" (each USS {[w['USS'] for w in ws]})"
        if mold:
            line += f"; mold USS {mold[0]['USS']} PSS {mold[0]['Pss']}"
        total = master["Pss"] + sum(w["Pss"] for w in ws) + sum(m["Pss"] for m in mold)
        line += f"; master PSS {master['Pss']} kB; total PSS {total / 1024:.1f} MiB"
        print(line if args.workers <= 8 else re.sub(r" \(each USS \[.*?\]\)", "", line), flush=True)
        maps = r.get("maps")
        if isinstance(maps, dict):
            for name, kb in sorted(maps.items(), key=lambda kv: -kv[1]):
                print(f"    {kb:6d} kB  {name}")
    if args.runs > 1:
        med_uss, med_pss = statistics.median(uss), statistics.median(pss)
        print(f"median worker USS {med_uss:.0f} kB, PSS {med_pss:.0f} kB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
