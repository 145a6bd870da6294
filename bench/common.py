"""What bench/run.py and bench/more.py share: paths, the log line, the machine, the venv's
versions, the process set-up and the Markdown table cells.

Standard library only, like the rest of bench/.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
APPS = BENCH / "apps"
EXAMPLES = REPO / "examples"
VENV = REPO / ".venv"
VPY = VENV / "bin" / "python"
MS = 1e6  # ns per ms
PR_SET_CHILD_SUBREAPER = 36
LOG_NAME = "bench"  # the log prefix: more.py sets "more"


def log(msg: str) -> None:
    print(f"[{LOG_NAME} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def add_wait_quiet(ap: argparse.ArgumentParser, text: str) -> None:
    """--wait-quiet S: how long the bench may wait for others' load to pass (procs.wait_quiet)."""
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="S", help=text)


def clean_env(**extra: str) -> dict[str, str]:
    """Our environment without what would make a peer think it is socket-activated, supervised
    or configured from outside, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LISTEN_", "NOTIFY_", "WATCHDOG_", "GUNICORN_", "UNICORN_"))
    }
    env.update(extra)
    return env


def prepare_process(*also_default: signal.Signals) -> None:
    """Reset the ignored dispositions a shell gave us (children inherit them across exec) and
    become a child subreaper, so orphaned workers and daemonized masters stay ours to reap."""
    for s in (
        signal.SIGQUIT,
        signal.SIGHUP,
        signal.SIGUSR1,
        signal.SIGUSR2,
        signal.SIGTTIN,
        signal.SIGTTOU,
        *also_default,
    ):
        if signal.getsignal(s) == signal.SIG_IGN:
            signal.signal(s, signal.SIG_DFL)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise SystemExit("prctl(PR_SET_CHILD_SUBREAPER) failed")


def ensure_venv(install: bool, commands: list[str]) -> None:
    """The project venv with each of ``commands`` (svcengine, editable; gunicorn from PyPI)."""
    if not VPY.exists():
        if not install:
            raise SystemExit(f"{VENV} missing: run ./dev test (or drop --no-install)")
        log(f"creating {VENV}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    for cmd in commands:
        if (VENV / "bin" / cmd).exists():
            continue
        if not install:
            raise SystemExit(f"{cmd} missing from .venv (drop --no-install)")
        log(f"installing {cmd} into .venv")
        what = ["-e", str(REPO)] if cmd == "svcengine" else [cmd]
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", *what], check=True)


def venv_versions(packages: list[str]) -> dict[str, str]:
    """The venv's Python and each package's version ("?" when it is not installed)."""
    info = {}
    r = subprocess.run(
        [str(VPY), "-c", "import sys; print(sys.version.split()[0])"],
        capture_output=True,
        text=True,
    )
    info["python"] = r.stdout.strip()
    for pkg in packages:
        r = subprocess.run(
            [str(VPY), "-c", f"import importlib.metadata as m; print(m.version({pkg!r}))"],
            capture_output=True,
            text=True,
        )
        info[pkg] = r.stdout.strip() or "?"
    return info


def git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)


def svcengine_commit(rev: str = "") -> subprocess.CompletedProcess[str]:
    """``%h %cd`` of the last commit to svcengine/ (up to ``rev``)."""
    return git("log", "-1", "--format=%h %cd", "--date=short", rev or "HEAD", "--", "svcengine")


def svcengine_dirty() -> bool:
    return bool(git("status", "--porcelain", "--", "svcengine").stdout.strip())


def machine() -> dict[str, str]:
    """CPU, memory, kernel and OS, for the report's header."""
    found = {"cpu": "?", "memory": "?", "os": "?"}
    wanted = (
        ("/proc/cpuinfo", "model name", "cpu", lambda v: v.split(":", 1)[1].strip()),
        ("/proc/meminfo", "MemTotal", "memory", lambda v: f"{int(v.split()[1]) // 1024} MiB"),
        ("/etc/os-release", "PRETTY_NAME=", "os", lambda v: v.split("=", 1)[1].strip().strip('"')),
    )
    for path, prefix, key, parse in wanted:
        with contextlib.suppress(OSError), open(path) as f:
            for line in f:
                if line.startswith(prefix):
                    found[key] = parse(line)
                    break
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        **found,
        "kernel": platform.release(),
    }


def byte_compile(python: Path, *dirs: Path) -> None:
    """Compile the peers' Python apps (and a svcengine snapshot) ahead, as pip compiles what
    it installs: under PYTHONDONTWRITEBYTECODE=1 every worker would compile them again."""
    subprocess.run([str(python), "-m", "compileall", "-q", *map(str, dirs)], check=True)


# ---------------------------------------------------------------------------
# Markdown table cells


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


def ratio(x: float | None, y: float | None, x_capped: bool = False, y_capped: bool = False) -> str:
    """x / y for the table; a side that hit its cap makes the ratio a bound (< or >)."""
    if x is None or y is None:
        return "n/a"
    if x_capped and y_capped:
        return "n/a"
    if y == 0:
        return "= (both 0)" if x == 0 else "∞"
    r = x / y
    s = f"{r:.3g}" if r < 1000 else f"{r:.0f}"
    if y_capped and not x_capped:
        return f"<{s}"
    if x_capped and not y_capped:
        return f">{s}"
    return s


def md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(r) + " |" for r in [head, ["---"] * len(head), *rows]]
