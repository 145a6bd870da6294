"""The soak's worker: the HTTP example worker, plus a command channel a fault can use.

Each worker binds a unix datagram socket named after its pid in $SVC_SOAK_CMD_DIR and reads it
in the same select() as the listening sockets, so a command runs between two requests, never
during one:

    raise   an exception escapes run()     (the worker exits 1; the master replaces it)
    segv    a NULL dereference in C         (killed by SIGSEGV)

wait_readable() has a timeout so an idle worker still heartbeats (worker_heartbeat_timeout is
on: a worker stopped with SIGSTOP is found hung and killed by the master).
"""

from __future__ import annotations

import ctypes
import os
import socket

from http_worker import HttpWorker


class SoakWorker(HttpWorker):
    def run(self) -> None:
        if not self.sockets:
            raise RuntimeError("SoakWorker needs a listening socket: set `listen`")
        for sock in self.sockets:
            sock.setblocking(False)
        path = os.path.join(os.environ["SVC_SOAK_CMD_DIR"], f"{os.getpid()}.sock")
        try:
            os.unlink(path)  # left by an earlier process with this pid, killed
        except FileNotFoundError:
            pass
        cmd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        cmd.bind(path)
        self.logger.info("soak worker %d (pid %d) serving", self.worker_id, os.getpid())
        try:
            while not self.stopping:
                for obj in self.wait_readable([cmd, *self.sockets], 1.0):
                    if obj is cmd:
                        self.command(cmd.recv(256).decode())
                        continue
                    try:
                        conn, addr = obj.accept()
                    except (BlockingIOError, InterruptedError):
                        continue  # another worker took it
                    self.serve(conn, addr)
        finally:
            cmd.close()
            os.unlink(path)

    def command(self, text: str) -> None:
        self.logger.info("soak worker %d (pid %d): command %r", self.worker_id, os.getpid(), text)
        if text == "raise":
            raise RuntimeError(f"soak: exception in run() of worker {self.worker_id}")
        if text == "segv":
            ctypes.string_at(0)
