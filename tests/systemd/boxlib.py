"""Helpers for the systemd box tests: drive tests/systemd/box.sh, read units, journal, processes.

The box tests run once per Debian release in RELEASES (Debian 12 "bookworm": systemd 252,
Python 3.11; Debian 13 "trixie": systemd 257, Python 3.13). $SVCENGINE_BOX_RELEASES picks
some of them ("bookworm", "trixie" or "bookworm trixie", the default).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BOX_SH = HERE / "box.sh"
UNIT_SRC = REPO / "packaging" / "systemd"
# systemd >= 253 gets this drop-in too (Type=notify-reload), as the .deb built there does
NOTIFY_RELOAD_DROPIN = UNIT_SRC / "svcengine@.service.d" / "notify-reload.conf"
NOTIFY_RELOAD_SINCE = 253

# Debian suite -> what it brings; the first is box.sh's default
RELEASES = {"bookworm": "Debian 12, systemd 252", "trixie": "Debian 13, systemd 257"}


def releases() -> list[str]:
    """The suites to test in: $SVCENGINE_BOX_RELEASES (space or comma separated), else all."""
    wanted = os.environ.get("SVCENGINE_BOX_RELEASES", "").replace(",", " ").split()
    unknown = [s for s in wanted if s not in RELEASES]
    if unknown:
        raise ValueError(f"SVCENGINE_BOX_RELEASES: unknown suite(s) {unknown}; known: {RELEASES}")
    return wanted or list(RELEASES)


def box_name(base: str, suite: str) -> str:
    """One box per suite: the default suite's box keeps the base name (as box.sh names it)."""
    return base if suite == next(iter(RELEASES)) else f"{base}-{suite}"


# paths inside the box
UNIT_DIR = "/etc/systemd/system"
CONF_DIR = "/etc/svcengine"
TEST_LIB = "/opt/sdtest"  # boxprobe.py, boxworkers.py
EXAMPLES = "/opt/svcengine-examples"
T = TypeVar("T")

# A drop-in that logs how the main process ended ($$: expanded by the shell, not by systemd)
EXIT_PROBE = (
    "[Service]\n"
    "ExecStopPost=-/bin/sh -c 'echo \"exit-probe result=$$SERVICE_RESULT"
    " code=$$EXIT_CODE status=$$EXIT_STATUS\"'\n"
)

SHOW_PROPS = (
    "ActiveState",
    "SubState",
    "MainPID",
    "StatusText",
    "NRestarts",
    "Result",
    "ExecMainCode",
    "ExecMainStatus",
    "ControlGroup",
    "InvocationID",
    "WatchdogTimestampMonotonic",  # when systemd last got WATCHDOG=1
)


class BoxError(AssertionError):
    pass


def wait_until(what: str, fn: Callable[[], T | None], timeout: float = 30) -> T:
    """Call fn until it returns something truthy, and return that; fail after the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BoxError(f"not {what} within {timeout} s")
        time.sleep(0.1)  # poll interval, not a synchronisation


def ours(p: dict) -> bool:
    """An svcengine process (by command line or process title)."""
    return "svcengine" in p["cmdline"] or p["comm"].startswith("svcengine")


def wait_none_left(box: Box, timeout: float = 60) -> None:
    """Wait until no svcengine process is left in the box; fail naming what is."""
    left: list[dict] = []

    def none_left() -> bool:
        left[:] = [p for p in box.procs() if ours(p)]
        return not left

    try:
        wait_until("free of svcengine processes", none_left, timeout=timeout)
    except AssertionError:
        raise AssertionError(f"svcengine processes left in the box: {left}") from None


def _box_env(name: str | None, suite: str | None = None) -> dict[str, str] | None:
    if name is None and suite is None:
        return None
    env = dict(os.environ)
    if name is not None:
        env["BOX_NAME"] = name
    if suite is not None:
        env["BOX_SUITE"] = suite
    return env


class Box:
    """Commands into the booted box, and waiting on its units with deadlines.

    name: the box.sh BOX_NAME (default: box.sh's own default, or $BOX_NAME); suite: its
    Debian suite (BOX_SUITE)."""

    def __init__(self, name: str | None = None, suite: str | None = None) -> None:
        self.name = name
        self.suite = suite
        self._systemd: int | None = None

    @property
    def systemd(self) -> int:
        """The box's systemd version (252, 257, ...)."""
        if self._systemd is None:
            first = self.out("systemctl", "--version").split("\n", 1)[0]
            m = re.match(r"systemd (\d+)", first)
            assert m, f"systemctl --version: {first!r}"
            self._systemd = int(m.group(1))
        return self._systemd

    def run(
        self, *argv: str, check: bool = True, input: bytes | str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [str(BOX_SH), "exec", *argv],
            input=input.encode() if isinstance(input, str) else input,
            capture_output=True,
            timeout=timeout,
            env=_box_env(self.name, self.suite),
        )
        if check and proc.returncode != 0:
            raise BoxError(
                f"in box {self.name or ''}: {shlex.join(argv)} -> exit {proc.returncode}\n"
                f"stdout: {proc.stdout.decode(errors='replace')}\n"
                f"stderr: {proc.stderr.decode(errors='replace')}"
            )
        return proc

    def out(self, *argv: str, **kw) -> str:
        return self.run(*argv, **kw).stdout.decode(errors="replace")

    def sh(self, script: str, **kw) -> str:
        return self.out("/bin/sh", "-ec", script, **kw)

    def write(self, path: str, text: str | bytes, mode: str = "644") -> None:
        self.run(
            "/bin/sh",
            "-ec",
            'mkdir -p "$(dirname "$1")"; cat >"$1"; chmod "$2" "$1"',
            "sh",
            path,
            mode,
            input=text,
        )

    def put_dir(self, src: Path, dst: str) -> None:
        """Copy a host directory's contents to dst in the box (replacing dst)."""
        tar = subprocess.run(
            ["tar", "-C", str(src), "--exclude=__pycache__", "-cf", "-", "."],
            capture_output=True,
            check=True,
        )
        self.run(
            "/bin/sh",
            "-ec",
            'rm -rf "$1"; mkdir -p "$1"; tar -C "$1" --no-same-owner -xf -',
            "sh",
            dst,
            input=tar.stdout,
        )

    # --- units ---------------------------------------------------------------------------
    def systemctl(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        return self.out("systemctl", *args, check=check, timeout=timeout)

    def show(self, unit: str) -> dict[str, str]:
        text = self.systemctl("show", "-p", ",".join(SHOW_PROPS), unit)
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def wait_for(
        self,
        unit: str,
        what: str,
        predicate: Callable[[dict[str, str]], bool],
        timeout: float = 30,
        cursor: str | None = None,
    ) -> dict[str, str]:
        """Poll `systemctl show` until predicate(props) holds; on timeout fail with the last
        properties and the unit's journal."""
        deadline = time.monotonic() + timeout
        while True:
            props = self.show(unit)
            if predicate(props):
                return props
            if time.monotonic() > deadline:
                raise BoxError(
                    f"{unit}: not {what} within {timeout} s; last: {props}\n"
                    f"journal:\n{self.journal(unit, cursor=cursor, tail=60)}"
                )
            time.sleep(0.1)  # poll interval, not a synchronisation

    def wait_running(self, unit: str, status: str | None = None, **kw) -> dict[str, str]:
        def ok(p: dict[str, str]) -> bool:
            if p["ActiveState"] in ("failed",):
                raise BoxError(f"{unit} failed: {p}\n{self.journal(unit, tail=60)}")
            return (
                p["ActiveState"] == "active"
                and p["SubState"] == "running"
                and (status is None or status in p["StatusText"])
            )

        return self.wait_for(
            unit, f"active/running{f' with {status!r}' if status else ''}", ok, **kw
        )

    def wait_inactive(self, unit: str, **kw) -> dict[str, str]:
        return self.wait_for(
            unit, "inactive", lambda p: p["ActiveState"] in ("inactive", "failed"), **kw
        )

    # --- journal -------------------------------------------------------------------------
    def cursor(self) -> str:
        """A journal position: pass it to journal() to read only what came after it."""
        text = self.out("journalctl", "-q", "-n", "0", "--show-cursor")
        m = re.search(r"-- cursor: (\S+)", text)
        if m:
            return m.group(1)
        text = self.out("journalctl", "-q", "-n", "1", "--show-cursor", "-o", "cat")
        m = re.search(r"-- cursor: (\S+)", text)
        assert m, f"no journal cursor in {text!r}"
        return m.group(1)

    def journal(
        self,
        unit: str,
        cursor: str | None = None,
        priority: str | None = None,
        tail: int | None = None,
        fmt: str = "cat",
    ) -> str:
        """The unit's journal (after cursor, at or above priority) as `journalctl -o fmt`."""
        self.run("journalctl", "--sync", check=False)
        args = ["journalctl", "-q", "--no-pager", "-u", unit]
        if priority:
            args += ["-p", priority]
        if tail:
            args += ["-n", str(tail)]
        if not (cursor and priority):
            if cursor:
                args += ["--after-cursor", cursor]
            return self.out(*args, "-o", fmt, check=False)
        # journalctl 252 prints nothing for --after-cursor together with -p when the cursor's
        # entry is below that priority: select by sequence number here instead.
        after = _seqnum(cursor)
        entries = [json.loads(line) for line in self.out(*args, "-o", "json").splitlines()]
        entries = [e for e in entries if _seqnum(e["__CURSOR"]) > after]
        if fmt == "json":
            return "".join(json.dumps(e) + "\n" for e in entries)
        assert fmt == "cat", fmt
        return "".join(f"{e['MESSAGE']}\n" for e in entries if isinstance(e.get("MESSAGE"), str))

    def wait_journal(
        self, unit: str, pattern: str, cursor: str | None, timeout: float = 30, count: int = 1
    ) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.journal(unit, cursor=cursor)
            if len(re.findall(pattern, text)) >= count:
                return text
            if time.monotonic() > deadline:
                raise BoxError(f"{unit}: {count}x /{pattern}/ not in the journal:\n{text[-6000:]}")
            time.sleep(0.2)

    def exit_of(self, unit: str, cursor: str) -> tuple[str, str, str]:
        """(SERVICE_RESULT, EXIT_CODE, EXIT_STATUS) of the main process's end after cursor, as
        logged by the EXIT_PROBE drop-in (installed with units.exit_probe)."""
        text = self.wait_journal(unit, r"exit-probe result=", cursor)
        m = re.findall(r"exit-probe result=(\S*) code=(\S*) status=(\S*)", text)
        return m[-1]

    # --- processes -----------------------------------------------------------------------
    def procs(self) -> list[dict]:
        return json.loads(self.out("python3", f"{TEST_LIB}/boxprobe.py", "procs"))

    def http(self, target: str) -> dict:
        return json.loads(self.out("python3", f"{TEST_LIB}/boxprobe.py", "http", target))


def is_mold(p: dict) -> bool:
    """The master's mold (svcengine/child/mold.py): its child, but not a worker."""
    return str(p.get("cmdline", "")).startswith("svcengine mold ")


def _seqnum(cursor: str) -> int:
    """The sequence number in a journal cursor ("s=...;i=<hex>;...")."""
    fields = dict(part.split("=", 1) for part in cursor.split(";"))
    return int(fields["i"], 16)


def skip_reason() -> str | None:
    if not sys.platform.startswith("linux"):
        return "the systemd box needs Linux"
    if os.geteuid() != 0:
        return "needs root: boots a container with systemd-nspawn (run the suite as root)"
    if not shutil.which("systemd-nspawn") and not shutil.which("apt-get"):
        return "no systemd-nspawn, and no apt-get to install it (Debian: systemd-container)"
    probe = subprocess.run(
        ["unshare", "--pid", "--mount", "--uts", "--ipc", "--net", "--fork", "true"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return f"no namespaces here, systemd-nspawn cannot work: {probe.stderr.strip()}"
    cg = "/sys/fs/cgroup/unified" if os.path.isdir("/sys/fs/cgroup/unified") else "/sys/fs/cgroup"
    if not os.access(cg, os.W_OK) or not os.path.exists(f"{cg}/cgroup.procs"):
        return f"no writable cgroup v2 hierarchy at {cg}: systemd-nspawn cannot work"
    return None


def box_sh(
    *args: str, timeout: float, name: str | None = None, suite: str | None = None
) -> subprocess.CompletedProcess:
    """Run box.sh (up, down, ...) for the box called name (default: box.sh's default) of the
    Debian suite (default: box.sh's, bookworm)."""
    return subprocess.run(
        [str(BOX_SH), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env=_box_env(name, suite),
    )


def provision(b: Box, wheel_dir: Path) -> None:
    """Install this checkout's wheel (built into wheel_dir once, for every release's box), the
    units, the examples and the test workers."""
    if not list(wheel_dir.glob("svcengine-*.whl")):
        wheel = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheel_dir)]
            + [str(REPO)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if wheel.returncode != 0:
            pytest.fail(f"building the wheel failed:\n{wheel.stdout}{wheel.stderr}")
    (whl,) = wheel_dir.glob("svcengine-*.whl")

    # The box's rootfs persists between sessions: forget what an earlier (maybe aborted) one left.
    b.systemctl("stop", "svcengine*", check=False)
    b.systemctl("reset-failed", "svcengine*", check=False)
    b.sh(f"rm -rf {UNIT_DIR}/svcengine* {CONF_DIR} {TEST_LIB} {EXAMPLES} /run/svcengine")

    b.write(f"/tmp/{whl.name}", whl.read_bytes())
    b.run(
        "python3",
        "-m",
        "pip",
        "install",
        "-q",
        "--no-deps",
        "--no-index",
        "--force-reinstall",
        "--break-system-packages",
        "--root-user-action=ignore",
        f"/tmp/{whl.name}",
        timeout=300,
    )
    # pip puts the script in /usr/local/bin; the units (like the .deb) use /usr/bin/svcengine
    b.sh("ln -sf /usr/local/bin/svcengine /usr/bin/svcengine; rm -f /tmp/svcengine-*.whl")
    for unit in UNIT_SRC.glob("*@.*"):
        if unit.is_file():
            b.write(f"{UNIT_DIR}/{unit.name}", unit.read_text())
    if b.systemd >= NOTIFY_RELOAD_SINCE:
        dropin = NOTIFY_RELOAD_DROPIN
        b.write(f"{UNIT_DIR}/{dropin.parent.name}/{dropin.name}", dropin.read_text())
    b.put_dir(HERE / "inbox", TEST_LIB)
    if (REPO / "examples").is_dir():
        b.put_dir(REPO / "examples", EXAMPLES)
    b.systemctl("daemon-reload")
