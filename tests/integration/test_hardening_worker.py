"""Issue 12, the worker side: SIGPIPE, the log file, workers' own children, run()'s end.

Every test runs real masters and workers and waits for events (a notify message,
a log line, a pidfd) up to a deadline.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import termios
from pathlib import Path

import pytest
from clients import early_closing_clients, get
from harness import HERE, REPO, alive, wait_for, wait_gone

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


# --- item 1: SIGPIPE -------------------------------------------------------------------------
@pytest.mark.parametrize("worker_type", ["process", "spawn", "thread", "embedded"])
def test_a_closed_peer_is_a_broken_pipe_error_not_a_dead_worker(service, worker_type):
    svc = service(
        worker="apps_hardening_worker:PipeProbe",
        workers=1,
        config=f'worker_type = "{worker_type}"\n',
    )
    m = svc.wait_log(r"worker 0 pipe probe: .*|worker 0 \(pid \d+\) killed by \w+", 15)
    assert "pipe probe: BrokenPipeError (SIGPIPE " in m.group(0), m.group(0)
    if worker_type in ("process", "spawn"):  # a process of its own: CPython's disposition
        assert m.group(0).endswith("(SIGPIPE SIG_IGN)"), m.group(0)
    svc.wait_ready()
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


def _http_service(service, workers: int = 2, extra: str = ""):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(256)
    port = listener.getsockname()[1]
    svc = service(worker="http_worker:HttpWorker", workers=workers, config=extra, start=False)
    svc.pass_fds = (listener.fileno(),)
    svc.start()
    listener.close()  # only the service holds it now
    return svc, port


def test_http_example_survives_a_thousand_early_closing_clients(service):
    svc, port = _http_service(service)
    svc.wait_ready()
    workers = svc.wait_workers(2)

    def deaths() -> list[str]:
        return re.findall(r"worker \d+ \(pid \d+\) (?:killed|exited).*", svc.log_text())

    def no_worker_died(done: int) -> None:
        assert not deaths(), f"after {done} early-closing clients: {deaths()[:3]}"
        assert svc.workers() == workers, f"workers replaced after {done} clients"

    try:
        answered = early_closing_clients("127.0.0.1", port, n=1000, after_batch=no_worker_died)
    except OSError as exc:
        pytest.fail(f"an ordinary request failed ({exc!r}); worker deaths: {deaths()[:3]}")
    assert answered == 20
    assert get("127.0.0.1", port).startswith("hello from worker")
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


# --- item 8 and the low one: the log file -------------------------------------------------------
def _one_line_start_error(svc, timeout: float = 15.0) -> tuple[int, str]:
    try:
        code = svc.wait_exit(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {timeout}s later: the start was not refused")
    text = (svc.tmp / "stderr.txt").read_text()
    lines = text.splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{text}"
    return code, lines[0]


def test_log_in_a_missing_directory_is_a_one_line_config_error(service, tmp_path):
    missing = tmp_path / "nowhere" / "app.log"
    svc = service(workers=1, config=f'log = "{missing}"\n', log_to_file=False)
    code, line = _one_line_start_error(svc)
    assert code == 78
    assert line.startswith("svcengine: config error: key 'log' in ")
    assert str(missing) in line and "No such file or directory" in line


def test_log_symlink_is_refused_at_start_and_never_chowned(service, tmp_path):
    precious = tmp_path / "precious"
    precious.write_text("precious\n")
    link = tmp_path / "app.log"
    link.symlink_to(precious)
    extra = f'log = "{link}"\n'
    if os.geteuid() == 0:  # the chown a root master does for its workers
        extra += f'chuser = "nobody"\ncontrol_socket = "{tmp_path / "ctl.sock"}"\n'
    svc = service(worker="apps:Idle", workers=1, config=extra, log_to_file=False)
    code, line = _one_line_start_error(svc)
    assert code == 78, line
    assert f"key 'log' in {svc.config_path}" in line and str(link) in line
    assert "symbolic link" in line
    assert precious.read_text() == "precious\n"
    assert precious.stat().st_uid == os.geteuid()


def test_log_symlink_refused_by_a_daemonizing_start_in_one_line(tmp_path):
    precious = tmp_path / "precious"
    precious.write_text("precious\n")
    link = tmp_path / "app.log"
    link.symlink_to(precious)
    cmd = [sys.executable, "-m", "svcengine", "--daemonize", "--log", str(link)]
    cmd += ["--pid", str(tmp_path / "app.pid"), "apps:Idle"]
    env = {**os.environ, "PYTHONPATH": f"{HERE}:{REPO}"}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert r.returncode == 78, r.stderr
    assert r.stderr.count("\n") == 1 and "key 'log'" in r.stderr and str(link) in r.stderr
    assert "symbolic link" in r.stderr
    assert precious.read_text() == "precious\n"


def test_log_fifo_is_refused_at_start_without_blocking(service, tmp_path):
    fifo = tmp_path / "app.log"
    os.mkfifo(fifo)
    svc = service(workers=1, config=f'log = "{fifo}"\n', log_to_file=False)
    code, line = _one_line_start_error(svc)  # an open(O_WRONLY) of a FIFO would block here
    assert code == 78
    assert "not a regular file" in line and str(fifo) in line


def test_log_symlink_swapped_in_is_refused_on_reopen(service, tmp_path):
    svc = service(worker="apps:Idle", workers=2)
    svc.wait_ready()
    svc.wait_workers(2)
    precious = tmp_path / "precious"
    precious.write_text("precious\n")
    rotated = tmp_path / "service.log.1"
    os.rename(svc.log_path, rotated)
    svc.log_path.symlink_to(precious)
    svc.kill(signal.SIGUSR1)

    def outcome() -> list[str]:
        text = rotated.read_text() + precious.read_text()
        found = re.findall(r".*(?:cannot reopen the log file|reopened log file).*", text)
        return found if len(found) >= 3 else []  # the master and both workers

    lines = wait_for(outcome, 10, "the master and both workers to answer USR1")
    assert precious.read_text() == "precious\n", "the master followed the symlink"
    assert len([x for x in lines if "symbolic link" in x]) == 3, lines
    assert any(" master: cannot reopen the log file" in x for x in lines), lines
    # still serving, still logging to the file it had; a regular file is taken again
    svc.log_path.unlink()
    svc.kill(signal.SIGUSR1)
    svc.wait_log(r"master: reopened log file", since_mark=False)
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0
    assert precious.read_text() == "precious\n"


@root_only
def test_log_is_chowned_through_its_descriptor(service, tmp_path):
    nobody = pwd.getpwnam("nobody")
    svc = service(
        worker="apps:Idle",
        workers=1,
        config=f'chuser = "nobody"\ncontrol_socket = "{tmp_path / "ctl.sock"}"\n',
    )
    svc.wait_ready()
    assert svc.log_path.stat().st_uid == nobody.pw_uid
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


@root_only
def test_a_log_file_created_by_reopen_is_given_to_the_workers_user(service):
    """Rotation without `create`: the master's USR1 makes the new file; workers that dropped
    privileges must be able to open it too."""
    nobody = pwd.getpwnam("nobody")
    reachable = Path(tempfile.mkdtemp(prefix="svc-log-"))  # pytest's tmp is 0700: nobody can't
    try:
        reachable.chmod(0o755)
        log = reachable / "app.log"
        svc = service(
            worker="apps:Idle",
            workers=2,
            config=f'chuser = "nobody"\nlog = "{log}"\n',
            log_to_file=False,
        )
        svc.wait_ready()
        svc.wait_workers(2)
        os.rename(log, reachable / "app.log.1")
        svc.kill(signal.SIGUSR1)

        def answers() -> list[str]:
            text = log.read_text() if log.exists() else ""
            text += (reachable / "app.log.1").read_text()
            found = re.findall(r".*(?:cannot reopen the log file|reopened log file).*", text)
            return found if len(found) == 3 else []

        lines = wait_for(answers, 10, "the master and both workers to answer USR1")
        assert all("reopened log file" in x for x in lines), lines
        assert log.stat().st_uid == nobody.pw_uid
        svc.kill(signal.SIGTERM)
        assert svc.wait_exit() == 0
    finally:
        shutil.rmtree(reachable)


# --- item 19: the workers' own children ---------------------------------------------------------
def _children_of_workers(svc, n: int) -> dict[int, int]:
    """worker id -> the pid of the subprocess it started."""
    pattern = r"worker (\d+) child pid (\d+)"
    wait_for(lambda: len(re.findall(pattern, svc.log_text())) >= n, 10, f"{n} children")
    return {int(w): int(p) for w, p in re.findall(pattern, svc.log_text())}


def _pgrp(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    return int(data[data.rfind(b")") + 2 :].split()[2])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGQUIT, signal.SIGINT])
def test_stop_takes_the_workers_children_and_spares_the_masters_group(service, sig):
    svc = service(
        worker="apps_hardening_worker:WithChild",
        workers=2,
        config='hooks = "hooks_hardening_worker"\n',
    )
    svc.wait_ready()
    workers = svc.wait_workers(3)  # two workers and the hook's sentinel
    kids = _children_of_workers(svc, 2)
    sentinel_file = svc.tmp / "sentinel.pid"
    sentinel = int(wait_for(lambda: sentinel_file.exists() and sentinel_file.read_text(), 10, "x"))
    workers.discard(sentinel)
    groups = {pid: _pgrp(pid) for pid in workers}
    sentinel_group = _pgrp(sentinel)
    svc.kill(sig)
    assert svc.wait_exit() == 0
    left = wait_gone(set(kids.values()), 5)
    sentinel_alive = alive(sentinel)
    os.kill(sentinel, signal.SIGKILL)  # ours now: the master is gone, we adopted it
    os.waitpid(sentinel, 0)
    assert not left, "a worker's child outlived the master"
    assert sentinel_alive, "the master's own process group was signalled"
    assert groups == {pid: pid for pid in workers}, "a process worker leads its own group"
    assert sentinel_group == svc.pid


def test_a_daemonized_master_stopped_by_term_takes_the_workers_children(tmp_path):
    pid_path, log = tmp_path / "app.pid", tmp_path / "app.log"
    cmd = [sys.executable, "-m", "svcengine", "--daemonize", "--pid", str(pid_path)]
    cmd += ["--log", str(log), "--workers", "2", "apps_hardening_worker:WithChild"]
    env = {**os.environ, "SVC_TEST_DIR": str(tmp_path), "PYTHONPATH": f"{HERE}:{REPO}"}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    master = int(pid_path.read_text())  # adopted by this test process (a subreaper)
    pattern = r"worker (\d+) child pid (\d+)"
    wait_for(lambda: len(re.findall(pattern, log.read_text())) == 2, 10, "two children")
    kids = {int(p) for _, p in re.findall(pattern, log.read_text())}
    os.kill(master, signal.SIGTERM)
    assert not wait_gone({master}, 15)
    assert os.waitstatus_to_exitcode(os.waitpid(master, 0)[1]) == 0
    assert not wait_gone(kids, 5), "a worker's child outlived the daemon"


def test_a_replaced_worker_takes_its_children(service):
    svc = service(worker="apps_hardening_worker:WithChild", workers=2)
    svc.wait_ready()
    kids = _children_of_workers(svc, 2)
    svc.mark()
    svc.command(0, "exit 3")  # a crash: replaced at once
    svc.wait_log(r"worker 0 child pid \d+")
    assert not wait_gone({kids[0]}, 5), "the crashed worker's child is still running"
    assert alive(kids[1])
    svc.mark()
    svc.kill(signal.SIGHUP)  # a reload: every worker replaced
    svc.notify.wait_key("RELOADING", 10)
    svc.wait_ready()
    assert not wait_gone({kids[1]}, 10), "a retired worker's child is still running"
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


def test_kill_escalation_takes_the_workers_group(service):
    svc = service(
        worker="apps_hardening_worker:IgnoresTermWithChild",
        workers=1,
        config="worker_graceful_kill_timeout = 0.5\n",
    )
    svc.wait_ready()
    kids = _children_of_workers(svc, 1)
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0
    svc.wait_log(r"did not stop in time; sending SIGKILL", since_mark=False)
    assert not wait_gone(set(kids.values()), 5), "the worker's child outlived the KILL"


def test_ctrl_c_on_a_terminal_stops_everything(service):
    """Workers lead their own groups now, so the terminal's SIGINT reaches the master alone;
    it must stop them itself (./dev run + Ctrl-C)."""
    svc = service(worker="apps_hardening_worker:WithChild", workers=2, start=False)
    ptm, pts = os.openpty()

    def controlling_terminal() -> None:  # the master: a session leader on its own terminal
        os.setsid()
        fcntl.ioctl(pts, termios.TIOCSCTTY, 0)

    svc.stderr = open(svc.tmp / "stderr.txt", "wb")
    env = {**os.environ, "NOTIFY_SOCKET": svc.notify.path, "SVC_TEST_DIR": str(svc.tmp)}
    svc.proc = subprocess.Popen(
        [sys.executable, "-m", "svcengine", "--config", str(svc.config_path)],
        stdin=pts,
        stdout=pts,
        stderr=pts,
        preexec_fn=controlling_terminal,
        env=env,
        cwd=svc.tmp,
    )
    svc.notify.proc = svc.proc
    os.close(pts)
    try:
        svc.wait_ready()
        workers = svc.wait_workers(2)
        kids = _children_of_workers(svc, 2)
        assert os.tcgetpgrp(ptm) == svc.pid  # the master's group is the foreground one
        os.write(ptm, b"\x03")  # Ctrl-C
        assert svc.wait_exit() == 0
        svc.wait_log(r"SIGINT: quick stop", since_mark=False)
        assert not wait_gone(workers | set(kids.values()), 5)
    finally:
        os.close(ptm)


# --- item 20: create(...).run() ends the process ------------------------------------------------
SCRIPT = """
import sys, threading
sys.path.insert(0, {here!r})
import svcengine
from apps import Idle

def when_ready(server):
    threading.Thread(target=threading.Event().wait, name="monitor").start()  # never ends

code = svcengine.create(Idle, workers=1, log={log!r}, hooks={{"when_ready": when_ready}}).run()
sys.exit(code)
"""


def test_run_from_python_ends_the_process_despite_a_hook_thread(tmp_path):
    log = tmp_path / "app.log"
    script = tmp_path / "app.py"
    script.write_text(SCRIPT.format(here=str(HERE), log=str(log)))
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdin=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: "ready:" in log.read_text() if log.exists() else False, 15, "ready")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "master exits 0" in text
    assert re.search(r"WARNING .*thread\(s\) still running .*monitor", text), text
