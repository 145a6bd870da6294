"""--daemonize: a proper double-fork daemon whose launcher waits for readiness.

python-daemon's DaemonContext does the detaching, but its parent exits at the
first fork, so the launcher forks once itself first and keeps the read end of
a readiness pipe made before any fork (daemon(7)). The daemon writes `ready`
once every worker is ready, or `error <code> <text>` if it cannot start; the
launcher exits 0 only on `ready`, and otherwise prints the error and exits
non-zero. A pipe closed with nothing written means the daemon died silently.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

EX_OSERR = 71  # sysexits: "system error (e.g., can't fork)"


class Readiness:
    """The daemon's end of the readiness pipe; a no-op in the foreground."""

    def __init__(self, fd: int | None = None) -> None:
        self.fd = fd

    def _send(self, text: str) -> None:
        if self.fd is None:
            return
        try:
            os.write(self.fd, text.encode("utf-8", "replace")[:4000])
        except OSError:
            pass
        finally:
            os.close(self.fd)
            self.fd = None

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
) -> int:
    """In the launcher: fork, daemonize the child, wait for its verdict."""
    import daemon as python_daemon  # only a daemonizing start pays for this import

    sys.stdout.flush()
    sys.stderr.flush()
    try:
        rfd, wfd = os.pipe2(os.O_CLOEXEC)
        try:
            pid = os.fork()
        except OSError:
            os.close(rfd)
            os.close(wfd)
            raise
    except OSError as exc:  # EAGAIN under RLIMIT_NPROC or a full pid table, EMFILE
        print(f"svcengine: cannot fork the daemon: {exc.strerror or exc}", file=sys.stderr)
        return EX_OSERR
    if pid == 0:
        os.close(rfd)
        code = 1
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
            code = run_daemon(Readiness(wfd))
        except BaseException as exc:  # noqa: BLE001 - report anything to the launcher
            Readiness(wfd).failed(1, f"{type(exc).__name__}: {exc}")
        finally:
            os._exit(code)
    os.close(wfd)
    _, status = os.waitpid(pid, 0)  # the first child exits as soon as it has forked
    chunks = []
    while True:
        try:
            data = os.read(rfd, 4096)
        except InterruptedError:
            continue
        if not data:
            break
        chunks.append(data)
    os.close(rfd)
    message = b"".join(chunks).decode("utf-8", "replace").strip()
    if message == "ready":
        return 0
    if message.startswith("error "):
        _, code, text = message.split(" ", 2)
        print(f"svcengine: {text}", file=sys.stderr)
        return int(code)
    reason = f"exit status {os.WEXITSTATUS(status)}" if os.WIFEXITED(status) else "a signal"
    print(f"svcengine: the daemon died before it was ready ({reason})", file=sys.stderr)
    return 1
