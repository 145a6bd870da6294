"""The four peers the benches compare: how each is started, stopped and hot-upgraded.

A ``Peer`` knows its command line and environment for a pool of N workers listening on a
unix socket (run.py) or a loopback TCP port (more.py), its graceful stop signal, and the
peer-specific steps of a hot upgrade by signal (more.py). The procedures that use them
are in run.py's figures and more.py's scenarios. Standard library only.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

from common import APPS, EXAMPLES, VENV
from procs import tail, wait_file_pid, wait_pidfiles

RUBY_HINT = "apt-get install ruby-serverengine unicorn"
# A unix socket's path, or a TCP port on 127.0.0.1.
Listen = Path | int


def tcp(listen: Listen) -> str | None:
    return f"127.0.0.1:{listen}" if isinstance(listen, int) else None


class Peer:
    name = "?"  # the table column
    label = "?"  # logs and errors
    tag = "?"  # directory names
    stop_signal = signal.SIGTERM  # the peer's graceful stop
    # Orphan trials all at once: the peer's workers notice a dead master only on a timer
    # (or never), so serial trials would each wait out the cap.
    orphans_concurrent = False
    notifies = True  # sends READY=1 to NOTIFY_SOCKET
    http_markers = True  # its app on a TCP port sends app-ready markers (bench/apps/marker.py)

    def argv_env(
        self, d: Path, workers: int, listen: Listen, pidfile: Path | None = None
    ) -> tuple[list[str], dict[str, str]]:
        """The command and the environment it adds, run in ``d`` (its logs go there)."""
        raise NotImplementedError

    # -- hot upgrade by signal (more.py): USR2, the new master's pid, retire the old --
    # The run's one-line account; names: old, new, ready_s, oldbin, promoted.
    upgrade_info = "USR2 → new master {new}, ready at +{ready_s:.2f}s; old {old}"

    def is_worker(self, pid: int) -> bool:
        """Whether a descendant of the master is one of its workers (not, e.g., a mold)."""
        return True

    def new_master(self, d: Path, pidfile: Path, old: int) -> int:
        raise NotImplementedError(f"{self.name}: no hot upgrade by signal")

    def oldbin_seen(self, pidfile: Path) -> bool | None:
        """Looked at once the new workers are ready, before the old master is retired."""
        return None

    def promoted(self, pidfile: Path, old: int, new: int) -> bool | None:
        """Looked at once the load is over: does the pidfile name the new master?"""
        return None


class Svcengine(Peer):
    """``src``: a byte-compiled snapshot of svcengine/ put first on PYTHONPATH (run.py)."""

    def __init__(self, pdeathsig: bool = True, src: Path | None = None) -> None:
        self.pdeathsig = pdeathsig
        self.src = src
        self.name = "svcengine"
        self.label = "svcengine" if pdeathsig else "svcengine (worker_pdeathsig = false)"
        self.tag = "svc" if pdeathsig else "svc-nopds"
        self.http_markers = False  # examples/http_worker.py as it is

    @staticmethod
    def config(path: Path, **settings: object) -> Path:
        """Write ``key = value`` lines (values as JSON, which TOML reads the same)."""
        path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))
        return path

    def argv(self, *args: str | Path | int) -> list[str]:
        return [str(VENV / "bin" / "svcengine"), *map(str, args)]

    def env(self) -> dict[str, str]:
        return {"PYTHONPATH": str(self.src)} if self.src else {}

    def argv_env(
        self, d: Path, workers: int, listen: Listen, pidfile: Path | None = None
    ) -> tuple[list[str], dict[str, str]]:
        """A unix socket (run.py's timed figures): the idle pool of bench/apps/idle.py, the path
        unused. A TCP port: examples/http_worker.py with svcengine's defaults, as its docstring
        runs it: the class, the worker count and the listen address; nothing else but the
        service name (the run directory and titles) and, on PYTHONPATH, examples/ (run.py's
        snapshot of it with ``src``). Its workers send no markers: READY=1 says they are up."""
        if isinstance(listen, int):
            argv = self.argv("--name", "bench", "--listen", tcp(listen), "--workers", workers)
            examples = self.src / "examples" if self.src else EXAMPLES
            path = [*self.env().values(), str(examples)]
            return [*argv, "http_worker:HttpWorker"], {"PYTHONPATH": os.pathsep.join(path)}
        cfg = self.config(
            d / "svcengine.toml",
            worker="idle:IdleWorker",
            workers=workers,
            python_path=[str(APPS)],
            worker_pdeathsig=self.pdeathsig,
        )
        argv = self.argv(
            "--foreground", "--config", cfg, "--name", "bench", "--log", d / "svcengine.log"
        )
        return argv, self.env()

    def is_worker(self, pid: int) -> bool:
        """Workers are titled `svcengine worker[N] NAME`; another process of the pool (issue
        14's mold, `svcengine mold ...`) counts with the master."""
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return b"worker" in f.read()
        except OSError:
            return True


class Gunicorn(Peer):
    name = label = "gunicorn"
    tag = "gun"
    orphans_concurrent = True  # sync workers check their parent every timeout / 2 = 15 s
    upgrade_info = (
        "USR2 → new master {new} with 4 workers booted at +{ready_s:.2f}s; "
        "TERM old {old}; pidfile promoted: {promoted}"
    )

    def __init__(self, extra_args: str = "") -> None:
        self.extra_args = extra_args  # run.py's --gunicorn-args

    def argv_env(
        self, d: Path, workers: int, listen: Listen, pidfile: Path | None = None
    ) -> tuple[list[str], dict[str, str]]:
        argv = [
            str(VENV / "bin" / "gunicorn"),
            *shlex.split(self.extra_args),
            "--config",
            str(APPS / "gunicorn_conf.py"),
            "--workers",
            str(workers),
            "--worker-class",
            "sync",
            "--bind",
            tcp(listen) or f"unix:{listen}",
            # default on, default path shared by all instances: give each its own
            "--control-socket",
            str(d / "ctl.sock"),
            "--pythonpath",
            str(APPS),
            "--error-logfile",
            str(d / "gunicorn.log"),
        ]
        if pidfile is not None:
            argv += ["--pid", str(pidfile)]
        return [*argv, "hello:app"], {}

    def new_master(self, d: Path, pidfile: Path, old: int) -> int:
        # gunicorn 2x: the new master writes PIDFILE.2 (older ones renamed the old
        # pidfile to PIDFILE.oldbin); take whichever names a new pid first.
        try:
            return wait_pidfiles([pidfile.with_name(pidfile.name + ".2"), pidfile], 60, old)
        except RuntimeError:
            logs = " | ".join(tail(d)) or f"(no logs in {d})"
            raise RuntimeError(f"gunicorn: no new master pidfile within 60s: {logs}") from None

    def promoted(self, pidfile: Path, old: int, new: int) -> bool | None:
        return wait_file_pid(pidfile, 5.0, not_pid=old) == new


class ServerEngine(Peer):
    """bench/apps/serverengine_hello.rb: process workers, no supervisor process, so the
    launched ruby is the server that forks the workers."""

    name = label = "serverengine"
    tag = "se"
    notifies = False
    # A worker keeps the read end of its own heartbeat pipe: its writes never fail once the
    # server is gone, so orphans live on (docs/architecture.md, "ServerEngine's orphan bug").
    orphans_concurrent = True

    def argv_env(
        self, d: Path, workers: int, listen: Listen, pidfile: Path | None = None
    ) -> tuple[list[str], dict[str, str]]:
        env = {"SVCBENCH_WORKERS": str(workers)}
        if isinstance(listen, int):
            env["SVCBENCH_PORT"] = str(listen)  # logs to stderr (output.log)
        else:
            env["SVCBENCH_UNIX"] = str(listen)
            env["SVCBENCH_LOG"] = str(d / "serverengine.log")
        return [shutil.which("ruby") or "ruby", str(APPS / "serverengine_hello.rb")], env


class Unicorn(Peer):
    """bench/apps/hello.ru under bench/apps/unicorn_conf.rb; logs to stderr (output.log)."""

    name = label = "unicorn"
    tag = "uni"
    notifies = False
    stop_signal = signal.SIGQUIT  # TERM is Unicorn's quick shutdown
    upgrade_info = (
        "USR2 → new master {new} with 4 workers ready at +{ready_s:.2f}s "
        "(.oldbin seen: {oldbin}); QUIT old {old}"
    )

    def argv_env(
        self, d: Path, workers: int, listen: Listen, pidfile: Path | None = None
    ) -> tuple[list[str], dict[str, str]]:
        argv = [
            shutil.which("unicorn") or "unicorn",
            "-E",
            "none",  # no development middleware (request logging, lint)
            "-c",
            str(APPS / "unicorn_conf.rb"),
            "-l",
            tcp(listen) or str(listen),
            str(APPS / "hello.ru"),
        ]
        env = {"SVCBENCH_WORKERS": str(workers)}
        if pidfile is not None:
            env["SVCBENCH_PIDFILE"] = str(pidfile)
        return argv, env

    def new_master(self, d: Path, pidfile: Path, old: int) -> int:
        return wait_file_pid(pidfile, 60, not_pid=old)

    def oldbin_seen(self, pidfile: Path) -> bool | None:
        return pidfile.with_name(pidfile.name + ".oldbin").exists()


PEERS = {
    "svcengine": Svcengine,
    "gunicorn": Gunicorn,
    "serverengine": ServerEngine,
    "unicorn": Unicorn,
}
RUBY_PEERS = ("serverengine", "unicorn")


def ruby_missing() -> str:
    """Why the Ruby peers (Debian's ruby-serverengine, unicorn) can't run; "" when they can."""
    ruby = shutil.which("ruby")
    if not ruby:
        return "no `ruby` command"
    r = subprocess.run(
        [ruby, "-e", 'require "serverengine"'],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=30,
    )
    if r.returncode:
        return "`ruby -e 'require \"serverengine\"'` fails"
    if not shutil.which("unicorn"):
        return "no `unicorn` command"
    return ""


def ruby_versions() -> dict[str, str]:
    r = subprocess.run(
        [
            shutil.which("ruby") or "ruby",
            "-e",
            'require "serverengine"; require "unicorn"; '
            'print RUBY_VERSION, " ", ServerEngine::VERSION, " ", Unicorn::Const::UNICORN_VERSION',
        ],
        capture_output=True,
        text=True,
    )
    parts = r.stdout.split()
    if len(parts) != 3:
        return {}
    return {"ruby": parts[0], "serverengine": parts[1], "unicorn": parts[2]}


def ruby_skipped(why: str) -> str:
    """The line saying why the Ruby peers are skipped (``why``: ruby_missing())."""
    return f"Ruby peers (ServerEngine, Unicorn) skipped: {why}; to include them: {RUBY_HINT}"
