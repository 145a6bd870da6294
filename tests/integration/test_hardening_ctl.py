"""The operator's side, hardened (issue 12): `svcengine ctl` means the same under every
signal_map, it trusts only the pidfile's lock holder and a control socket whose server
proves who it is, and a second instance never steals a live unix socket path."""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path

import pytest
from daemonkit import Daemon, daemon_factory, run_svcengine
from harness import Service, alive, wait_for, wait_gone

PRESETS = ["svcengine", "serverengine", "unicorn"]
NOBODY = pwd.getpwnam("nobody")
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
# what a process running as nobody can execute (the venv's may live in root's home)
SYSTEM_PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable


@pytest.fixture
def daemon(tmp_path):
    yield from daemon_factory(tmp_path, "hctl")


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


# --- item 7: ctl sends named commands; every command means the same under every preset ---


@pytest.mark.parametrize("preset", PRESETS)
def test_every_ctl_command_means_the_same_under_every_signal_map(daemon, preset):
    d = daemon(extra=f'signal_map = "{preset}"\n')
    assert d.start().returncode == 0
    first = d.pid
    r = d.ctl("status")
    assert r.returncode == 0 and "2/2 workers ready" in r.stdout, r.stdout + r.stderr

    assert d.ctl("scale", "3").returncode == 0
    wait_for(lambda: d.status()["status"] == "3/3 workers ready; 0 restarts", 15, "3 ready")

    # reopen-logs reopens and keeps the workers (serverengine's USR1 replaces them)
    workers = d.worker_pids()
    os.rename(d.log_path, d.tmp / "app.log.1")
    r = d.ctl("reopen-logs")
    assert r.returncode == 0, r.stderr
    d.wait_log("reopened log file")
    assert d.worker_pids() == workers
    assert "replacing workers" not in d.log() and "restart" not in d.log()

    # reload re-reads the config (workers = 2 undoes the scale) and replaces the workers
    # gracefully (serverengine's HUP restarts them at once and reads nothing)
    mark = len(d.log())
    assert d.ctl("reload").returncode == 0
    d.wait_log(r"reloading: config re-read", mark)
    wait_for(
        lambda: (
            (st := d.status())["phase"] == "running"
            and st["status"].startswith("2/2 workers ready")
            and not (d.worker_pids() & workers)
        ),
        15,
        "two new workers after reload",
    )

    r = d.ctl("dump")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: d.log().count("most recent call first") >= 2, 10, "stack dumps")

    # upgrade re-executes (serverengine's USR2 is a reload, and ctl waited 60 s for nothing)
    r = d.ctl("--timeout", "30", "upgrade", timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    second = d.pid
    assert second != first and f"replaced by {second}" in r.stdout
    assert not wait_gone({first}, 10)

    # stop is graceful (unicorn's TERM is a quick stop, which cuts in-flight work)
    mark = len(d.log())
    workers = d.worker_pids()
    r = d.ctl("stop")
    assert r.returncode == 0, r.stderr
    assert "graceful stop: stopping 2 worker(s)" in d.log()[mark:]
    assert not wait_gone(workers | {second}, 10)

    # pause stops the workers and keeps the master; a reload starts them again
    assert d.start().returncode == 0
    third = d.pid
    r = d.ctl("pause")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: d.status()["phase"] == "paused" and not d.worker_pids(), 15, "paused")
    assert d.ctl("reload").returncode == 0
    wait_for(lambda: d.status()["phase"] == "running", 15, "running again")

    # quit is a quick stop (unicorn's QUIT is graceful)
    mark = len(d.log())
    r = d.ctl("quit")
    assert r.returncode == 0, r.stderr
    assert "quick stop: stopping 2 worker(s)" in d.log()[mark:]
    assert not wait_gone({third}, 10)


def test_ctl_falls_back_to_a_signal_when_no_socket_answers(daemon, tmp_path):
    """A master whose control socket is elsewhere: ctl --pid finds none, signals the pid
    that holds the pidfile's lock, and says so."""
    d = daemon(extra=f'control_socket = "{tmp_path / "elsewhere.sock"}"\n')
    assert d.start().returncode == 0
    pid = d.pid
    r = d.ctl("stop")
    assert r.returncode == 0, r.stderr
    assert f"sent SIGTERM to master {pid}" in one_line(r.stderr)
    assert f"stop: master {pid} exited" in r.stdout
    assert not wait_gone({pid}, 10)


# --- item 11: the pidfile's lock holder, not its text ---------------------------------------


def test_ctl_refuses_a_pidfile_whose_text_is_not_its_lock_holder(daemon):
    d = daemon()
    assert d.start().returncode == 0
    master = d.pid
    victim = subprocess.Popen(["sleep", "120"])
    try:
        d.pid_path.write_text(f"{victim.pid}\n")  # same inode: the master keeps its lock
        r = d.ctl("stop", timeout=30)
        assert r.returncode == 69, r.stdout + r.stderr
        line = one_line(r.stderr)
        assert f"names pid {victim.pid}" in line and f"locked by pid {master}" in line, line
        assert victim.poll() is None, "ctl signalled the pid written in the file"
        assert alive(master)
    finally:
        victim.kill()
        victim.wait()
        d.pid_path.write_text(f"{master}\n")
    assert d.ctl("stop").returncode == 0


# --- item 12: the control socket's server must prove who it is ------------------------------

FAKE = (
    "import json, os, socket, sys\n"
    "path, answer = sys.argv[1], int(sys.argv[2])\n"
    "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
    "s.bind(path)\n"
    "s.listen(8)\n"
    "print('ready', flush=True)\n"
    "while True:\n"
    "    c, _ = s.accept()\n"
    "    c.recv(4096)\n"
    "    pid = answer or os.getpid()\n"
    "    try:\n"
    "        c.sendall(json.dumps({'ok': True, 'pid': pid, 'workers': 1}).encode() + b'\\n')\n"
    "    except OSError:\n"
    "        pass  # a ctl that refused us hung up before reading: it must not end this server\n"
    "    c.close()\n"
)


def _fake_server(path: Path, answer: int, **kw) -> subprocess.Popen:
    fake = subprocess.Popen(
        [SYSTEM_PYTHON, "-c", FAKE, str(path), str(answer)],
        stdout=subprocess.PIPE,
        text=True,
        **kw,
    )
    assert fake.stdout is not None and fake.stdout.readline() == "ready\n"
    return fake


def test_ctl_refuses_a_socket_that_answers_another_pid(tmp_path):
    victim = subprocess.Popen(["sleep", "120"])
    fake = _fake_server(tmp_path / "fake.ctl", victim.pid)
    try:
        for command in ("stop", "quit", "reload", "upgrade"):
            r = run_svcengine("ctl", "--socket", str(tmp_path / "fake.ctl"), command, timeout=30)
            assert r.returncode == 69, r.stdout + r.stderr
            line = one_line(r.stderr)
            assert f"served by pid {fake.pid}" in line and f"pid {victim.pid}" in line, line
            assert victim.poll() is None, f"ctl {command} signalled the pid a fake socket gave"
    finally:
        for p in (victim, fake):
            p.kill()
            p.wait()


@root_only
def test_ctl_refuses_a_socket_served_by_another_user(tmp_path):
    shared = Path(tempfile.mkdtemp(prefix="svc-hctl-"))  # root's, world-writable, like /tmp
    os.chmod(shared, 0o1777)
    fake = _fake_server(shared / "app.ctl", 0, user=NOBODY.pw_uid, group=NOBODY.pw_gid)
    try:
        r = run_svcengine("ctl", "--socket", str(shared / "app.ctl"), "stop", timeout=30)
        assert r.returncode == 69, r.stdout + r.stderr
        assert f"uid {NOBODY.pw_uid}" in one_line(r.stderr)
        assert fake.poll() is None, "ctl signalled a process of another user"
    finally:
        fake.kill()
        fake.wait()
        for p in shared.iterdir():
            p.unlink()
        shared.rmdir()


# --- item 14: a live unix socket path is never stolen ---------------------------------------


def test_a_second_instance_does_not_steal_a_live_unix_socket(tmp_path):
    path = tmp_path / "app.sock"
    a = Service(tmp_path, "apps:Idle", 1, f'listen = ["unix:{path}"]\n', [])
    (tmp_path / "b").mkdir()
    b = Service(tmp_path / "b", "apps:Idle", 1, f'listen = ["unix:{path}"]\n', [])
    try:
        a.start()
        a.wait_ready()
        inode = os.stat(path).st_ino
        b.start()
        code = b.wait_exit(20)
        assert code == 1, code
        line = one_line((tmp_path / "b" / "stderr.txt").read_text())
        assert f"cannot listen on unix:{path}" in line and "in use" in line, line
        assert os.stat(path).st_ino == inode
        with socket.socket(socket.AF_UNIX) as c:
            c.connect(str(path))  # a's socket still answers
        a.kill(signal.SIGTERM)
        assert a.wait_exit() == 0
        assert not path.exists()
    finally:
        a.cleanup()
        b.cleanup()


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_daemonized_starts_leave_the_winners_socket_live(daemon, tmp_path, round_):
    """The review saw the winner's socket dead in 3 of 5 runs of this: three rounds."""
    path = tmp_path / "app.sock"
    d = daemon(extra=f'listen = ["unix:{path}"]\n')
    results: list[subprocess.CompletedProcess] = []
    threads = [threading.Thread(target=lambda: results.append(d.start())) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.returncode for r in results)
    assert codes.count(0) == 1 and set(codes) <= {0, 1, 73}, [r.stderr for r in results]
    for r in results:
        if r.returncode:
            one_line(r.stderr)
    with socket.socket(socket.AF_UNIX) as c:
        c.connect(str(path))  # the winner's socket is the one at the path, and it is live
    pid = d.pid
    assert d.ctl("stop").returncode == 0
    assert not wait_gone({pid}, 10)
    assert not path.exists()


# --- the low ones ----------------------------------------------------------------------------


def test_ctl_rejects_a_bad_timeout_before_acting(daemon):
    d = daemon()
    assert d.start().returncode == 0
    pid = d.pid
    for bad in ("-1", "nan", "x"):
        r = d.ctl("--timeout", bad, "stop")
        assert r.returncode == 2, r.stderr
        assert "--timeout" in r.stderr.strip().splitlines()[-1] and "Traceback" not in r.stderr
    assert alive(pid) and d.status()["phase"] == "running"
    assert d.ctl("stop").returncode == 0


def test_two_unnamed_instances_do_not_share_a_control_socket(tmp_path):
    runtime = tmp_path / "rt"
    env = {"RUNTIME_DIRECTORY": str(runtime)}
    a = Service(tmp_path, "apps:Idle", 1, "", [])
    (tmp_path / "b").mkdir()
    b = Service(tmp_path / "b", "apps:Idle", 1, "", [])
    try:
        a.start(env)
        a.wait_ready()
        inode = os.stat(runtime / "control.sock").st_ino
        b.start(env)
        assert b.wait_exit(20) == 73
        line = one_line((tmp_path / "b" / "stderr.txt").read_text())
        assert f"already running: {runtime / 'control.sock'} is served by pid {a.pid}" in line
        assert os.stat(runtime / "control.sock").st_ino == inode
        r = run_svcengine("ctl", "--socket", str(runtime / "control.sock"), "stop")
        assert r.returncode == 0, r.stderr
        assert a.wait_exit() == 0
    finally:
        a.cleanup()
        b.cleanup()


@root_only
def test_ctl_name_finds_a_service_run_with_the_forking_units_layout(tmp_path):
    """svcengine-forking@.service runs `--daemonize --name %i --pid /run/svcengine/%i.pid`."""
    name = f"hctl-{uuid.uuid4().hex[:8]}"
    os.makedirs("/run/svcengine", exist_ok=True)
    pid_path = Path(f"/run/svcengine/{name}.pid")
    d = Daemon(tmp_path)
    try:
        r = run_svcengine(
            "--daemonize", "--name", name, "--config", str(d.config), "--pid", str(pid_path)
        )
        assert r.returncode == 0, r.stderr
        r = run_svcengine("ctl", "--name", name, "status")
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"({name})" in r.stdout
        pid = int(pid_path.read_text())
        assert run_svcengine("ctl", "--name", name, "stop").returncode == 0
        assert not wait_gone({pid}, 10)
    finally:
        if pid_path.exists():
            run_svcengine("ctl", "--pid", str(pid_path), "quit")


@root_only
def test_ctl_name_without_a_runtime_dir_says_what_it_looked_for():
    """A non-root user without XDG_RUNTIME_DIR: ctl runs in a forked child as nobody (the
    venv's interpreter may sit where nobody cannot exec it)."""
    from svcengine.cli import ctl

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            sys.stderr = open(w, "w", closefd=False)  # noqa: SIM115 (flushed below)
            os.setgid(NOBODY.pw_gid)
            os.setuid(NOBODY.pw_uid)
            os.environ.pop("XDG_RUNTIME_DIR", None)
            os.environ.pop("RUNTIME_DIRECTORY", None)
            code = ctl.main(["--name", "app", "status"])
        finally:
            sys.stderr.flush()
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        stderr = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 69, stderr
    line = one_line(stderr)
    assert "--name app" in line and "XDG_RUNTIME_DIR" in line, line


@root_only
def test_the_runtime_dir_the_master_made_is_removed_on_a_clean_exit(tmp_path):
    name = f"hctl-{uuid.uuid4().hex[:8]}"
    runtime = Path(f"/run/svcengine/{name}")
    svc = Service(tmp_path, "apps:Idle", 1, "", ["--name", name])
    try:
        svc.start({"RUNTIME_DIRECTORY": ""})  # not the harness's own: the /run/svcengine default
        svc.wait_ready()
        assert (runtime / "control.sock").exists()
        svc.kill(signal.SIGTERM)
        assert svc.wait_exit() == 0
        assert not runtime.exists()
    finally:
        svc.cleanup()
        for p in runtime.glob("*") if runtime.exists() else ():
            p.unlink()
        if runtime.exists():
            runtime.rmdir()
