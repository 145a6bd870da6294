"""USR2 upgrades under load: nothing refused, nothing lost, nothing left behind."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from harness import REPO, alive, wait_for, wait_gone


class Load:
    """N client threads, a new connection per request, for a bounded time."""

    def __init__(self, port: int, clients: int = 8, seconds: float = 20.0) -> None:
        self.port = port
        self.clients = clients
        self.until = time.monotonic() + seconds
        self.ok = 0
        self.failures: list[str] = []
        self.pids: set[str] = set()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client) for _ in range(clients)]

    def start(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def _client(self) -> None:
        while time.monotonic() < self.until:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("GET", "/")
                resp = conn.getresponse()
                body = resp.read().decode()
                conn.close()
                with self.lock:
                    if resp.status == 200:
                        self.ok += 1
                        self.pids.add(body.rsplit("pid ", 1)[-1].rstrip(")\n"))
                    else:
                        self.failures.append(f"HTTP {resp.status}")
            except (OSError, http.client.HTTPException) as exc:
                with self.lock:
                    self.failures.append(f"{type(exc).__name__}: {exc}")

    def join(self) -> None:
        for t in self.threads:
            t.join()


class Upgradable:
    """A daemonized HTTP service whose worker module lives in a directory we can edit."""

    def __init__(self, tmp: Path, port: int, workers: int = 4, extra: str = "") -> None:
        self.tmp = tmp
        self.app_dir = tmp / "app"
        self.app_dir.mkdir()
        shutil.copy(REPO / "examples" / "http_worker.py", self.app_dir / "http_worker.py")
        self.pid_path = tmp / "app.pid"
        self.log_path = tmp / "app.log"
        self.config = tmp / "app.toml"
        self.config.write_text(
            f'worker = "http_worker:HttpWorker"\nworkers = {workers}\n'
            f'listen = ["127.0.0.1:{port}"]\npython_path = ["{self.app_dir}"]\n'
            f'pid_path = "{self.pid_path}"\nlog = "{self.log_path}"\nname = "up"\n'
            f"start_worker_delay_rand = 0.0\n{extra}"
        )

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "svcengine", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            cwd=self.tmp,
        )

    def start(self) -> None:
        r = self.run("--daemonize", "--config", str(self.config))
        assert r.returncode == 0, r.stderr

    def ctl(self, *args: str) -> subprocess.CompletedProcess:
        return self.run("ctl", "--pid", str(self.pid_path), *args, timeout=90)

    @property
    def pid(self) -> int:
        return int(self.pid_path.read_text())

    def tree(self) -> set[int]:
        from harness import children_of

        return {self.pid} | children_of(self.pid)

    def log(self) -> str:
        return self.log_path.read_text()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def upgradable(tmp_path):
    made: list[Upgradable] = []

    def make(**kw) -> Upgradable:
        u = Upgradable(tmp_path, free_port(), **kw)
        made.append(u)
        return u

    yield make
    for u in made:
        if u.pid_path.exists():
            u.ctl("quit")


def test_upgrade_under_load_loses_nothing(upgradable):
    u = upgradable(workers=4)
    u.start()
    old_tree = u.tree()
    old = u.pid
    load = Load(_port(u), clients=8, seconds=20).start()
    wait_for(lambda: load.ok >= 200, 10, "the load to get going", step=0.05)
    r = u.ctl("upgrade")
    assert r.returncode == 0, r.stderr
    assert f"master {old} replaced by" in r.stdout
    load.join()
    assert load.failures == [], load.failures[:5]
    assert load.ok > 1000
    new = u.pid
    assert new != old and alive(new)
    assert not (tmp := u.pid_path.with_name("app.pid.oldbin")).exists(), tmp
    assert not wait_gone(old_tree, 5), "the old master or its workers are still running"
    served_by = {int(p) for p in load.pids}
    assert served_by & (u.tree() - {new}), "the new workers never served"
    assert "upgrade: took over from pid" in u.log()
    assert u.ctl("stop").returncode == 0


def _port(u: Upgradable) -> int:
    text = u.config.read_text()
    return int(text.split('listen = ["127.0.0.1:')[1].split('"')[0])


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_ten_upgrades_grow_nothing(upgradable):
    u = upgradable(workers=2)
    u.start()
    wait_for(lambda: len(u.tree()) == 4, 5, "master, its mold and 2 workers")
    procs = len(u.tree())
    # the baseline is a master made by an upgrade (the first one was made by the launcher)
    assert u.ctl("upgrade").returncode == 0
    fds = _fds(u.pid)
    for i in range(10):
        old_tree = u.tree()
        r = u.ctl("upgrade")
        assert r.returncode == 0, f"upgrade {i}: {r.stderr}"
        assert not wait_gone(old_tree, 5)
    wait_for(lambda: len(u.tree()) == procs, 5, "the pool after ten upgrades")
    assert _fds(u.pid) == fds
    assert u.ctl("stop").returncode == 0


def test_broken_code_rolls_back_and_serves_on(upgradable):
    u = upgradable(workers=2)
    u.start()
    old = u.pid
    old_tree = u.tree()
    load = Load(_port(u), clients=4, seconds=6).start()
    wait_for(lambda: load.ok >= 50, 10, "the load to get going", step=0.05)
    (u.app_dir / "http_worker.py").write_text("def broken(:\n")  # a syntax error
    r = u.ctl("upgrade")
    assert r.returncode == 1
    assert "upgrade failed" in r.stderr and "failed to boot" in u.log()
    load.join()
    assert load.failures == [], load.failures[:5]
    assert u.pid == old and u.tree() == old_tree
    assert not u.pid_path.with_name("app.pid.oldbin").exists()
    assert "upgrade failed: new master (pid" in u.log()
    st = u.ctl("status", "--check")
    assert st.returncode == 0, st.stdout
    assert u.ctl("stop").returncode == 0


def _never_ready(u: Upgradable) -> None:
    """From now on the app's workers never report ready: an upgrade to it can only time out."""
    src = (u.app_dir / "http_worker.py").read_text()
    (u.app_dir / "http_worker.py").write_text(
        src.replace(
            "    request_timeout = 10.0\n", "    request_timeout = 10.0\n    ready_on_run = False\n"
        )
    )


def test_upgrade_that_never_gets_ready_times_out(upgradable):
    u = upgradable(workers=1, extra="upgrade_timeout = 1.5\n")
    u.start()
    old = u.pid
    _never_ready(u)
    r = u.ctl("upgrade")
    assert r.returncode == 1 and "not ready within 1.5s" in r.stderr
    assert u.pid == old
    assert u.ctl("stop").returncode == 0


def test_a_subreaper_master_does_not_adopt_its_new_master(upgradable):
    """Under systemd the new master must be systemd's child (else its MAINPID is "alien" and
    never waited for on stop); a subreaper old master would have adopted it."""
    u = upgradable(workers=1, extra="subreaper = true\nupgrade_timeout = 5\n")
    u.start()
    old = u.pid
    _never_ready(u)  # keeps the upgrade in progress long enough to look at it
    os.kill(old, signal.SIGUSR2)

    def upgrade() -> dict:
        return json.loads(u.ctl("status", "--json").stdout).get("upgrade") or {}

    new = wait_for(lambda: upgrade().get("pid"), 5, "the new master")
    # the nearest subreaper above the old master is this test process (conftest)
    assert _ppid(new) == os.getpid() != old
    wait_for(lambda: upgrade().get("state") == "failed", 15, "the upgrade to time out")
    assert not alive(new)
    assert u.pid == old and "child subreaper" in u.log()
    assert u.ctl("stop").returncode == 0


def _ppid(pid: int) -> int:
    stat = open(f"/proc/{pid}/stat").read()
    return int(stat.rsplit(")", 1)[1].split()[1])
