"""A daemonized svcengine (`--daemonize`, a pidfile, `svcengine ctl`) for the tests that
drive it as an operator would: test_daemon_ctl.py and test_hardening_ctl.py."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from harness import HERE, wait_for


def run_svcengine(
    *args: str, timeout: float = 60, python: str = sys.executable, **kw
) -> subprocess.CompletedProcess:
    """`python -m svcengine ARGS`, output captured; SVC_TEST_DIR is the cwd given (or /)."""
    kw.setdefault("env", {**os.environ, "SVC_TEST_DIR": str(kw.get("cwd") or "/")})
    return subprocess.run(
        [python, "-m", "svcengine", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        **kw,
    )


class Daemon:
    def __init__(
        self,
        tmp: Path,
        worker: str = "apps:Idle",
        workers: int = 2,
        extra: str = "",
        name: str = "dtest",
    ):
        self.tmp = tmp
        self.pid_path = tmp / "app.pid"
        self.log_path = tmp / "app.log"
        self.config = tmp / "app.toml"
        self.config.write_text(
            f'worker = "{worker}"\nworkers = {workers}\npython_path = ["{HERE}"]\n'
            f'pid_path = "{self.pid_path}"\nlog = "{self.log_path}"\nlog_level = "debug"\n'
            f'start_worker_delay_rand = 0.0\nname = "{name}"\n{extra}'
        )

    def start(self, *extra: str) -> subprocess.CompletedProcess:
        return run_svcengine("--daemonize", "--config", str(self.config), *extra, cwd=self.tmp)

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return run_svcengine("ctl", "--pid", str(self.pid_path), *args, timeout=timeout)

    @property
    def pid(self) -> int:
        return int(self.pid_path.read_text())

    def status(self) -> dict:
        r = self.ctl("status", "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def worker_pids(self) -> set[int]:
        return {w["pid"] for w in self.status()["workers"] if w["pid"]}

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def wait_log(self, pattern: str, since: int = 0, timeout: float = 15) -> re.Match:
        """The first match of `pattern` in the log after offset `since`, once there."""
        return wait_for(lambda: re.search(pattern, self.log()[since:], re.M), timeout, pattern)


def daemon_factory(tmp_path: Path, name: str):
    """The body of a `daemon` fixture: make(sub="", **kw) -> Daemon; each one still
    running at the end is told to quit."""
    made: list[Daemon] = []

    def make(sub: str = "", **kw) -> Daemon:
        where = tmp_path / sub if sub else tmp_path
        where.mkdir(exist_ok=True)
        d = Daemon(where, name=name, **kw)
        made.append(d)
        return d

    yield make
    for d in made:
        if d.pid_path.exists():
            d.ctl("quit")


__all__ = ["Daemon", "daemon_factory", "run_svcengine"]
