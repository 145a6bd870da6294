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
    worker_id = -1

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        body = f"hello from worker {self.worker_id} (pid {os.getpid()})\n".encode()
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
        handler = type("BoundHandler", (Handler,), {"worker_id": self.worker_id})
        self.logger.info("serving HTTP on %d socket(s)", len(self.sockets))
        while not self.stopping:
            for sock in self.wait_readable(self.sockets):
                try:
                    conn, addr = sock.accept()
                except (BlockingIOError, InterruptedError):
                    continue  # another worker took it
                self.serve(handler, conn, addr)

    def serve(self, handler: type[Handler], conn: socket.socket, addr: object) -> None:
        conn.setblocking(True)
        conn.settimeout(self.request_timeout)
        try:
            handler(conn, addr if isinstance(addr, tuple) else ("unix", 0), None)
        except OSError as exc:
            self.logger.debug("request failed: %s", exc)
        finally:
            try:
                conn.close()
            except OSError:
                pass
