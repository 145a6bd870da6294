"""What the soak runs and how it looks at it: the service, its processes, its log, the load.

Exits are waited for with pidfds (harness.wait_gone, shared with tests/integration); everything
else is re-checked up to a deadline.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from svcengine.cli import client

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.append(str(REPO / "tests" / "integration"))
from harness import alive as alive  # noqa: E402  the real-process tests' own helpers
from harness import wait_for as wait_for  # noqa: E402
from harness import wait_gone as wait_gone  # noqa: E402

# the service's interpreter: this one (the checkout), or another installation to soak
PYTHON = os.environ.get("SVC_SOAK_PYTHON") or sys.executable


# --- processes ------------------------------------------------------------------------------
def state(pid: int) -> str | None:
    """The state letter in /proc/PID/stat (Z: a zombie), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rfind(b")") + 2 :].split()[0].decode()


def children(pid: int) -> dict[int, str]:
    """Every child of pid with its state letter (Z: a zombie its parent has not reaped)."""
    out: dict[int, str] = {}
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids = [int(p) for p in f.read().split()]
        except OSError:
            continue
        for kid in kids:
            letter = state(kid)
            if letter is not None:
                out[kid] = letter
    return out


def processes_of_uid(uid: int) -> list[int]:
    """Live processes whose real uid is uid."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                text = f.read()
        except OSError:
            continue
        m = re.search(r"^Uid:\s+(\d+)", text, re.M)
        if m and int(m.group(1)) == uid and alive(int(name)):
            found.append(int(name))
    return found


def open_fds(pid: int) -> dict[str, int]:
    """fd -> inode of what it is open on."""
    out = {}
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            out[fd] = os.stat(f"/proc/{pid}/fd/{fd}").st_ino
        except OSError:
            continue
    return out


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        m = re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M)
    assert m, f"no VmRSS for {pid}"
    return int(m.group(1))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the log file -----------------------------------------------------------------------------
class LogFile:
    """The service's log, read from a mark on (from the start of a new file after a rename)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._ino = 0
        self._offset = 0

    def mark(self) -> None:
        try:
            st = os.stat(self.path)
            self._ino, self._offset = st.st_ino, st.st_size
        except FileNotFoundError:
            self._ino, self._offset = 0, 0

    def since_mark(self) -> str:
        try:
            with open(self.path, "rb") as f:
                if os.fstat(f.fileno()).st_ino == self._ino:
                    f.seek(self._offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def wait(self, pattern: str, timeout: float) -> re.Match:
        rx = re.compile(pattern, re.M)
        try:
            return wait_for(lambda: rx.search(self.since_mark()), timeout, f"/{pattern}/ logged")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; since the mark:\n{self.since_mark()[-3000:]}") from None

    def tail(self, chars: int = 6000) -> str:
        """The end of the log, the last rotated file first."""
        out = []
        for p in (self.path.with_suffix(".log.1"), self.path):
            try:
                out.append(f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}")
            except OSError as exc:
                out.append(f"--- {p.name}: {exc.strerror}")
        return "\n".join(out)


# --- the client load --------------------------------------------------------------------------
@dataclass
class Failure:
    start: float
    end: float
    error: str


@dataclass
class Load:
    """N client threads, a new connection per request, until stop()."""

    port: int
    clients: int = 6
    timeout: float = 20.0
    ok: int = 0
    failures: list[Failure] = field(default_factory=list)
    served_by: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._client, daemon=True) for _ in range(self.clients)
        ]

    @property
    def running(self) -> bool:
        return self._threads[0].is_alive() and not self._stop.is_set()

    def start(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def _client(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            error = None
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
                conn.request("GET", "/")
                resp = conn.getresponse()
                body = resp.read().decode(errors="replace")
                conn.close()
                if resp.status != 200:
                    error = f"HTTP {resp.status}"
            except (OSError, http.client.HTTPException) as exc:
                error = f"{type(exc).__name__}: {exc}"
            t1 = time.monotonic()
            with self._lock:
                if error is None:
                    self.ok += 1
                    self.served_by.add(int(body.rsplit("pid ", 1)[-1].rstrip(")\n")))
                else:
                    self.failures.append(Failure(t0, t1, error))

    def wait_progress(self, requests: int, timeout: float) -> None:
        """Wait until `requests` more have succeeded: the service serves."""
        target = self.ok + requests
        wait_for(lambda: self.ok >= target, timeout, f"{requests} more successful requests")

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 5)


def early_closers(port: int, n: int, timeout: float = 10.0) -> None:
    """n clients that send a request and hang up before the answer: half close, half reset
    (SO_LINGER 0), so the worker writes into a dead connection (EPIPE / ECONNRESET)."""
    deadline = time.monotonic() + timeout
    for i in range(n):
        if time.monotonic() > deadline:
            raise AssertionError(f"only {i} of {n} early-closing clients in {timeout} s")
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: soak\r\n\r\n")
            if i % 2:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


# --- the service --------------------------------------------------------------------------------
class Service:
    """svcengine in the foreground (the soak worker on loopback), started through `prefix`.

    Its directories are its own (run/, log/, cmd/) so that making log/ unwritable touches
    nothing else."""

    def __init__(self, root: Path, workers: int, prefix: list[str], extra: str = "") -> None:
        self.root = root
        self.prefix = prefix  # runs the launcher as the service's identity
        self.port = free_port()
        self.run_dir, self.log_dir, self.cmd_dir = root / "run", root / "log", root / "cmd"
        for d in (self.run_dir, self.log_dir, self.cmd_dir):
            d.mkdir(mode=0o755)
        self.pid_path = self.run_dir / "soak.pid"
        self.ctl_path = self.run_dir / "soak.ctl"  # svcengine.rundir.socket_path's default
        self.log = LogFile(self.log_dir / "soak.log")
        self.config_path = root / "soak.toml"
        self.extra = extra
        self.write_config(workers)

    def write_config(self, workers: int) -> None:
        self.workers = workers
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(
            'worker = "soak_worker:SoakWorker"\n'
            f"workers = {workers}\n"
            f'listen = ["127.0.0.1:{self.port}"]\n'
            f'python_path = ["{HERE}", "{REPO / "examples"}"]\n'
            f'pid_path = "{self.pid_path}"\n'
            f'log = "{self.log.path}"\n'
            'name = "soak"\n'
            "start_worker_delay_rand = 0.0\n" + self.extra
        )
        tmp.chmod(0o644)
        tmp.rename(self.config_path)  # a HUP never reads half a file

    def write_broken_config(self, text: bytes) -> None:
        """Replace the config file with bytes the master must refuse on HUP (write_config puts
        a good one back)."""
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_bytes(text)
        tmp.chmod(0o644)
        tmp.rename(self.config_path)

    def start(self) -> int:
        """Start the master in the foreground (our child; later ones are adopted by us, the
        subreaper, when their predecessor exits); return its pid."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
        env["SVC_SOAK_CMD_DIR"] = str(self.cmd_dir)
        if hasattr(self, "output"):
            self.output.close()  # a restart after a stop appends to the same file
        self.output = open(self.root / "output.txt", "ab")  # noqa: SIM115 - closed in cleanup()
        self.proc = subprocess.Popen(
            [*self.prefix, PYTHON, "-m", "svcengine", "--foreground"]
            + ["--config", str(self.config_path)],
            env=env,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            stdout=self.output,
            stderr=self.output,
            start_new_session=True,
        )
        return self.proc.pid

    def reap(self, pid: int) -> None:
        """Collect a master of ours that has exited (the first one is a Popen)."""
        if pid == self.proc.pid:
            self.proc.wait(10)
            return
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass

    def master(self) -> int:
        return int(self.pid_path.read_text())

    def status(self) -> dict:
        return client.request(str(self.ctl_path), {"cmd": "status"}, timeout=10)

    def request(self, payload: dict) -> dict:
        return client.request(str(self.ctl_path), payload, timeout=10)

    def ctl(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
        return subprocess.run(
            [PYTHON, "-m", "svcengine", "ctl", "--pid", str(self.pid_path), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def ctl_async(self, *args: str) -> subprocess.Popen:
        """`svcengine ctl` started, not waited for (wait() it)."""
        return subprocess.Popen(
            [PYTHON, "-m", "svcengine", "ctl", "--pid", str(self.pid_path), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def send(self, pid: int, command: str) -> None:
        """A command for one worker (see soak_worker.py)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(command.encode(), str(self.cmd_dir / f"{pid}.sock"))

    def cleanup(self, remove: bool) -> None:
        if hasattr(self, "output"):
            self.output.close()
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)
