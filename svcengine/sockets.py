"""Listening sockets: bound once in the master, inherited by every worker.

Sockets come from systemd socket activation (LISTEN_FDS) when present, else
from the `listen` addresses. They are bound before any worker forks, so a
worker restart or a reload never closes them and no connection is refused.
"""

from __future__ import annotations

import os
import socket
import stat
from dataclasses import dataclass

from .config import ConfigError

SD_LISTEN_FDS_START = 3
UNIX_PATH_MAX = 107  # bytes of sun_path, without its terminating NUL


@dataclass
class Listener:
    name: str
    sock: socket.socket
    inode: int | None = None  # of a unix socket file we bound: unlink only that one

    def fileno(self) -> int:
        return self.sock.fileno()


def parse_address(addr: str) -> tuple[int, object]:
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


def bind(addr: str, backlog: int = 1024) -> Listener:
    family, address = parse_address(addr)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family == socket.AF_UNIX:
            path = str(address)
            try:
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    os.unlink(path)  # left over by a previous run
            except FileNotFoundError:
                pass
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
    env = os.environ if environ is None else environ
    try:
        if int(env.get("LISTEN_PID", "0")) != os.getpid():
            return None
        count = int(env.get("LISTEN_FDS", "0"))
    except ValueError:
        return None
    names = env.get("LISTEN_FDNAMES", "").split(":") if env.get("LISTEN_FDNAMES") else []
    addrs = env.get("SVCENGINE_LISTEN_ADDRS")  # set by an upgrading master
    if addrs:
        import json  # only after an upgrade

        try:
            names = [str(a) for a in json.loads(addrs)]
        except ValueError:
            pass
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "SVCENGINE_LISTEN_ADDRS"):
        env.pop(key, None)
    out = []
    for i in range(count):
        fd = SD_LISTEN_FDS_START + i
        os.set_inheritable(fd, False)
        sock = socket.socket(fileno=fd)
        out.append(Listener(names[i] if i < len(names) else f"fd{fd}", sock))
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
