"""Worker classes the integration tests run (imported by the service under test).

Commanded listens on a per-worker unix datagram socket so a test can tell one
worker exactly what to do (raise, exit N, segfault, hang) and the worker
waits for that without polling.
"""

from __future__ import annotations

import ctypes
import os
import socket
import sys
import time

import svcengine


class Idle(svcengine.Worker):
    def run(self) -> None:
        while not self.stopping:
            self.wait(3600)


class Commanded(svcengine.Worker):
    def run(self) -> None:
        path = os.path.join(os.environ["SVC_TEST_DIR"], f"cmd-{self.worker_id}.sock")
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        self.logger.info("worker %d listening for commands", self.worker_id)
        while not self.stopping:
            if not self.wait_readable([sock]):
                continue
            command = sock.recv(256).decode()
            self.logger.info("worker %d got command %r", self.worker_id, command)
            if command == "raise":
                raise RuntimeError("boom from a test")
            if command.startswith("exit "):
                sys.exit(int(command.split()[1]))
            if command == "segv":
                ctypes.string_at(0)
            if command == "hang":
                time.sleep(3600)  # no wait(), no heartbeat
            if command == "warn":
                self.logger.warning("warn-marker")
            if command == "pdeathsig":
                from svcengine.unix import linux as _linux

                self.logger.info("worker %d pdeathsig=%d", self.worker_id, _linux.get_pdeathsig())
            if command == "env":
                self.logger.info(
                    "worker %d NOTIFY_SOCKET=%s",
                    self.worker_id,
                    os.environ.get("NOTIFY_SOCKET", "unset"),
                )
            if command.startswith("orphans "):
                self._leave_orphans(int(command.split()[1]))
            if command == "print":
                print("printed-by-worker", flush=True)
        self.logger.info("worker %d finished gracefully", self.worker_id)

    def reload(self) -> None:
        self.logger.info("worker %d reload() called", self.worker_id)

    def _leave_orphans(self, n: int) -> None:
        """Fork n children that outlive this worker, then exit: they become orphans
        that exit right after (EOF on a pipe only this worker held)."""
        r, w = os.pipe()
        for _ in range(n):
            if os.fork() == 0:
                os.close(w)
                os.read(r, 1)
                os._exit(0)
        self.logger.info("worker %d left %d orphans", self.worker_id, n)
        os._exit(0)


class IgnoresTerm(svcengine.Worker):
    """Never looks at `stopping`: only KILL ends it."""

    def run(self) -> None:
        while True:
            time.sleep(3600)


class ExitsAtOnce(svcengine.Worker):
    def run(self) -> None:
        sys.exit(int(os.environ.get("SVC_TEST_EXIT", "0")))


class BrokenImport(svcengine.Worker):
    def __init__(self, *args: object) -> None:
        raise ImportError("this worker cannot be built")


class StopHook(svcengine.Worker):
    """run() blocks in accept-like code; stop() is what unblocks it. The pipe is made before
    run(): a stop may arrive as soon as the worker is ready, before run()'s first line."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.r, self.w = os.pipe()

    def run(self) -> None:
        os.read(self.r, 1)
        self.logger.info("worker %d unblocked by stop()", self.worker_id)

    def stop(self) -> None:
        os.write(self.w, b"x")


class ReportsIdentity(svcengine.Worker):
    """Logs its uid and armed PDEATHSIG once, then idles."""

    def run(self) -> None:
        from svcengine.unix import linux as _linux

        self.logger.info(
            "worker %d uid=%d gid=%d pdeathsig=%d",
            self.worker_id,
            os.getuid(),
            os.getgid(),
            _linux.get_pdeathsig(),
        )
        while not self.stopping:
            self.wait(3600)
