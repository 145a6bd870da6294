"""--daemonize, the pidfile and `svcengine ctl`, on real processes."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from daemonkit import daemon_factory
from harness import children_of, wait_for, wait_gone

NOBODY = pwd.getpwnam("nobody")
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.fixture
def daemon(tmp_path):
    yield from daemon_factory(tmp_path, "dtest")


def _stat_fields(pid: int) -> list[str]:
    data = open(f"/proc/{pid}/stat").read()
    return data[data.rfind(")") + 2 :].split()


def test_daemonize_returns_after_ready_and_detaches(daemon):
    d = daemon(workers=3)
    r = d.start()
    assert r.returncode == 0, r.stderr
    # the launcher has returned: every worker is already ready
    st = d.status()
    assert st["status"] == "3/3 workers ready; 0 restarts" and st["healthy"]
    pid = d.pid
    assert d.pid_path.read_text() == f"{pid}\n"
    fields = _stat_fields(pid)
    ppid, sid, tty_nr = int(fields[1]), int(fields[3]), int(fields[4])
    assert ppid in (1, os.getpid())  # init, or this test process as subreaper
    assert sid != os.getsid(0) and sid != pid  # a new session, and not its leader
    assert tty_nr == 0  # no controlling terminal
    assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
    assert os.readlink(f"/proc/{pid}/fd/2") == str(d.log_path)
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    workers = d.worker_pids()
    r = d.ctl("stop")
    assert r.returncode == 0, r.stderr
    assert "exited after" in r.stdout
    assert not wait_gone(workers | {pid}, 5)
    assert not d.pid_path.exists()


def test_broken_config_fails_the_launcher_and_leaves_nothing(daemon):
    d = daemon(extra="workers = 'x'\n")
    r = d.start()
    assert r.returncode == 78
    assert "Cannot overwrite a value" in r.stderr or "key 'workers'" in r.stderr
    assert not d.pid_path.exists()


def test_worker_boot_failure_reaches_the_launcher(daemon):
    before = children_of(os.getpid())  # the session's own (a broker of tests/amqp...)
    d = daemon(worker="apps:BrokenImport")
    r = d.start()
    assert r.returncode == 1
    assert (
        "worker 0 failed to boot: ImportError: this worker cannot be built" in r.stderr
        or "failed to boot" in r.stderr
    ), r.stderr
    wait_for(lambda: not d.pid_path.exists(), 5, "pidfile removed")
    # nothing of the daemon is left: adopted orphans would be our children (the master
    # removes its pidfile a moment before it exits)
    assert not wait_gone(children_of(os.getpid()) - before, 5)


def test_two_concurrent_starts_exactly_one_wins(daemon):
    d = daemon()
    results: list[subprocess.CompletedProcess] = []
    threads = [threading.Thread(target=lambda: results.append(d.start())) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.returncode for r in results)
    assert codes == [0, 73], [r.stderr for r in results]
    loser = next(r for r in results if r.returncode == 73)
    assert f"locked by pid {d.pid}" in loser.stderr
    assert d.ctl("stop").returncode == 0


def test_second_start_names_the_running_pid(daemon):
    d = daemon()
    assert d.start().returncode == 0
    r = d.start()
    assert r.returncode == 73
    assert f"already running: {d.pid_path} is locked by pid {d.pid}" in r.stderr
    assert d.ctl("stop").returncode == 0


def test_stale_pidfile_is_replaced(daemon):
    dead = subprocess.Popen(["true"])
    dead.wait()
    d = daemon()
    d.pid_path.write_text(f"{dead.pid}\n")
    assert d.start().returncode == 0
    assert d.pid != dead.pid
    assert f"replacing stale pidfile {d.pid_path} (pid {dead.pid}" in d.log()
    assert d.ctl("stop").returncode == 0


def test_symlinked_pidfile_is_refused(daemon, tmp_path):
    d = daemon()
    (tmp_path / "elsewhere").write_text("")
    d.pid_path.symlink_to(tmp_path / "elsewhere")
    r = d.start()
    assert r.returncode == 1
    assert "is a symbolic link" in r.stderr
    assert (tmp_path / "elsewhere").read_text() == ""


def test_ctl_commands_act(daemon):
    d = daemon(workers=2)
    assert d.start().returncode == 0
    r = d.ctl("status")
    assert r.returncode == 0 and "ID  PID" in r.stdout and "2/2 workers ready" in r.stdout
    assert d.ctl("status", "--check").returncode == 0
    old = d.worker_pids()
    assert d.ctl("scale", "4").returncode == 0
    wait_for(lambda: d.status()["status"] == "4/4 workers ready; 0 restarts", 10, "4 ready")
    assert d.ctl("scale", "-1").returncode == 0
    wait_for(lambda: d.status()["status"] == "3/3 workers ready; 0 restarts", 10, "3 ready")
    assert d.ctl("scale", "-9").returncode == 1
    assert d.ctl("reload").returncode == 0
    wait_for(
        lambda: d.status()["phase"] == "running" and not (d.worker_pids() & old),
        10,
        "new workers after reload",
    )
    os.rename(d.log_path, d.tmp / "app.log.1")
    assert d.ctl("reopen-logs").returncode == 0
    wait_for(lambda: "reopened log file" in d.log(), 5, "log reopened")
    assert d.ctl("dump").returncode == 0
    wait_for(lambda: d.log().count("most recent call first") >= 3, 5, "stack dumps")
    pid, workers = d.pid, d.worker_pids()
    assert d.ctl("quit").returncode == 0
    assert not wait_gone(workers | {pid}, 5)
    assert d.ctl("status").returncode == 69


def test_status_check_fails_for_a_crash_looping_pool(daemon):
    d = daemon(
        worker="apps:Idle",
        workers=1,
        extra="worker_restart_backoff_min = 0.05\nworker_restart_backoff_max = 0.1\n",
    )
    assert d.start().returncode == 0
    (wid,) = d.worker_pids()
    d.config.write_text(d.config.read_text().replace("apps:Idle", "apps:ExitsAtOnce"))
    assert d.ctl("reload").returncode == 0  # the new generation exits at once, in a loop
    wait_for(lambda: d.ctl("status", "--check").returncode == 1, 10, "unhealthy")
    assert d.ctl("stop").returncode == 0


def _connect_as(uid: int, path: str) -> str:
    """Connect from a child that switched to `uid`; return what it saw."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(NOBODY.pw_gid)
            os.setuid(uid)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
                try:
                    s.sendall(b'{"cmd": "status"}\n')
                except (BrokenPipeError, ConnectionResetError):
                    pass  # a refused uid is answered and closed at once: the answer is there
                out = s.recv(4096).decode()
            except OSError as exc:
                out = f"error: {exc.strerror}"
            os.write(w, out.encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 4096):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return data.decode()


@root_only
def test_control_socket_refuses_another_uid(daemon):
    reachable = Path(tempfile.mkdtemp(prefix="svc-ctl-"))  # pytest's tmp is 0700: nobody can't
    os.chmod(reachable, 0o755)
    ctl_path = str(reachable / "app.ctl")
    d = daemon(extra=f'control_socket = "{ctl_path}"\n')
    assert d.start().returncode == 0
    assert os.stat(ctl_path).st_mode & 0o777 == 0o600
    assert "Permission denied" in _connect_as(NOBODY.pw_uid, ctl_path)
    os.chmod(ctl_path, 0o666)  # past the file mode, SO_PEERCRED still says no
    reply = _connect_as(NOBODY.pw_uid, ctl_path)
    assert f"uid {NOBODY.pw_uid} is not allowed" in reply
    assert "refused a client with uid" in d.log()
    r = subprocess.run(
        [sys.executable, "-m", "svcengine", "ctl", "--socket", ctl_path, "stop"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    shutil.rmtree(reachable)


@root_only
def test_privilege_drop_in_workers_rearms_pdeathsig(daemon):
    d = daemon(worker="apps:ReportsIdentity", extra='chuser = "nobody"\nchumask = 0o027\n')
    assert d.start().returncode == 0
    wait_for(lambda: d.log().count("uid=") == 2, 5, "workers report identity")
    assert f"uid={NOBODY.pw_uid} gid={NOBODY.pw_gid} pdeathsig={int(signal.SIGKILL)}" in d.log()
    for pid in d.worker_pids():
        status = open(f"/proc/{pid}/status").read()
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        assert uid_line.split()[1:] == [str(NOBODY.pw_uid)] * 4
    master_status = open(f"/proc/{d.pid}/status").read()
    assert "Uid:\t0\t0\t0\t0" in master_status
    assert d.ctl("stop").returncode == 0


@pytest.mark.skipif(shutil.which("start-stop-daemon") is None, reason="no start-stop-daemon")
def test_start_stop_daemon_stops_it_by_pidfile(daemon):
    d = daemon()
    assert d.start().returncode == 0
    pid, workers = d.pid, d.worker_pids()
    # the daemon was adopted by this test process (a subreaper): reap it when it exits, as
    # init would, or start-stop-daemon sees a zombie that "refuses to die"
    reaper = threading.Thread(target=os.waitpid, args=(pid, 0))
    reaper.start()
    r = subprocess.run(
        ["start-stop-daemon", "--stop", "--pidfile", str(d.pid_path), "--retry", "TERM/10/KILL/5"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    reaper.join(10)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not wait_gone(workers | {pid}, 5)
    assert "graceful stop" in d.log() and "master exits 0" in d.log()


def test_an_idle_master_turns_its_loop_only_for_events(daemon):
    """Loop turns between two status calls: back to back, then 2 s apart. The
    control socket is the only event in both cases, so the counts must match: no
    timer fires while nothing happens (none is configured)."""
    d = daemon(workers=4)
    assert d.start().returncode == 0
    a = d.status()["loop_turns"]
    b = d.status()["loop_turns"]
    time.sleep(2.0)  # not a sync: the idle interval being measured
    c = d.status()["loop_turns"]
    assert c - b == b - a, (a, b, c)
    assert d.ctl("stop").returncode == 0
