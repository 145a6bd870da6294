"""Per-worker PSS with and without `preload`, svcengine only (Gunicorn's --preload is
the same idea). Run from the checkout: `python bench/pss.py` (prints a Markdown table).

PSS (proportional set size, /proc/PID/smaps_rollup) charges each shared page to
the processes sharing it, so the sum over master and workers is the real memory
the service uses. Readiness comes from the master's READY=1 on a NOTIFY_SOCKET;
every process started is stopped with TERM and waited for.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def pss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    raise RuntimeError(f"no Pss line for {pid}")


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def measure(preload: bool, workers: int, settle: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        path = os.path.join(tmp, "notify.sock")
        notify.bind(path)
        notify.settimeout(60)
        config = Path(tmp) / "app.toml"
        config.write_text(
            f'worker = "heavy:Heavy"\nworkers = {workers}\npython_path = ["{HERE / "apps"}"]\n'
            f'preload = {str(preload).lower()}\nlog_level = "warning"\n'
        )
        env = {**os.environ, "NOTIFY_SOCKET": path}
        proc = subprocess.Popen(
            # a name of its own: another unnamed svcengine on the host would refuse this one
            [sys.executable, "-m", "svcengine", "--config", str(config), "--name", "bench-pss"],
            env=env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            restore_signals=True,
            start_new_session=True,
        )
        try:
            while b"READY=1" not in notify.recv(4096):
                pass
            time.sleep(settle)  # let lazily touched pages settle before reading PSS
            kids = children(proc.pid)
            per_worker = [pss_kib(p) for p in kids]
            master = pss_kib(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
            notify.close()
    return {
        "master_mib": master / 1024,
        "worker_mib": sum(per_worker) / len(per_worker) / 1024,
        "total_mib": (master + sum(per_worker)) / 1024,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--settle", type=float, default=2.0)
    args = ap.parse_args()
    gc.collect()
    off = measure(False, args.workers, args.settle)
    on = measure(True, args.workers, args.settle)
    print(
        f"| svcengine, {args.workers} workers of bench/apps/heavy.py | preload off | preload on "
        "| on/off |"
    )
    print("| --- | --- | --- | --- |")
    for key, label in (
        ("worker_mib", "PSS per worker (MiB)"),
        ("master_mib", "PSS of the master (MiB)"),
        ("total_mib", "PSS, master + workers (MiB)"),
    ):
        print(f"| {label} | {off[key]:.1f} | {on[key]:.1f} | {on[key] / off[key]:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
