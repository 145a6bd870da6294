"""Workers for tests/integration/test_hardening_loop.py (the master loop and lifecycle)."""

from __future__ import annotations

import os
import socket
import sys

import svcengine


class GatedReady(svcengine.Worker):
    """Becomes ready only when the test sends `ready` to its command socket."""

    ready_on_run = False

    def run(self) -> None:
        path = os.path.join(os.environ["SVC_TEST_DIR"], f"cmd-{self.worker_id}.sock")
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        self.logger.info("worker %d (pid %d) waiting for go", self.worker_id, os.getpid())
        while not self.stopping:
            if self.wait_readable([sock]) and sock.recv(256) == b"ready":
                self.ready()
        sock.close()


class CrashBeforeReady(svcengine.Worker):
    """Dies in run() before it ever reports ready: a worker that cannot boot."""

    ready_on_run = False

    def run(self) -> None:
        sys.exit(3)
