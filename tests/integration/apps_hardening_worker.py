"""Worker classes for test_hardening_worker.py (imported by the service under test)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

from apps import Commanded

import svcengine


class PipeProbe(svcengine.Worker):
    """Writes twice to a socket whose peer is closed, logs what happened, then idles.

    A worker that dies of SIGPIPE here never logs the outcome: the master logs
    `killed by SIGPIPE` instead.
    """

    def run(self) -> None:
        disposition = signal.getsignal(signal.SIGPIPE)
        a, b = socket.socketpair()
        b.close()
        try:
            a.send(b"x")
            a.send(b"x")
            outcome = "no error"
        except BrokenPipeError:
            outcome = "BrokenPipeError"
        finally:
            a.close()
        name = getattr(disposition, "name", repr(disposition))
        self.logger.info("worker %d pipe probe: %s (SIGPIPE %s)", self.worker_id, outcome, name)
        while not self.stopping:
            self.wait(3600)


def _start_child(worker: svcengine.Worker) -> subprocess.Popen:
    child = subprocess.Popen(["sleep", "3600"])
    worker.logger.info("worker %d child pid %d", worker.worker_id, child.pid)
    return child


class WithChild(Commanded):
    """Commanded, with a subprocess that never exits by itself and is never waited for."""

    def run(self) -> None:
        self.child = _start_child(self)
        super().run()


class IgnoresTermWithChild(svcengine.Worker):
    """Only KILL ends it; its subprocess ignores TERM too."""

    def run(self) -> None:
        _start_child(self)
        while True:
            time.sleep(3600)


def write_pid_file(name: str, pid: int) -> None:
    path = os.path.join(os.environ["SVC_TEST_DIR"], name)
    with open(path + ".tmp", "w") as f:
        f.write(str(pid))
    os.replace(path + ".tmp", path)
