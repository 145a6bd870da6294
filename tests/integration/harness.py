"""The harness of the real-process tests: svcengine started as a subprocess.

Events, not sleeps: the master's sd_notify datagrams arrive on a socket this
harness binds (a real NOTIFY_SOCKET), process exits are watched with pidfds,
and log lines are read from the service's log file up to a deadline.
"""

from __future__ import annotations

import os
import re
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
# dup the given fds to 3.., set LISTEN_PID to our own pid, exec the rest of argv
ACTIVATE = (
    "import os, sys\n"
    "fds = [int(x) for x in os.environ.pop('SVC_TEST_FDS').split(',')]\n"
    "for i, fd in enumerate(fds):\n"
    "    os.dup2(fd, 3 + i)\n"
    "os.environ['LISTEN_PID'] = str(os.getpid())\n"
    "os.execv(sys.argv[1], sys.argv[1:])\n"
)
REPO = HERE.parent.parent


def children_of(pid: int) -> set[int]:
    out: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.update(int(p) for p in f.read().split())
        except FileNotFoundError:
            continue
    return out


def is_mold(pid: int) -> bool:
    """The master's mold (svcengine/child/mold.py), told apart from workers by its title."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().startswith(b"svcengine mold ")
    except (FileNotFoundError, ProcessLookupError):
        return False


def alive(pid: int) -> bool:
    """True while pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return data[data.rfind(b")") + 2 : data.rfind(b")") + 3] != b"Z"


def wait_gone(pids: list[int] | set[int], timeout: float) -> set[int]:
    """Wait for every pid to exit (pidfd readable); return those still alive."""
    fds = {}
    for pid in pids:
        try:
            fds[os.pidfd_open(pid)] = pid
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + timeout
    try:
        while fds:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            readable, _, _ = select.select(list(fds), [], [], remaining)
            for fd in readable:
                os.close(fd)
                del fds[fd]
    finally:
        left = {p for fd, p in fds.items() if alive(p)}
        for fd in fds:
            os.close(fd)
    return left


def wait_for(predicate: Callable[[], object], timeout: float, what: str, step: float = 0.01):
    """Re-check a condition that has no event of its own, up to a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


class Notifications:
    """A real NOTIFY_SOCKET: what systemd would receive from the master."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[dict[str, str]] = []
        self.proc: subprocess.Popen | None = None  # fail fast if the sender is gone

    def _receive(self, timeout: float) -> dict[str, str] | None:
        readable, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if not readable:
            return None
        data = self.sock.recv(65536).decode()
        msg = dict(line.split("=", 1) for line in data.splitlines() if "=" in line)
        self.messages.append(msg)
        return msg

    def wait(self, predicate: Callable[[dict[str, str]], bool], timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while True:
            msg = self._receive(min(0.5, deadline - time.monotonic()))
            if msg is None and time.monotonic() < deadline:
                if self.proc is None or self.proc.poll() is None:
                    continue
                while (msg := self._receive(0)) is not None and not predicate(msg):
                    pass
                if msg is not None:
                    return msg
                code = self.proc.returncode
                raise AssertionError(
                    f"service exited ({code}) before {what}; got {self.messages[-8:]}"
                )
            if msg is None:
                raise AssertionError(
                    f"no notification {what} within {timeout}s; got {self.messages[-8:]}"
                )
            if predicate(msg):
                return msg

    def wait_key(self, key: str, timeout: float = 10.0, value: str | None = None):
        return self.wait(
            lambda m: key in m and (value is None or m[key] == value),
            timeout,
            f"{key}={value or '*'}",
        )

    def close(self) -> None:
        self.sock.close()


class Service:
    """One svcengine master started for a test."""

    def __init__(
        self,
        tmp: Path,
        worker: str,
        workers: int,
        config: str,
        args: list[str],
        log_to_file: bool = True,
    ):
        self.tmp = tmp
        self.log_to_file = log_to_file
        self.log_path = tmp / "service.log"
        self.config_path = tmp / "app.toml"
        self.worker = worker
        self.args = args
        self.write_config(workers, config)
        self.notify = Notifications(tmp / "notify.sock")
        self.proc: subprocess.Popen | None = None
        self.seen_workers: set[int] = set()
        self._log_offset = 0
        self.journal_stream = False
        self.pass_fds: tuple[int, ...] = ()

    def write_config(self, workers: int, extra: str = "") -> None:
        self.config_path.write_text(
            f'worker = "{self.worker}"\n'
            f"workers = {workers}\n"
            f'python_path = ["{HERE}", "{self.tmp}", "{REPO / "examples"}"]\n'
            + (f'log = "{self.log_path}"\n' if self.log_to_file else "")
            + 'log_level = "debug"\n'
            "start_worker_delay_rand = 0.0\n" + extra
        )

    def start(self, env: dict[str, str] | None = None) -> Service:
        environ = dict(os.environ)
        environ.update(NOTIFY_SOCKET=self.notify.path, SVC_TEST_DIR=str(self.tmp))
        environ.pop("WATCHDOG_USEC", None)
        # a control socket of its own: unnamed masters would share /run/svcengine/default/
        environ["RUNTIME_DIRECTORY"] = str(self.tmp / "run")
        environ.update(env or {})
        self.stderr = open(self.tmp / "stderr.txt", "wb")
        if not self.log_to_file:
            self.log_path = self.tmp / "stderr.txt"
        if self.journal_stream:
            st = os.fstat(self.stderr.fileno())
            environ["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        cmd = [sys.executable, "-m", "svcengine", "--config", str(self.config_path), *self.args]
        if self.pass_fds:
            # the socket-activation protocol: LISTEN_PID must be the pid that execs svcengine
            cmd = [sys.executable, "-c", ACTIVATE, *cmd]
            environ.update(
                LISTEN_FDS=str(len(self.pass_fds)),
                LISTEN_FDNAMES="http",
                SVC_TEST_FDS=",".join(map(str, self.pass_fds)),
            )
        self.proc = subprocess.Popen(
            cmd,
            env=environ,
            pass_fds=self.pass_fds,
            stdin=subprocess.DEVNULL,
            stdout=self.stderr,
            stderr=self.stderr,
            start_new_session=True,
            restore_signals=True,
            cwd=self.tmp,
        )
        self.notify.proc = self.proc
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def wait_ready(self, timeout: float = 15.0) -> dict[str, str]:
        return self.notify.wait_key("READY", timeout, "1")

    def workers(self) -> set[int]:
        """The master's worker processes (its mold is a child too, but not a worker)."""
        pids = {p for p in children_of(self.pid) if not is_mold(p)}
        self.seen_workers |= pids
        return pids

    def molds(self) -> set[int]:
        return {p for p in children_of(self.pid) if is_mold(p)}

    def wait_workers(self, n: int, timeout: float = 10.0) -> set[int]:
        def exactly_n() -> set[int] | None:
            pids = self.workers()
            return pids if len(pids) == n else None

        return wait_for(exactly_n, timeout, f"{n} workers")

    def kill(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def command(self, worker_id: int, text: str) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        path = str(self.tmp / f"cmd-{worker_id}.sock")
        wait_for(lambda: os.path.exists(path), 10, f"worker {worker_id}'s command socket")
        try:
            s.sendto(text.encode(), path)
        finally:
            s.close()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern: str, timeout: float = 10.0, since_mark: bool = True) -> re.Match:
        rx = re.compile(pattern, re.M)
        start = self._log_offset if since_mark else 0

        def find():
            return rx.search(self.log_text(), start)

        return wait_for(find, timeout, f"log line /{pattern}/\n--- log ---\n{self.log_text()}")

    def mark(self) -> None:
        """Later wait_log() calls only look at lines logged after this point."""
        self._log_offset = len(self.log_text())

    def wait_exit(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def cleanup(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.notify.close()
        if hasattr(self, "stderr"):
            self.stderr.close()
