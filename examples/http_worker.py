"""An HTTP worker on svcengine's listening sockets, with the standard library only.

    svcengine --listen 127.0.0.1:8000 --workers 4 --config ... http_worker:HttpWorker
    (run from this directory, or put it on `python_path`)

Every worker accepts on the same inherited sockets; a request in flight when
TERM arrives is finished before the worker exits, so a reload or an upgrade
drops nothing.
"""

from __future__ import annotations

import http.server
import os
import socket

import svcengine


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    server: HttpWorker  # type: ignore[assignment]  # what serve() passes as the "server"

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        body = f"hello from worker {self.server.worker_id} (pid {os.getpid()})\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # one line per request would drown the log


class HttpWorker(svcengine.Worker):
    request_timeout = 10.0

    def run(self) -> None:
        if not self.sockets:
            raise RuntimeError("HttpWorker needs a listening socket: set `listen`")
        for sock in self.sockets:
            sock.setblocking(False)  # several workers accept on one socket
        # the master logs each worker that gets ready: a first log line in a new worker
        # would copy ~0.5 MB of the mold's pages into it (docs/benchmarks.md)
        self.logger.debug("serving HTTP on %d socket(s)", len(self.sockets))
        while not self.stopping:
            for sock in self.wait_readable(self.sockets):
                try:
                    conn, addr = sock.accept()
                except (BlockingIOError, InterruptedError):
                    continue  # another worker took it
                self.serve(conn, addr)

    @classmethod
    def warm_up(cls) -> None:
        """In the mold: a few requests through the handler over a socketpair, so the
        code they run is warmed once, in pages every worker shares (see Worker.warm_up)."""
        for _ in range(10):  # CPython 3.11 rewrites a function's code after 8 calls
            ours, theirs = socket.socketpair()
            with ours, theirs:
                theirs.sendall(b"GET / HTTP/1.0\r\n\r\n")
                Handler(ours, ("warm-up", 0), _WarmUp())  # type: ignore[arg-type]

    def serve(self, conn: socket.socket, addr: object) -> None:
        conn.setblocking(True)
        conn.settimeout(self.request_timeout)
        try:
            Handler(conn, addr if isinstance(addr, tuple) else ("unix", 0), self)  # type: ignore[arg-type]
        except OSError as exc:
            self.logger.debug("request failed: %s", exc)
        finally:
            try:
                conn.close()
            except OSError:
                pass


class _WarmUp:
    worker_id = -1  # the mold's warm-up requests: no worker answers them
