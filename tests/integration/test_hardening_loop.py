"""Issue 12, the master's loop and lifecycle: each test pins one defect of the review.

Real processes, real signals, a real NOTIFY_SOCKET and control socket; every wait is
on an event (a notification, a log line, a file, a pidfd) with a deadline.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import daemonkit
import pytest
from harness import Service, alive, children_of, wait_for, wait_gone

from svcengine import control
from svcengine.cli import client

CTL = "ctl.sock"
MAX_CLIENTS = 16  # control.MAX_CLIENTS, the most control clients the master holds at once


def _ctl_config(tmp: Path, extra: str = "") -> str:
    return f'control_socket = "{tmp / CTL}"\n{extra}'


def _status(svc: Service) -> dict:
    return client.request(str(svc.tmp / CTL), {"cmd": "status"}, timeout=20)


def _ctl(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "svcengine", "ctl", "--socket", str(tmp / CTL), *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def _stop(svc: Service, code: int = 0) -> None:
    workers = svc.workers()
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit(20) == code
    assert not wait_gone(workers, 10)


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _open_sockets(pid: int) -> int:
    """Sockets the process holds (other descriptors may come and go meanwhile)."""
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            n += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except FileNotFoundError:
            continue
    return n


# --- item 2: the control socket's accept, and exceptions in the loop -------------------------


def test_control_accept_at_emfile_keeps_the_master(service, tmp_path):
    """At RLIMIT_NOFILE, accept() fails with EMFILE: the master pauses accepting, logs it,
    and serves on; once descriptors are free again, `ctl status` is answered."""
    svc = service(worker="apps:Idle", workers=1, config=_ctl_config(tmp_path))
    svc.wait_ready()
    used = _open_fds(svc.pid)
    limit = used + 3  # room for three clients, not for the fourth
    soft, hard = resource.prlimit(svc.pid, resource.RLIMIT_NOFILE)
    resource.prlimit(svc.pid, resource.RLIMIT_NOFILE, (limit, hard))
    clients = []
    try:
        for _ in range(8):  # all fit the listen backlog: connect() never blocks
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.connect(str(svc.tmp / CTL))
            clients.append(c)
        wait_for(
            lambda: svc.proc.poll() is not None or "cannot accept" in svc.log_text(),
            15,
            "the master to hit EMFILE",
        )
        assert svc.proc.poll() is None, f"the master died at EMFILE:\n{svc.log_text()[-3000:]}"
        assert re.search(r"control socket: cannot accept .*Too many open files", svc.log_text())
    finally:
        for c in clients:
            c.close()
    resource.prlimit(svc.pid, resource.RLIMIT_NOFILE, (soft, hard))
    st = _status(svc)
    assert st["ok"] and st["status"] == "1/1 workers ready; 0 restarts", st
    _stop(svc)


def test_control_clients_are_capped(service, tmp_path):
    """Idle clients cannot pile up descriptors in the master: at most MAX_CLIENTS are held,
    the rest wait in the listen backlog until a slot frees."""
    svc = service(worker="apps:Idle", workers=1, config=_ctl_config(tmp_path))
    svc.wait_ready()
    base = _open_sockets(svc.pid)
    clients = []
    try:
        for _ in range(MAX_CLIENTS + 10):
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.connect(str(svc.tmp / CTL))
            clients.append(c)
        wait_for(lambda: _open_sockets(svc.pid) >= base + MAX_CLIENTS, 10, "clients held")
        # the master answers its own status pipe etc. meanwhile; it never holds more clients
        svc.kill(signal.SIGUSR1)  # a loop turn that does something else
        svc.wait_log("reopened log file")
        assert _open_sockets(svc.pid) <= base + MAX_CLIENTS
    finally:
        for c in clients:
            c.close()
    st = _status(svc)  # answered once the idle ones are dropped
    assert st["ok"], st
    assert control.MAX_CLIENTS == MAX_CLIENTS
    _stop(svc)


def test_an_exception_in_one_callback_is_logged_and_the_loop_goes_on(service):
    """Fault injection (hooks_loop): an fd callback and a timer raise; each is logged with
    its traceback and the master keeps serving: a HUP still reloads."""
    svc = service(worker="apps:Idle", workers=1, config='hooks = "hooks_loop"\n')
    svc.wait_ready()
    svc.wait_log(r"RuntimeError: injected fault in an fd callback")
    svc.wait_log(r"RuntimeError: injected fault in a timer")
    assert "Traceback (most recent call last)" in svc.log_text()
    assert svc.proc.poll() is None
    svc.kill(signal.SIGHUP)
    svc.notify.wait_key("RELOADING", 10, "1")
    svc.wait_ready()
    _stop(svc)


# --- item 6: HUP or WINCH before the first READY -------------------------------------------


def test_hup_before_first_ready_still_runs_the_first_ready_actions(service):
    svc = service(worker="apps_loop:GatedReady", workers=1, config='hooks = "hooks_for_test"\n')
    first = svc.wait_log(r"worker 0 \(pid (\d+)\) waiting for go")
    svc.mark()
    svc.kill(signal.SIGHUP)
    second = svc.wait_log(r"worker 0 \(pid (\d+)\) waiting for go")
    assert first.group(1) != second.group(1)
    svc.command(0, "ready")  # the new generation's worker (it owns cmd-0.sock now)
    svc.wait_ready()
    hooks = wait_for(
        lambda: "when_ready" in (t := (svc.tmp / "hooks.log").read_text()) and t,
        10,
        "the when_ready hook",
    )
    assert hooks.count("when_ready") == 1
    ready_at = next(i for i, m in enumerate(svc.notify.messages) if m.get("READY") == "1")
    assert not any("RELOADING" in m for m in svc.notify.messages[:ready_at])
    _stop(svc)


class Daemon(daemonkit.Daemon):
    """svcengine --daemonize, its launcher run as a subprocess we can watch."""

    def __init__(self, tmp: Path, worker: str, workers: int = 1, extra: str = "") -> None:
        super().__init__(tmp, worker, workers, extra, name="loop")
        self.launcher: subprocess.Popen | None = None

    def start(self, env: dict[str, str] | None = None) -> subprocess.Popen:
        self.stderr = open(self.tmp / "launcher.txt", "w+")
        self.launcher = subprocess.Popen(
            [sys.executable, "-m", "svcengine", "--daemonize", "--config", str(self.config)],
            stdout=self.stderr,
            stderr=self.stderr,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "SVC_TEST_DIR": str(self.tmp), **(env or {})},
        )
        return self.launcher

    def launcher_output(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read()

    @property
    def pid(self) -> int:
        """Once the daemon wrote its pidfile."""
        return int(
            wait_for(lambda: self.pid_path.exists() and self.pid_path.read_text(), 15, "pid")
        )

    def stop(self) -> None:
        pid = self.pid
        workers = children_of(pid)
        os.kill(pid, signal.SIGTERM)
        assert not wait_gone(workers | {pid}, 20)

    def cleanup(self) -> None:
        if self.launcher is not None and self.launcher.poll() is None:
            self.launcher.kill()
            self.launcher.wait(10)
        if self.pid_path.exists():
            try:
                pid = int(self.pid_path.read_text())
                os.kill(pid, signal.SIGKILL)  # started by this test
                wait_gone({pid}, 10)
            except (ValueError, ProcessLookupError):
                pass
        if hasattr(self, "stderr"):
            self.stderr.close()


@pytest.fixture
def daemon(tmp_path):
    made: list[Daemon] = []

    def make(worker: str, **kw) -> Daemon:
        d = Daemon(tmp_path, worker, **kw)
        made.append(d)
        return d

    yield make
    for d in made:
        d.cleanup()


@pytest.mark.parametrize("pause_first", [False, True], ids=["hup", "winch-then-hup"])
def test_daemonize_returns_after_a_hup_or_winch_before_ready(daemon, tmp_path, pause_first):
    d = daemon("apps_loop:GatedReady")
    launcher = d.start()
    d.wait_log(r"worker 0 \(pid \d+\) waiting for go")
    if pause_first:
        os.kill(d.pid, signal.SIGWINCH)
        d.wait_log(r"worker 0 \(pid \d+\) exited|worker 0 \(pid \d+\) killed")
    before = len(re.findall("waiting for go", d.log()))
    os.kill(d.pid, signal.SIGHUP)
    wait_for(lambda: len(re.findall("waiting for go", d.log())) > before, 15, "the new worker")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendto(b"ready", str(tmp_path / "cmd-0.sock"))
    s.close()
    try:
        code = launcher.wait(20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the launcher never returned:\n{d.log()[-3000:]}")
    assert code == 0, d.launcher_output()
    d.stop()


# --- item 9: a reload whose new workers cannot boot ----------------------------------------

ABANDON_CONFIG = "worker_restart_backoff_min = 0.1\nworker_restart_backoff_max = 0.4\n"


def _reload_into(svc: Service, worker: str, workers: int = 2) -> dict:
    """Rewrite the config to `worker`, HUP, and return the READY=1 that ends the reload."""
    old = svc.worker
    svc.worker = worker
    svc.write_config(workers, ABANDON_CONFIG)
    svc.worker = old
    seen = len(svc.notify.messages)
    svc.kill(signal.SIGHUP)
    reloading = svc.notify.wait_key("RELOADING", 10, "1")
    assert "MONOTONIC_USEC" in reloading
    ready = svc.notify.wait_key("READY", 20, "1")
    assert svc.notify.messages.index(reloading) >= seen
    return ready


@pytest.mark.parametrize(
    "worker, why",
    [
        (
            "apps:BrokenImport",
            r"worker \d failed to boot: ImportError: this worker cannot be built",
        ),
        (
            "apps_loop:CrashBeforeReady",
            r"worker \d exited with status 3 \d+ times before it was ready",
        ),
    ],
    ids=["boot-failure", "crash-before-ready"],
)
def test_reload_into_a_worker_that_cannot_boot_is_abandoned(service, worker, why):
    svc = service(worker="apps:Commanded", workers=2, config=ABANDON_CONFIG, start=False)
    svc.start(env={"WATCHDOG_USEC": "1000000"})
    svc.wait_ready()
    old = svc.wait_workers(2)
    ready = _reload_into(svc, worker)
    assert re.search(f"reload failed: {why}; previous workers keep serving", ready["STATUS"]), ready
    svc.wait_log(f"reload abandoned: {why}")
    # the superseded workers serve on; the new generation is gone
    assert svc.wait_workers(2) == old
    assert all(w in svc.workers() for w in old)
    # the watchdog is fed after the backoff cap would have been reached
    seen = len(svc.notify.messages)
    for _ in range(4):
        svc.notify.wait_key("WATCHDOG", 5, "1")
    assert svc.workers() == old and not any("READY" in m for m in svc.notify.messages[seen:])
    # the old workers are still the pool: one that exits is replaced (by the old config)
    svc.command(0, "exit 3")
    svc.wait_log(r"worker 0 \(pid \d+\) exited with status 3")
    wait_for(  # respawned from the previous config (the new worker never gets this far)
        lambda: svc.log_text().count("worker 0 listening for commands") == 2, 10, "respawn"
    )
    svc.wait_workers(2)
    _stop(svc)


def test_refused_reload_still_answers_reloading_then_ready(service):
    """A notify-reload unit's `systemctl reload` waits for RELOADING=1 ... READY=1."""
    svc = service(worker="apps:Idle", workers=1)
    svc.wait_ready()
    old = svc.wait_workers(1)
    svc.config_path.write_text(svc.config_path.read_text() + "workers = 'x'\n")
    seen = len(svc.notify.messages)
    svc.kill(signal.SIGHUP)
    reloading = svc.notify.wait_key("RELOADING", 10, "1")
    assert int(reloading["MONOTONIC_USEC"]) > 0
    ready = svc.notify.wait_key("READY", 10, "1")
    assert ready["STATUS"].startswith("reload failed: "), ready
    assert "serving the previous config" in ready["STATUS"]
    got = svc.notify.messages[seen:]
    assert got.index(reloading) < got.index(ready)
    assert svc.workers() == old
    _stop(svc)


# --- item 10: signals in the start-up window ------------------------------------------------


def _signal_during_preload(tmp: Path, pid_of) -> int:
    """Wait until the preload import is running, signal the master, then let it go on."""
    os.mkfifo(tmp / "go")
    # O_RDWR never blocks (even if the master is gone) and holds the FIFO open, so the
    # import's open() returns whenever it comes; the byte then ends its read()
    fd = os.open(tmp / "go", os.O_RDWR)
    try:
        wait_for(lambda: (tmp / "importing").exists(), 20, "the preload import")
        pid = pid_of()
        for sig in (signal.SIGUSR1, signal.SIGHUP, signal.SIGUSR2, signal.SIGWINCH, signal.SIGTTIN):
            os.kill(pid, sig)
        os.write(fd, b"g")
        # the byte is read before the FIFO is closed: closing now could drop it unread
        wait_for(
            lambda: not _fifo_unread(fd) or not alive(pid), 20, "the import to read the go byte"
        )
    finally:
        os.close(fd)
    return pid


def _fifo_unread(fd: int) -> int:
    import array
    import fcntl
    import termios

    buf = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return buf[0]


def test_signals_during_preload_do_not_kill_the_master(service, tmp_path):
    svc = service(
        worker="gated_import_loop:Job",
        workers=1,
        config=f'preload = true\npid_path = "{tmp_path / "app.pid"}"\n',
        start=False,
    )
    svc.start()
    pid = _signal_during_preload(svc.tmp, lambda: svc.pid)
    assert pid == svc.pid
    svc.wait_ready(20)
    assert svc.proc.poll() is None
    svc.wait_log(r"reopened log file", since_mark=False)  # USR1 was acted on, not lost
    _stop(svc)


def test_signals_during_preload_do_not_kill_the_daemon(daemon, tmp_path):
    d = daemon("gated_import_loop:Job", extra="preload = true\n")
    launcher = d.start()
    _signal_during_preload(tmp_path, lambda: d.pid)
    code = launcher.wait(30)
    assert code == 0, d.launcher_output() + d.log()[-2000:]
    d.wait_log("reopened log file")
    d.stop()


# --- item 15: `ctl status --check` with no worker ready -------------------------------------


def test_check_is_unhealthy_while_paused(service, tmp_path):
    svc = service(worker="apps:Idle", workers=2, config=_ctl_config(tmp_path))
    svc.wait_ready()
    assert _ctl(svc.tmp, "status", "--check").returncode == 0
    workers = svc.workers()
    svc.kill(signal.SIGWINCH)
    svc.wait_log("stopping all workers; the master stays")
    assert not wait_gone(workers, 10)
    r = _ctl(svc.tmp, "status", "--check")
    assert r.returncode == 1, r.stdout
    assert "NOT healthy" in r.stdout and "no worker is ready" in r.stdout, r.stdout
    _stop(svc)


def test_check_is_unhealthy_with_a_lone_worker_in_backoff(service, tmp_path):
    svc = service(
        worker="apps:Commanded",
        workers=1,
        config=_ctl_config(
            tmp_path,
            # every exit counts as a fast failure, however slow the machine is
            "worker_min_uptime = 600\n"
            "worker_restart_backoff_min = 60\nworker_restart_backoff_max = 600\n",
        ),
    )
    svc.wait_ready()
    svc.command(0, "exit 3")  # first failure: restarted at once
    svc.wait_log(r"worker 0 \(pid \d+\) exited with status 3")
    wait_for(
        lambda: svc.log_text().count("worker 0 listening for commands") == 2, 10, "the restart"
    )
    svc.command(0, "exit 3")  # second fast failure: 60 s of backoff
    svc.wait_log("worker 0 is crashing in a loop; next start in")
    r = _ctl(svc.tmp, "status", "--check")
    assert r.returncode == 1, r.stdout
    assert "no worker is ready" in r.stdout, r.stdout
    _stop(svc)


# --- item 17: diagnosability ------------------------------------------------------------------


def test_a_daemonized_master_that_dies_logs_why(daemon):
    """Fault injection (hooks_loop, SVC_TEST_FAULT=always): a callback raises on every turn
    and consumes nothing, so the loop cannot make progress; the master ends, and says so
    with the traceback in its log."""
    d = daemon("apps:Idle", extra='hooks = "hooks_loop"\n')
    launcher = d.start(env={"SVC_TEST_FAULT": "always"})
    assert launcher.wait(30) == 0, d.launcher_output()
    # from the log, not the pidfile: the master may be gone (and its pidfile too) already
    pid = int(d.wait_log(r"master started \(pid (\d+)\)").group(1))
    assert not wait_gone({pid} | children_of(pid), 20)
    log = d.log()
    assert "Traceback (most recent call last)" in log, log[-3000:]
    assert "RuntimeError: injected fault in an fd callback" in log
    assert re.search(r"CRITICAL .*the master's loop cannot go on", log), log[-3000:]


def test_the_launcher_gives_up_after_start_timeout(daemon):
    before = children_of(os.getpid())  # the session's own (a broker of tests/amqp...)
    d = daemon("apps_loop:CrashBeforeReady", extra="start_timeout = 3\n")
    launcher = d.start()
    started = time.monotonic()
    try:
        code = launcher.wait(30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the launcher waits forever:\n{d.log()[-2000:]}")
    assert time.monotonic() - started < 20
    assert code == 1, d.launcher_output()
    assert "not ready within 3s" in d.launcher_output(), d.launcher_output()
    wait_for(lambda: not d.pid_path.exists(), 10, "the daemon's pidfile removed")
    assert not wait_gone(children_of(os.getpid()) - before, 10)


def _pending(pid: int, sig: int) -> bool:
    """The signal is still pending on the process (sent, not yet delivered)."""
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    mask = int(fields["SigPnd"], 16) | int(fields["ShdPnd"], 16)
    return bool(mask & (1 << (sig - 1)))


def test_a_hup_storm_is_coalesced(service, tmp_path):
    """300 HUPs, each delivered (not merged by the kernel) before the next is sent, all
    while a reload is running (its workers wait for the test's go): that reload ends,
    exactly one more follows, and nothing else is forked."""
    svc = service(worker="apps_loop:GatedReady", workers=2, config=_ctl_config(tmp_path))

    def release(total: int) -> None:
        """Wait until `total` workers have said "waiting for go"; let the last two go."""
        wait_for(lambda: svc.log_text().count("waiting for go") >= total, 20, f"{total} workers")
        svc.command(0, "ready")
        svc.command(1, "ready")

    release(2)
    svc.wait_ready()
    svc.mark()
    for _ in range(300):
        svc.kill(signal.SIGHUP)
        wait_for(lambda: not _pending(svc.pid, signal.SIGHUP), 10, "the HUP delivered")
    release(4)
    svc.wait_log("reload already in progress; one more follows when it completes")
    release(6)
    wait_for(lambda: svc.log_text().count("reload complete") == 2, 20, "two reloads complete")
    st = _status(svc)
    assert st["phase"] == "running" and st["status"].startswith("2/2 workers ready"), st
    text = svc.log_text()[svc._log_offset :]
    forks = len(re.findall(r"worker \d+ started \(pid", text))
    assert forks == 2 * 2, f"{forks} forks for 300 HUPs"
    assert text.count("reload already in progress") == 1
    assert svc.log_text().count("waiting for go") == 6
    _stop(svc)
