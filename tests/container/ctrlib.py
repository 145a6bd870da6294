"""Helpers for the podman tests: run containers of the example image, read them, remove them."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PODMAN_SH = HERE / "podman.sh"
# runc, not crun: crun fails on a host with mixed cgroup v1/v2 hierarchies
PODMAN = ["podman", "--runtime", "runc"]
# podman's default rlimits (nofile 1048576) may exceed what the host allows this process
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]
T = TypeVar("T")


def wait_until(what: str, fn: Callable[[], T | None], timeout: float = 30) -> T:
    """Call fn until it returns something truthy, and return that; fail after the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} within {timeout} s")
        time.sleep(0.1)  # poll interval, not a synchronisation


def skip_reason() -> str | None:
    if not sys.platform.startswith("linux"):
        return "podman needs Linux"
    if os.geteuid() != 0:
        return "needs root: runs Debian's podman as root (run the suite as root)"
    if not shutil.which("podman") and not shutil.which("apt-get"):
        return "no podman, and no apt-get to install it (Debian: podman runc)"
    probe = subprocess.run(
        ["unshare", "--pid", "--mount", "--uts", "--ipc", "--net", "--fork", "true"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return f"no namespaces here, podman cannot work: {probe.stderr.strip()}"
    return None


def pid_ns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def host_pids_in(ns: str) -> list[int]:
    """Host pids of every process in the pid namespace `ns` (a container's)."""
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and pid_ns(int(p)) == ns]


def naming(text: str) -> list[int]:
    """Host pids whose command line contains `text`."""
    found = []
    for p in os.listdir("/proc"):
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                if p.isdigit() and int(p) != os.getpid() and text.encode() in f.read():
                    found.append(int(p))
        except OSError:
            continue
    return found


class Podman:
    """podman commands for one test session, and the containers it started (removed by name)."""

    def __init__(self, image: str) -> None:
        self.image = image
        self._names = (f"svcengine-ctest-{os.getpid()}-{n}" for n in itertools.count())
        self.started: list[str] = []
        self.ids: list[str] = []  # full container ids: conmon's command line names them
        self.namespaces: dict[str, str] = {}

    def run(self, *argv: str, check: bool = True, timeout: float = 60, **kw):
        proc = subprocess.run(
            [*PODMAN, *argv], capture_output=True, text=True, timeout=timeout, **kw
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"podman {' '.join(argv)} -> exit {proc.returncode}\n{proc.stdout}{proc.stderr}"
            )
        return proc

    def start(self, *opts: str, args: tuple[str, ...] = ()) -> str:
        """podman run -d: the image with `opts`, `args` appended to its entrypoint; its name."""
        name = next(self._names)
        self.started.append(name)
        out = self.run(
            "run", "-d", "--name", name, "--network", "none", *ULIMITS, *opts, self.image, *args
        )
        self.ids += out.stdout.split()[-1:]
        return name

    def exec(self, name: str, *argv: str, check: bool = True, **kw):
        return self.run("exec", name, *argv, check=check, **kw)

    def logs(self, name: str) -> str:
        proc = self.run("logs", name, check=False)
        return proc.stdout + proc.stderr

    def wait_log(self, name: str, text: str, timeout: float = 30) -> str:
        try:
            return wait_until(
                f"{text!r} in {name}'s log",
                lambda: (lambda out: out if text in out else None)(self.logs(name)),
                timeout,
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}; log:\n{self.logs(name)}") from None

    def state(self, name: str) -> dict[str, str]:
        fmt = "{{.State.Status}} {{.State.ExitCode}} {{.State.Pid}}"
        status, code, pid = self.run("inspect", "-f", fmt, name).stdout.split()
        return {"status": status, "exit": code, "pid": pid}

    def remember_ns(self, name: str) -> str:
        """Note the container's pid namespace (while it runs) to prove later that it is empty."""
        pid = int(self.state(name)["pid"])
        ns = pid_ns(pid)
        assert ns, f"{name}: no pid namespace for host pid {pid}"
        self.namespaces[name] = ns
        return ns

    def remove_all(self) -> None:
        """podman rm -f what this session started; fail if any of its processes is left."""
        for name in self.started:
            self.run("rm", "-f", "-t", "0", name, check=False, timeout=120)
        left = self.run("ps", "-a", "--format", "{{.Names}}", check=False).stdout.split()
        ours = [n for n in left if n in self.started]
        self.started.clear()
        assert not ours, f"containers left: {ours}"
        for name, ns in list(self.namespaces.items()):
            wait_until(f"{name}'s processes gone", lambda ns=ns: not host_pids_in(ns), 30)
        self.namespaces.clear()
        for cid in self.ids:  # conmon and anything else on the host that names the container
            wait_until(f"no host process naming {cid[:12]}", lambda cid=cid: not naming(cid), 30)
        self.ids.clear()
