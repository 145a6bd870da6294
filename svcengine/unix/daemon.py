"""--daemonize: a proper double-fork daemon whose launcher waits for readiness.

python-daemon's DaemonContext does the detaching, but its parent exits at the
first fork, so the launcher forks once itself first and keeps the read end of
a readiness pipe made before any fork (daemon(7)). The daemon writes `ready`
once every worker is ready, or `error <code> <text>` if it cannot start; the
launcher exits 0 only on `ready`, and otherwise prints the error and exits
non-zero. A pipe closed with nothing written means the daemon died silently.
Like systemd's TimeoutStartSec=, the launcher waits at most `start_timeout`
seconds: then it stops the daemon (its pid comes first on the pipe) and fails.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time
import traceback
from collections.abc import Callable

from .. import errors
from . import linux

STOP_GRACE = 30.0  # seconds a daemon stopped at the start timeout gets before SIGKILL


class Readiness:
    """The daemon's end of the readiness pipe; a no-op in the foreground."""

    def __init__(self, fd: int | None = None) -> None:
        self.fd = fd

    def _send(self, text: str, last: bool = True) -> None:
        if self.fd is None:
            return
        try:
            os.write(self.fd, text.encode("utf-8", "replace")[:4000])
        except OSError:
            pass
        finally:
            if last:
                try:
                    os.close(self.fd)
                except OSError:
                    pass
                self.fd = None

    def started(self, pid: int) -> None:
        """The daemon's pid, so a launcher that gives up can stop it."""
        self._send(f"pid {pid}\n", last=False)

    def ready(self) -> None:
        self._send("ready\n")

    def failed(self, code: int, text: str) -> None:
        self._send(f"error {code} {text}\n")


def launch(
    run_daemon: Callable[[Readiness], int],
    *,
    preserve: list[int],
    umask: int,
    working_directory: str = "/",
    start_timeout: float = 0.0,
    stop_signal: int = signal.SIGINT,
) -> int:
    """In the launcher: fork, daemonize the child, wait for its verdict."""
    import daemon as python_daemon  # only a daemonizing start pays for this import

    sys.stdout.flush()
    sys.stderr.flush()
    try:
        rfd, wfd = linux.pipe()
        try:
            pid = os.fork()
        except OSError:
            os.close(rfd)
            os.close(wfd)
            raise
    except OSError as exc:  # EAGAIN under RLIMIT_NPROC or a full pid table, EMFILE
        print(f"svcengine: cannot fork the daemon: {exc.strerror or exc}", file=sys.stderr)
        return errors.EX_OSERR
    if pid == 0:
        os.close(rfd)
        code = 1
        readiness = Readiness(wfd)  # one object: once it has reported, it reports no more
        try:
            context = python_daemon.DaemonContext(
                detach_process=True,  # its auto-detection is wrong under systemd and as PID 1
                signal_map={},  # leave TERM, TTIN, TTOU, TSTP to the master
                files_preserve=[wfd, *preserve],
                umask=umask,
                working_directory=working_directory,
                prevent_core=False,
            )
            context.open()
            code = run_daemon(readiness)
        except BaseException as exc:  # noqa: BLE001 - report anything to the launcher
            traceback.print_exc()  # stderr is the log file by now: a daemon never dies silently
            readiness.failed(1, f"{type(exc).__name__}: {exc}")
        finally:
            os._exit(code)
    os.close(wfd)
    _, status = os.waitpid(pid, 0)  # the first child exits as soon as it has forked
    message, daemon_pid = _wait_verdict(rfd, start_timeout)
    if message is None:  # the start timeout passed
        print(
            f"svcengine: the daemon (pid {daemon_pid}) was not ready within "
            f"{start_timeout:g}s (start_timeout); stopping it",
            file=sys.stderr,
        )
        _stop(rfd, daemon_pid, stop_signal)
        os.close(rfd)
        return 1
    os.close(rfd)
    if message == "ready":
        return 0
    if message.startswith("error "):
        _, number, text = message.split(" ", 2)
        print(f"svcengine: {text}", file=sys.stderr)
        return int(number)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        reason = "see its log"  # the intermediate process's status says nothing of the daemon
    elif os.WIFEXITED(status):
        reason = f"exit status {os.WEXITSTATUS(status)}"
    else:
        reason = "a signal"
    print(f"svcengine: the daemon died before it was ready ({reason})", file=sys.stderr)
    return 1


def _wait_verdict(rfd: int, timeout: float) -> tuple[str | None, int | None]:
    """Read the pipe to EOF: (the last message, the daemon's pid); None at the timeout."""
    deadline = time.monotonic() + timeout if timeout else None
    data = b""
    while True:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and (
            remaining <= 0 or not select.select([rfd], [], [], remaining)[0]
        ):
            return None, _pid_of(data)
        chunk = os.read(rfd, 4096)
        if not chunk:
            break
        data += chunk
    lines = [line for line in data.decode("utf-8", "replace").split("\n") if line.strip()]
    verdicts = [line.strip() for line in lines if not line.startswith("pid ")]
    return (verdicts[-1] if verdicts else ""), _pid_of(data)


def _pid_of(data: bytes) -> int | None:
    for line in data.decode("utf-8", "replace").splitlines():
        if line.startswith("pid ") and line[4:].strip().isdigit():
            return int(line[4:])
    return None


def _stop(rfd: int, pid: int | None, signum: int) -> None:
    """Stop a daemon that missed the start timeout: its quick stop, then SIGKILL.
    The pipe's EOF tells when it is gone (only the daemon holds the write end)."""
    if pid is None:
        return
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return
    if _wait_verdict(rfd, STOP_GRACE)[0] is None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
