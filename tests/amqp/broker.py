"""A real RabbitMQ broker of the tests' own, on loopback, started and stopped by them.

Debian's rabbitmq-server is installed with apt-get when missing (as root; the
package's own service is never started: a policy-rc.d denies it during the
install when the machine has none). The broker then runs as a child of the
tests in its own session with every RABBITMQ_* directory under a temporary
directory, its own node name, its own epmd on its own port (started here, so
it is ours to stop: epmd otherwise outlives the broker) and loopback-only
listeners. stop() ends the whole process group and proves nothing is left.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
POLICY = Path("/usr/sbin/policy-rc.d")


class BrokerUnavailable(Exception):
    """The broker cannot be installed or started here; tests skip with this reason."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_installed() -> None:
    """apt-get install rabbitmq-server if it is missing (root only)."""
    if os.path.exists(SERVER) and shutil.which("epmd"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise BrokerUnavailable("rabbitmq-server is not installed and this is not root with apt")
    made_policy = False
    if not POLICY.exists():  # keep the package's own service from starting
        POLICY.write_text("#!/bin/sh\nexit 101\n")
        POLICY.chmod(0o755)
        made_policy = True
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        for cmd in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends"]
            + ["-o", "DPkg::Lock::Timeout=300", "rabbitmq-server"],
        ):
            r = subprocess.run(
                cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900
            )
            if r.returncode != 0:
                tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
                raise BrokerUnavailable(f"{' '.join(cmd)} failed: {' | '.join(tail)}")
    finally:
        if made_policy:
            POLICY.unlink()
    if not os.path.exists(SERVER):
        raise BrokerUnavailable(f"rabbitmq-server installed but {SERVER} is missing")


def _group_members(pgid: int) -> set[int]:
    """Every live process whose process group is pgid (a scan of /proc)."""
    out = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2 :].split()
        if fields[0] != b"Z" and int(fields[2]) == pgid:
            out.add(int(name))
    return out


class Broker:
    """One RabbitMQ node; start(), stop() and restart() keep its data (durable queues)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.node = f"svctest{self.port}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        self.epmd: subprocess.Popen[bytes] | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        (base / "mnesia").mkdir(parents=True, exist_ok=True)
        (base / "log").mkdir(exist_ok=True)
        (base / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            "disk_free_limit.absolute = 20MB\n"
            "log.console = false\n"
            "log.file.level = info\n"
        )
        (base / "enabled_plugins").write_text("[].\n")
        self.env = dict(
            os.environ,
            HOME=str(base),  # the Erlang cookie lives there
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            ERL_EPMD_PORT=str(self.epmd_port),
            ERL_EPMD_ADDRESS="127.0.0.1",
            RABBITMQ_CONFIG_FILE=str(base / "rabbitmq.conf"),
            RABBITMQ_CONF_ENV_FILE=str(base / "rabbitmq-env.conf"),  # absent: no /etc one
            RABBITMQ_ENABLED_PLUGINS_FILE=str(base / "enabled_plugins"),
            RABBITMQ_MNESIA_BASE=str(base / "mnesia"),
            RABBITMQ_LOG_BASE=str(base / "log"),
            RABBITMQ_PID_FILE=str(base / "rabbit.pid"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        self.env.pop("NOTIFY_SOCKET", None)  # else the script would exec erl as under systemd
        self.env.pop("RABBITMQ_ALLOW_INPUT", None)

    def start(self, timeout: float = 120.0) -> None:
        if self.epmd is None or self.epmd.poll() is not None:
            self.epmd = subprocess.Popen(
                ["epmd", "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        out = open(self.base / "server.out", "ab")
        self.proc = subprocess.Popen(
            [SERVER],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            cwd=self.base,
        )
        out.close()
        self.wait_serving(timeout)

    def wait_serving(self, timeout: float) -> None:
        """Until an AMQP connection opens (a TCP accept is not enough: boot goes on)."""
        import pika

        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise BrokerUnavailable(f"broker exited {self.proc.returncode}: {self.log_tail()}")
            try:
                pika.BlockingConnection(pika.URLParameters(self.url)).close()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise BrokerUnavailable(
                        f"broker not serving after {timeout}s: {self.log_tail()}"
                    ) from None
                time.sleep(0.2)  # nothing to wait on: the broker announces nothing

    def log_tail(self, lines: int = 8) -> str:
        text = ""
        for p in [self.base / "server.out", *sorted((self.base / "log").glob("*.log"))]:
            try:
                text += p.read_text(errors="replace")
            except OSError:
                pass
        return " | ".join(text.strip().splitlines()[-lines:])

    def stop_server(self, timeout: float = 60.0) -> None:
        """Stop the broker node (TERM: a clean shutdown), keep epmd; KILL if it hangs."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        if self.proc.poll() is None:
            os.killpg(pgid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(pgid, signal.SIGKILL)
                self.proc.wait(10)
        deadline = time.monotonic() + 20
        while _group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)  # beam's own children (erl_child_setup) exit after it
        for pid in _group_members(pgid):
            os.kill(pid, signal.SIGKILL)  # ours: in the session we started
        self.proc = None

    def restart(self) -> None:
        self.stop_server()
        self.start()

    def stop(self) -> list[int]:
        """Stop the node and epmd; return any pid of ours still alive (should be [])."""
        groups = [p.pid for p in (self.proc, self.epmd) if p is not None]
        self.stop_server()
        if self.epmd is not None:
            if self.epmd.poll() is None:
                self.epmd.terminate()
                try:
                    self.epmd.wait(10)
                except subprocess.TimeoutExpired:
                    self.epmd.kill()
                    self.epmd.wait(10)
            self.epmd = None
        deadline = time.monotonic() + 10
        left: set[int] = set()
        while time.monotonic() < deadline:
            left = set().union(*(_group_members(g) for g in groups)) if groups else set()
            if not left:
                break
            time.sleep(0.1)
        return sorted(left)

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """rabbitmqctl against this node (queue counts for the tests)."""
        r = subprocess.run(
            ["/usr/lib/rabbitmq/bin/rabbitmqctl", "-n", self.node, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if r.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout
