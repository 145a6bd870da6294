"""The control socket's server side: every `svcengine ctl` command talks to the master here.

AF_UNIX stream socket, mode 0600, in the service's runtime directory (rundir.py). Each
connection sends one JSON line and gets one JSON line back, which names the
master's pid. Both sides check the other with SO_PEERCRED: the master answers
only root and the service's own user; ctl (cli/client.py) believes only a server whose
kernel-reported pid is the pid it answers, run by root, by ctl's user or by the owner
of the socket's directory. Connections are non-blocking and served by the
master's one loop, so a slow or silent client can never stall it (it is
dropped after a few seconds).
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
from collections.abc import Callable
from typing import Any

from .rundir import make_runtime_dir
from .timers import Timers
from .unix import linux as _linux
from .unix import sockets

log = logging.getLogger("svcengine.control")

MAX_REQUEST = 4096
CLIENT_TIMEOUT = 5.0  # seconds a client may take to send its request
MAX_CLIENTS = 16  # clients held at once; more wait in the listen backlog
ACCEPT_PAUSE = 1.0  # seconds without accept() after it ran out of descriptors or memory
# accept() failures that say "not now" (the process or the system is out of something),
# not "this socket is broken": pause accepting instead of spinning or dying
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


def peer_uid(conn: socket.socket) -> int:
    return _linux.peer_credentials(conn)[1]


class AlreadyServed(Exception):
    """Another live master answers at our control socket's path (two instances, one name)."""

    def __init__(self, path: str, pid: int | None) -> None:
        who = f"pid {pid}" if pid else "another process"
        super().__init__(f"already running: {path} is served by {who}")


class ControlServer:
    def __init__(
        self,
        path: str,
        handler: Callable[[dict[str, Any]], dict[str, Any]],
        allowed_uids: set[int],
        replaces: int | None = None,
        runtime_dir: bool = False,
    ) -> None:
        """Listen at path. A live socket there stays its server's (AlreadyServed), unless
        that server is `replaces`, the master an upgrade takes over from. With runtime_dir,
        path's directory is /run/svcengine/NAME: made or accepted by make_runtime_dir."""
        self.path = path
        self.handler = handler
        self.allowed = allowed_uids | {0}
        directory = os.path.dirname(path) or "."
        # ours to remove on exit if we make it (the leaf only) and leave it empty
        self.made_dir = None if os.path.isdir(directory) else directory
        if runtime_dir:
            make_runtime_dir(directory)  # raises UnsafeDirectory
        else:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # born 0600: no window where others may connect
        try:
            sockets.bind_unix(self.sock, path, 16, replaces)
        except sockets.InUse as exc:
            self.sock.close()
            raise AlreadyServed(path, exc.pid) from None
        except BaseException:
            self.sock.close()
            self._remove_made_dir()
            raise
        finally:
            os.umask(old)
        self.inode = os.stat(path).st_ino
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
        self._reply(conn, {**response, "pid": os.getpid()})  # whom ctl may check it against
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
        self._remove_made_dir()

    def _remove_made_dir(self) -> None:
        if self.made_dir is not None:
            try:
                os.rmdir(self.made_dir)  # only if empty: a successor's socket keeps it
            except OSError:
                pass
