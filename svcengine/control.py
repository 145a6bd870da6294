"""The control socket: `svcengine ctl status` and `dump` talk to the master here.

AF_UNIX stream socket, mode 0600, in the service's runtime directory. Each
connection sends one JSON line and gets one JSON line back. The peer's uid is
read with SO_PEERCRED: only root and the service's own user are answered.
Connections are non-blocking and served by the master's one loop, so a slow
or silent client can never stall it (it is dropped after a few seconds).
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import stat
import struct
from collections.abc import Callable
from typing import Any

from .timers import Timers

log = logging.getLogger("svcengine.control")

_UCRED = struct.Struct("3i")  # pid, uid, gid
MAX_REQUEST = 4096
CLIENT_TIMEOUT = 5.0  # seconds a client may take to send its request
MAX_CLIENTS = 16  # clients held at once; more wait in the listen backlog
ACCEPT_PAUSE = 1.0  # seconds without accept() after it ran out of descriptors or memory
# accept() failures that say "not now" (the process or the system is out of something),
# not "this socket is broken": pause accepting instead of spinning or dying
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


def runtime_dir(name: str) -> str | None:
    """Where a service named `name` keeps its control socket."""
    given = os.environ.get("RUNTIME_DIRECTORY")
    if given:
        return given.split(":")[0]
    base = "/run" if os.geteuid() == 0 else os.environ.get("XDG_RUNTIME_DIR")
    if not base:
        return None
    return os.path.join(base, "svcengine", name or "default")


def socket_path(control_socket: str | None, pid_path: str | None, name: str) -> str | None:
    """The control socket's path: explicit, next to the pidfile, or in the runtime dir."""
    if control_socket:
        return control_socket
    if pid_path:
        root, ext = os.path.splitext(pid_path)
        return (root if ext == ".pid" else pid_path) + ".ctl"
    directory = runtime_dir(name)
    return os.path.join(directory, "control.sock") if directory else None


def peer_uid(conn: socket.socket) -> int:
    data = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    return _UCRED.unpack(data)[1]


class ControlServer:
    def __init__(
        self,
        path: str,
        handler: Callable[[dict[str, Any]], dict[str, Any]],
        allowed_uids: set[int],
    ) -> None:
        self.path = path
        self.handler = handler
        self.allowed = allowed_uids | {0}
        directory = os.path.dirname(path) or "."
        os.makedirs(directory, mode=0o700, exist_ok=True)
        try:
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)
        except FileNotFoundError:
            pass
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # born 0600: no window where others may connect
        try:
            self.sock.bind(path)
        finally:
            os.umask(old)
        self.inode = os.stat(path).st_ino
        self.sock.listen(16)
        self.sock.setblocking(False)
        self.buffers: dict[socket.socket, bytearray] = {}
        self._selector: selectors.BaseSelector | None = None
        self._timers: Timers | None = None
        self._accepting = False
        self._paused_until = 0.0  # after an out-of-resources accept(), the loop's clock
        self._short_of: str | None = None  # what accept() last ran out of, until it works again

    def fileno(self) -> int:
        return self.sock.fileno()

    def chown(self, uid: int, gid: int) -> None:
        os.chown(self.path, uid, gid)

    def attach(self, selector: selectors.BaseSelector, timers: Timers) -> None:
        """Serve from the master's loop: accept, read, answer; drop slow clients.

        At most MAX_CLIENTS are held; while that many are, or after accept() ran out of
        descriptors or memory, the listening socket is left out of the selector (its
        backlog keeps the rest waiting) instead of waking the loop for nothing."""
        self._selector = selector
        self._timers = timers
        self._resume()

    def _on_accept(self, _fd: int) -> None:
        conn = self.accept()
        if conn is None:
            return
        assert self._selector is not None and self._timers is not None
        selector = self._selector

        def finished() -> None:
            if conn in self.buffers:
                selector.unregister(conn)
                self.drop(conn)
            timer.cancel()

        def on_readable(_fd: int) -> None:
            if not self.readable(conn):
                finished()

        selector.register(conn, selectors.EVENT_READ, on_readable)
        timer = self._timers.after(CLIENT_TIMEOUT, finished)
        if len(self.buffers) >= MAX_CLIENTS:
            self._pause(None)

    def _pause(self, seconds: float | None) -> None:
        """Stop accepting: until a client is dropped (None), or for `seconds`."""
        if self._accepting and self._selector is not None:
            self._selector.unregister(self.sock)
            self._accepting = False
        if seconds is not None and self._timers is not None:
            self._paused_until = self._timers.clock() + seconds
            self._timers.after(seconds, self._resume)

    def _resume(self) -> None:
        if self._accepting or self._selector is None or self.sock.fileno() < 0:
            return
        if len(self.buffers) >= MAX_CLIENTS:
            return
        if self._timers is not None and self._timers.clock() < self._paused_until:
            return
        self._selector.register(self.sock, selectors.EVENT_READ, self._on_accept)
        self._accepting = True

    def accept(self) -> socket.socket | None:
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return None
        except OSError as exc:
            if exc.errno not in OUT_OF_RESOURCES:
                raise
            if self._short_of is None:
                log.error(
                    "control socket: cannot accept a client (%s); pausing accept for %.0fs "
                    "at a time until it works again",
                    exc.strerror,
                    ACCEPT_PAUSE,
                )
            self._short_of = exc.strerror
            self._pause(ACCEPT_PAUSE)
            return None
        if self._short_of is not None:
            log.info("control socket: accepting clients again")
            self._short_of = None
        try:
            uid = peer_uid(conn)
        except OSError:  # the client is already gone
            conn.close()
            return None
        if uid not in self.allowed:
            log.warning("control socket: refused a client with uid %d", uid)
            self._reply(conn, {"ok": False, "error": f"uid {uid} is not allowed"})
            conn.close()
            return None
        conn.setblocking(False)
        self.buffers[conn] = bytearray()
        return conn

    def readable(self, conn: socket.socket) -> bool:
        """Read from a client; answer a complete request. False once it is done
        (the caller then unregisters and drop()s it)."""
        buf = self.buffers.get(conn)
        if buf is None:
            return False
        try:
            data = conn.recv(MAX_REQUEST)
        except BlockingIOError:
            return True
        except OSError:
            data = b""
        buf += data
        if b"\n" not in buf and data and len(buf) < MAX_REQUEST:
            return True
        line = bytes(buf).split(b"\n", 1)[0]
        import json  # on the first request, not at start-up: the master rarely gets one

        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("request must be a JSON object")
            response = self.handler(request)
        except ValueError as exc:
            response = {"ok": False, "error": f"bad request: {exc}"}
        except Exception as exc:  # a bug must not take the master down
            log.exception("control request %r failed", line[:200])
            response = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        self._reply(conn, response)
        return False

    @staticmethod
    def _reply(conn: socket.socket, response: dict[str, Any]) -> None:
        import json

        try:
            conn.send(json.dumps(response).encode() + b"\n")
        except OSError:
            pass  # the client left, or is not reading: nothing to do

    def drop(self, conn: socket.socket) -> None:
        self.buffers.pop(conn, None)
        conn.close()
        self._resume()  # below the cap again

    def close(self) -> None:
        self._selector = None  # nothing is registered again
        for conn in list(self.buffers):
            self.drop(conn)
        self.sock.close()
        try:
            if os.lstat(self.path).st_ino == self.inode:  # not a successor's socket
                os.unlink(self.path)
        except OSError:
            pass


def request(path: str, payload: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Client side: one request, one response."""
    import json

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(json.dumps(payload).encode() + b"\n")
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
            if data.endswith(b"\n"):
                break
    return json.loads(b"".join(chunks) or b"{}")
