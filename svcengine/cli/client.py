"""The client side of the control socket: what `svcengine ctl` uses to ask the master.

One JSON line out, one back. Nothing the answer says is trusted on its own: the server's pid
and uid come from the kernel (SO_PEERCRED), and the server must be root, ctl's user or the
owner of the socket's directory.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import rundir
from ..unix import linux as _linux
from ..unix import pidfile


@dataclass(frozen=True)
class Peer:
    """The control socket's server, as the kernel reports it (SO_PEERCRED)."""

    pid: int
    uid: int


class Untrusted(OSError):
    """The control socket's server is not who it should be: ctl acts on nothing it says."""


def service_uids(path: str) -> set[int]:
    """Who may serve the control socket at path, besides root and ctl's own user: the owner
    of its directory (the service's user, who made its runtime directory). Not the socket
    file's owner: whoever serves a planted socket owns it."""
    try:
        return {os.stat(os.path.dirname(path) or ".").st_uid}
    except OSError:
        return set()


def check_server(path: str, peer: Peer, service: set[int]) -> None:
    """Raise Untrusted unless the server runs as root, as us, or as the service's user."""
    if peer.pid <= 0:
        raise Untrusted(f"cannot tell who serves the control socket at {path}: refusing")
    if peer.uid not in {0, os.geteuid(), *service}:
        raise Untrusted(
            f"the control socket at {path} is served by uid {peer.uid} (pid {peer.pid}), "
            "not by root, you or the owner of its directory: refusing"
        )


def trusted_pid(path: str, peer: Peer, answered: object, service: set[int]) -> int:
    """The master's pid: the server's own, as the kernel reports it. An answer naming any
    other pid (say -1, which kill() would read as "every process") is refused."""
    check_server(path, peer, service)
    if answered is None:
        return peer.pid  # an older master's answer without a pid: the kernel's word alone
    if type(answered) is not int or answered != peer.pid:
        raise Untrusted(
            f"the control socket at {path} is served by pid {peer.pid}, "
            f"which answered pid {answered!r}: refusing"
        )
    return peer.pid


def ask(
    path: str,
    payload: dict[str, Any],
    timeout: float = 10.0,
    check: Callable[[Peer], None] | None = None,
) -> tuple[dict[str, Any], Peer]:
    """One request, one response, and who answered. `check` sees the server before
    anything is sent to it, and may raise to send nothing."""
    import json

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        pid, uid, _ = _linux.peer_credentials(s)
        peer = Peer(pid, uid)
        if check is not None:
            check(peer)
        try:
            s.sendall(json.dumps(payload).encode() + b"\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # a refused uid is answered and closed at once: its answer is there to read
        chunks = []
        while True:
            try:
                data = s.recv(65536)
            except ConnectionResetError:  # closed with our request unread, after its answer
                break
            if not data:
                break
            chunks.append(data)
            if data.endswith(b"\n"):
                break
    reply = json.loads(b"".join(chunks) or b"{}")
    if not isinstance(reply, dict):
        raise ValueError(f"the control socket at {path} answered {reply!r}")
    return reply, peer


def request(path: str, payload: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """One request, one response, no identity check (tests and tools that made the socket)."""
    return ask(path, payload, timeout)[0]


class NotAnswering(OSError):
    """No control socket answers (none there, or a stale file): the fallback's cue."""

    def __init__(self, where: str) -> None:
        self.where = where
        super().__init__(f"not running (nothing answers at {where})")


def socket_paths(sock: str | None, pid_path: str | None, name: str | None) -> list[str]:
    """Where the master may answer: --socket, beside --pid's pidfile, or in --name's
    runtime directory (which must be one we may trust: UnsafeDirectory otherwise)."""
    if sock:
        return [sock]
    if pid_path:
        return [str(rundir.socket_path(None, pid_path, ""))]
    paths = rundir.name_candidates(name or "")
    if not paths:
        raise OSError(rundir.no_runtime_dir(name or ""))
    for path in paths:
        rundir.check_runtime_dir(os.path.dirname(path))  # raises UnsafeDirectory
    return paths


def ask_master(
    paths: list[str], pid_path: str | None, payload: dict[str, Any]
) -> tuple[dict[str, Any], int]:
    """Ask the master at the first of paths that exists; return its answer and its pid,
    proven by the kernel (and by --pid's lock, if given). NotAnswering when nobody does."""
    path = next((p for p in paths if os.path.exists(p)), paths[0])
    # a rewritten pidfile stops us before anything is sent
    locked = pidfile.holder(pid_path) if pid_path else None
    service = service_uids(path)

    def check(peer: Peer) -> None:
        check_server(path, peer, service)
        if locked is not None and peer.pid != locked:
            raise Untrusted(
                f"the control socket at {path} is served by pid {peer.pid}, but "
                f"{pid_path} is locked by pid {locked}: refusing"
            )

    try:
        reply, peer = ask(path, payload, check=check)
    except (FileNotFoundError, ConnectionRefusedError):
        raise NotAnswering(" or ".join(paths)) from None
    error = str(reply.get("error") or "")
    if not reply.get("ok") and "not allowed" in error:
        raise PermissionError(error)  # the master's answer to a uid it does not serve
    return reply, trusted_pid(path, peer, reply.get("pid"), service)
