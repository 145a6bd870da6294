"""Listening sockets: bound once in the master, inherited by every worker.

Sockets come from systemd socket activation (LISTEN_FDS) when present, else
from the `listen` addresses. They are bound before any worker forks, so a
worker restart or a reload never closes them and no connection is refused.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ..errors import ConfigError
from ..protocol import env as protoenv
from . import linux as _linux

UNIX_PATH_MAX = 107  # bytes of sun_path, without its terminating NUL


@dataclass
class Listener:
    name: str
    sock: socket.socket
    inode: int | None = None  # of a unix socket file we bound: unlink only that one

    def fileno(self) -> int:
        return self.sock.fileno()


def parse_address(addr: str) -> tuple[socket.AddressFamily, str | tuple[str, int]]:
    """'unix:/run/x.sock', '[::1]:8000', '127.0.0.1:8000', ':8000' -> (family, address)."""
    if addr.startswith("unix:"):
        path = addr[5:]
        if not path:
            raise ValueError("empty unix socket path")
        if len(os.fsencode(path)) > UNIX_PATH_MAX:
            raise ValueError(f"unix socket path longer than {UNIX_PATH_MAX} bytes: {path!r}")
        return socket.AF_UNIX, path
    host, sep, port = addr.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()):
        raise ValueError(f"expected HOST:PORT or unix:PATH, got {addr!r}")
    if not 0 <= int(port) <= 65535:
        raise ValueError(f"port {int(port)} out of 0..65535 in {addr!r}")
    if host.startswith("[") and host.endswith("]"):
        return socket.AF_INET6, (host[1:-1], int(port))
    return socket.AF_INET, (host or "0.0.0.0", int(port))


class InUse(OSError):
    """A live socket is at a unix path we were to listen on: its server keeps it."""

    def __init__(self, path: str, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        by = f" (opened by pid {pid})" if pid else ""
        super().__init__(errno.EADDRINUSE, f"in use by a live socket{by}; left alone")


def listener_pid(path: str) -> int | None:
    """Connect to the unix socket at path: the pid that listens there (0 if unknown), or
    None when nothing does (a stale file a crashed run left behind)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.setblocking(False)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            return None
        except BlockingIOError:
            return 0  # alive, with its backlog full
        pid = _linux.peer_credentials(probe)[0]
        return pid if pid > 0 else 0


@contextmanager
def _directory_locked(directory: str, timeout: float = 2.0) -> Iterator[None]:
    """Serialise probe-unlink-bind-listen among svcengine processes in one directory: a
    socket bound but not yet listening looks stale to a probe. Best effort: a directory we
    cannot open or lock (NFS) is used unlocked, and a lock held too long is not waited for."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        yield
        return
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.005)  # another start is binding here: microseconds
            except OSError:
                break
        yield
    finally:
        os.close(fd)  # drops the lock


def bind_unix(sock: socket.socket, path: str, backlog: int, replaces: int | None = None) -> None:
    """Bind and listen at path. A stale socket file there is removed; a live one is left
    alone and raises InUse (Unicorn's rule), unless its server is `replaces`: the master
    an upgrade takes over from."""
    with _directory_locked(os.path.dirname(path) or "."):
        try:
            sock.bind(path)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            try:
                is_socket = stat.S_ISSOCK(os.lstat(path).st_mode)
            except FileNotFoundError:
                is_socket = False
            if not is_socket:
                raise
            pid = listener_pid(path)
            if pid is not None and (replaces is None or pid != replaces):
                raise InUse(path, pid) from None
            os.unlink(path)
            sock.bind(path)
        sock.listen(backlog)


def bind(addr: str, backlog: int = 1024) -> Listener:
    family, address = parse_address(addr)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family == socket.AF_UNIX:
            bind_unix(sock, str(address), backlog)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    inode = os.stat(str(address)).st_ino if family == socket.AF_UNIX else None
    return Listener(addr, sock, inode)


def unlink_if_ours(path: str, inode: int | None) -> None:
    """Remove a unix socket file only if it is still the one we bound."""
    if inode is None:
        return
    try:
        if os.lstat(path).st_ino == inode:
            os.unlink(path)
    except OSError:
        pass


def from_systemd(environ: dict[str, str] | None = None) -> list[Listener] | None:
    """Adopt sockets passed by the socket-activation protocol, or None if none were.

    The variables are removed so workers and children do not see them.
    """
    passed = protoenv.adopted(environ)
    if passed is None:
        return None
    out = []
    for fd, name in passed:
        os.set_inheritable(fd, False)
        out.append(Listener(name, socket.socket(fileno=fd)))
    return out


def open_all(addresses: list[str], source: str | None) -> list[Listener]:
    activated = from_systemd()
    if activated is not None:
        return activated
    listeners: list[Listener] = []
    try:
        for addr in addresses:
            try:
                listeners.append(bind(addr))
            except ValueError as exc:
                raise ConfigError(str(exc), "listen", source) from None
            except OSError as exc:
                raise OSError(exc.errno, f"cannot listen on {addr}: {exc.strerror}") from None
    except BaseException:
        for listener in listeners:
            listener.sock.close()
        raise
    return listeners
