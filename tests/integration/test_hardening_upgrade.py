"""USR2 edges from the adversarial review (issue 12, items 4, 5, 15b, 18): real masters.

The new release is a worker module in the test's directory: while the file `gate` exists,
a new worker waits (unready) for a datagram on `gate-<pid>.sock`, which keeps an upgrade
in its window (the new master booting) for as long as a test needs, with no sleeps.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from harness import alive, children_of, wait_for, wait_gone
from test_upgrade import Load, Upgradable, free_port

RELEASE = """
import os, socket
import svcengine


class Gated(svcengine.Worker):
    ready_on_run = False

    def run(self):
        here = os.environ["SVC_TEST_DIR"]
        if os.path.exists(os.path.join(here, "gate")):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(os.path.join(here, f"gate-{os.getpid()}.sock"))
            self.logger.info("worker %d gated (pid %d)", self.worker_id, os.getpid())
            while not self.stopping and not self.wait_readable([sock]):
                pass
        if not self.stopping:
            self.ready()
        while not self.stopping:
            self.wait(3600)
"""

# Unicorn's classic before_fork recipe (unicorn's examples/unicorn.conf.rb), as a Python
# user migrating it writes it: each new worker sends TTOU to the old master, the last QUIT.
RECIPE = """
import os, signal


def before_fork(server, worker):
    old = server.config.pid_path + ".oldbin"
    try:
        pid = int(open(old).read())
    except (FileNotFoundError, ValueError):
        return
    if pid != os.getpid():
        last = worker.worker_id + 1 >= server.config.workers
        try:
            os.kill(pid, signal.SIGQUIT if last else signal.SIGTTOU)
        except ProcessLookupError:
            pass
"""


def _gated_service(service, tmp: Path, workers: int = 2, extra: str = ""):
    (tmp / "release.py").write_text(RELEASE)
    svc = service("release:Gated", workers, f'pid_path = "{tmp}/app.pid"\n{extra}', start=False)
    svc.start()
    svc.wait_ready()
    return svc


def _new_master(svc) -> int:
    m = svc.wait_log(r"upgrade: started a new master \(pid (\d+)\)", 15)
    return int(m.group(1))


def _gated(svc, n: int) -> list[int]:
    """Wait until n workers of the new release are gated; their pids."""

    def found() -> list[int] | None:
        pids = [int(p) for p in re.findall(r"gated \(pid (\d+)\)", svc.log_text())]
        return pids if len(pids) >= n else None

    return wait_for(found, 20, f"{n} gated workers")


def _open_gates(tmp: Path, pids: list[int]) -> None:
    (tmp / "gate").unlink(missing_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        for pid in pids:
            try:
                s.sendto(b"go", str(tmp / f"gate-{pid}.sock"))
            except (FileNotFoundError, ConnectionRefusedError):
                pass  # that worker has gone already


def _stop(pid: int) -> None:
    """Stop a master the test made (a new master is adopted by the test, the subreaper)."""
    if alive(pid):
        os.kill(pid, signal.SIGTERM)
        assert not wait_gone([pid], 30), f"master {pid} did not stop"


# --- item 4: USR2 with the pidfile gone -------------------------------------------------
def test_usr2_after_the_pidfile_was_removed_upgrades_without_it(service, tmp_path):
    svc = _gated_service(service, tmp_path)
    pid_path = tmp_path / "app.pid"
    pid_path.unlink()
    svc.kill(signal.SIGUSR2)
    ready = svc.notify.wait(
        lambda m: m.get("READY") == "1" and m.get("MAINPID") not in (None, str(svc.pid)),
        20,
        "READY=1 from the new master",
    )
    new = int(ready["MAINPID"])
    try:
        assert svc.wait_exit(20) == 0
        assert int(pid_path.read_text()) == new
        assert not (tmp_path / "app.pid.oldbin").exists()
    finally:
        _stop(new)


def test_rollback_with_oldbin_removed_serves_on_and_restores_the_pidfile(service, tmp_path):
    svc = _gated_service(service, tmp_path, extra="upgrade_timeout = 3\n")
    workers = svc.wait_workers(2)
    (tmp_path / "gate").touch()
    oldbin = tmp_path / "app.pid.oldbin"
    svc.kill(signal.SIGUSR2)
    new = _new_master(svc)
    wait_for(oldbin.exists, 10, ".oldbin")
    oldbin.unlink()
    svc.wait_log(r"upgrade failed: .*not ready within 3s", 20)
    assert not wait_gone([new], 10)
    assert svc.proc.poll() is None, "the old master died"
    assert svc.workers() == workers
    wait_for((tmp_path / "app.pid").exists, 5, "the pidfile back")
    assert int((tmp_path / "app.pid").read_text()) == svc.pid
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0
    assert not (tmp_path / "app.pid").exists()


# --- item 5: a stop during the upgrade window -----------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGQUIT])
def test_a_stop_during_the_upgrade_stops_old_and_new(service, tmp_path, sig):
    svc = _gated_service(service, tmp_path)
    (tmp_path / "gate").touch()
    svc.kill(signal.SIGUSR2)
    new = _new_master(svc)
    _gated(svc, 2)
    new_tree = {new} | children_of(new)
    svc.kill(sig)  # what `systemctl stop` / `ctl stop` / `ctl quit` send
    try:
        assert svc.wait_exit(30) == 0
        left = {p for p in new_tree if alive(p)}
        assert not left, f"still running after the old master exited: {left}"
        svc.notify.wait_key("STOPPING", 5, "1")  # the old master still speaks for the unit
        assert "stopping the new master" in svc.log_text()
    finally:
        _stop(new)


@pytest.mark.parametrize("command", ["stop", "quit"])
def test_ctl_stop_during_the_upgrade_stops_old_and_new(service, tmp_path, command):
    """The operator's own command, not a signal: over the control socket (the pidfile is
    `.oldbin` in the window), it must stop both masters and report the truth."""
    svc = _gated_service(service, tmp_path)
    (tmp_path / "gate").touch()
    svc.kill(signal.SIGUSR2)
    new = _new_master(svc)
    _gated(svc, 2)
    new_tree = {new} | children_of(new)
    try:
        r = subprocess.run(
            [sys.executable, "-m", "svcengine", "ctl", "--pid", str(tmp_path / "app.pid")]
            + ["--timeout", "30", command],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"master {svc.pid} exited" in r.stdout, r.stdout
        assert svc.wait_exit(30) == 0
        left = {p for p in new_tree if alive(p)}
        assert not left, f"still running after ctl {command} returned: {left}"
    finally:
        _stop(new)


def test_ctl_upgrade_reports_a_stop_that_ends_the_upgrade(service, tmp_path):
    """A stop right after the USR2 (before ctl could read the successor's pid from the
    status) ends both masters: ctl upgrade says so at once instead of waiting out --timeout."""
    svc = _gated_service(service, tmp_path)
    (tmp_path / "gate").touch()
    ctl = subprocess.Popen(
        [sys.executable, "-m", "svcengine", "ctl", "--pid", str(tmp_path / "app.pid")]
        + ["--timeout", "60", "upgrade"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    new = 0
    try:
        new = _new_master(svc)
        svc.kill(signal.SIGTERM)
        assert svc.wait_exit(30) == 0
        out, err = ctl.communicate(timeout=20)
        assert ctl.returncode == 1, out + err
        assert "upgrade abandoned" in err or "both exited" in err, err
    finally:
        if ctl.poll() is None:
            ctl.kill()
            ctl.wait()
        if new:
            _stop(new)


# --- item 15b: HUP to the new master before it is ready -------------------------------
def test_hup_to_the_new_master_before_ready_still_takes_over(service, tmp_path):
    svc = _gated_service(service, tmp_path)
    (tmp_path / "gate").touch()
    svc.kill(signal.SIGUSR2)
    new = _new_master(svc)
    gated = _gated(svc, 2)
    (tmp_path / "gate").unlink()
    svc.mark()
    os.kill(new, signal.SIGHUP)  # the new generation is not gated
    try:
        svc.notify.wait(
            lambda m: m.get("READY") == "1" and m.get("MAINPID") == str(new),
            20,
            "READY=1 MAINPID=new",
        )
        svc.wait_log(rf"upgrade: took over from pid {svc.pid}", 10)
        # not in charge yet: a RELOADING=1 would put the unit the old master serves in reload
        assert not any("RELOADING" in m for m in svc.notify.messages), svc.notify.messages
        assert svc.wait_exit(20) == 0
        assert int((tmp_path / "app.pid").read_text()) == new
    finally:
        _open_gates(tmp_path, gated)
        _stop(new)


# --- item 18 and the rollback's notifications ---------------------------------------------
def test_a_failed_new_master_says_nothing_that_stops_the_unit(service, tmp_path):
    """Under NotifyAccess=all a STOPPING=1 from a new master that fails to boot makes systemd
    stop the unit that the old master serves on."""
    svc = _gated_service(service, tmp_path)
    (tmp_path / "release.py").write_text("def broken(:\n")
    svc.kill(signal.SIGUSR2)
    svc.notify.wait(lambda m: "upgrade failed" in m.get("STATUS", ""), 30, "the rollback")
    assert svc.proc.poll() is None
    assert not any("STOPPING" in m for m in svc.notify.messages), svc.notify.messages
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


@pytest.fixture
def upgradable(tmp_path):
    """Daemonized services as in test_upgrade.py, stopped by the test or here."""
    made: list[Upgradable] = []

    def make(**kw) -> Upgradable:
        u = Upgradable(tmp_path, free_port(), **kw)
        made.append(u)
        return u

    yield make
    for u in made:
        if u.pid_path.exists():
            u.ctl("quit")


def _recipe_service(upgradable, workers: int = 4) -> Upgradable:
    u = upgradable(workers=workers, extra='hooks = "recipe"\n')
    (u.app_dir / "recipe.py").write_text(RECIPE)
    u.start()
    return u


class PidfileWatch:
    """Samples (a measurement, not a sync) whether the pidfile or its .oldbin exists."""

    def __init__(self, pid_path: Path) -> None:
        self.paths = (pid_path, pid_path.with_name(pid_path.name + ".oldbin"))
        self.gaps = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.wait(0.001):
            if not any(p.exists() for p in self.paths):
                self.gaps += 1

    def stop(self) -> int:
        self.done.set()
        self.thread.join()
        return self.gaps


def _port(u: Upgradable) -> int:
    return int(u.config.read_text().split('listen = ["127.0.0.1:')[1].split('"')[0])


def test_unicorn_recipe_upgrade_drops_nothing_and_keeps_a_pidfile(upgradable):
    u = _recipe_service(upgradable)
    old = u.pid
    old_tree = u.tree()
    load = Load(_port(u), clients=8, seconds=12).start()
    wait_for(lambda: load.ok >= 200, 10, "the load to get going", step=0.05)
    watch = PidfileWatch(u.pid_path)
    r = u.ctl("upgrade")
    assert not wait_gone(old_tree, 10)
    gaps = watch.stop()
    load.join()
    problems = []
    if r.returncode != 0:
        problems.append(f"ctl upgrade exited {r.returncode}: {r.stderr.strip()}")
    if load.failures:
        problems.append(f"{len(load.failures)} failed requests: {load.failures[:3]}")
    if gaps:
        problems.append(f"neither pidfile nor .oldbin existed in {gaps} samples")
    assert not problems, problems
    assert u.pid != old
    assert "before_fork recipe" in u.log()
    assert u.ctl("stop").returncode == 0


@pytest.mark.parametrize("signal_map", ["svcengine", "unicorn"])
def test_unicorn_recipe_with_a_broken_release_rolls_back(upgradable, signal_map):
    u = upgradable(workers=4, extra=f'hooks = "recipe"\nsignal_map = "{signal_map}"\n')
    (u.app_dir / "recipe.py").write_text(RECIPE)
    u.start()
    old = u.pid
    old_tree = u.tree()
    (u.app_dir / "http_worker.py").write_text("def broken(:\n")
    r = u.ctl("upgrade")
    assert r.returncode == 1 and "upgrade failed" in r.stderr, r.stderr
    assert u.pid == old and u.tree() == old_tree  # TTOU and QUIT from the recipe ignored
    assert u.ctl("status", "--check").returncode == 0
    assert "before_fork recipe" in u.log()
    assert u.ctl("stop").returncode == 0


def test_ctl_upgrade_judges_by_the_new_master_when_the_old_one_leaves_early(service, tmp_path):
    svc = _gated_service(service, tmp_path)
    (tmp_path / "gate").touch()
    ctl = subprocess.Popen(
        [sys.executable, "-m", "svcengine", "ctl", "--pid", str(tmp_path / "app.pid")]
        + ["--timeout", "30", "upgrade"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    new = 0
    try:
        new = _new_master(svc)
        gated = _gated(svc, 2)
        svc.kill(signal.SIGKILL)  # the old master leaves before the new one is ready
        svc.wait_exit()
        _open_gates(tmp_path, gated)
        out, err = ctl.communicate(timeout=40)
        assert ctl.returncode == 0, err
        assert f"replaced by {new}" in out
        # a stale .oldbin would send a Unicorn-habit `kill -QUIT $(cat app.pid.oldbin)` to
        # whatever process reuses that pid
        assert not (tmp_path / "app.pid.oldbin").exists()
    finally:
        if ctl.poll() is None:
            ctl.kill()
            ctl.wait()
        if new:
            _stop(new)


# A new master from an svcengine older than the hand-over channel: it hands over with the
# old master's graceful-stop signal; this one, started without the channel, does the same.
WITHOUT_CHANNEL = (
    "import os, sys\n"
    "os.close(int(os.environ.pop('SVCENGINE_UPGRADE_FD')))\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'svcengine', *sys.argv[1:]])\n"
)


def test_a_new_master_without_the_channel_hands_over_by_signal(service, tmp_path):
    (tmp_path / "release.py").write_text(RELEASE)
    (tmp_path / "without_channel.py").write_text(WITHOUT_CHANNEL)
    command = [sys.executable, str(tmp_path / "without_channel.py")]
    command += ["--config", str(tmp_path / "app.toml")]
    svc = service(
        "release:Gated",
        1,
        f'pid_path = "{tmp_path}/app.pid"\nupgrade_command = {json.dumps(command)}\n',
    )
    svc.wait_ready()
    svc.kill(signal.SIGUSR2)
    new = _new_master(svc)
    try:
        svc.wait_log(rf"took over from pid {svc.pid}; sending it SIGTERM", 20)
        assert svc.wait_exit(20) == 0
        assert int((tmp_path / "app.pid").read_text()) == new
        assert "before_fork recipe" not in svc.log_text()
    finally:
        _stop(new)
