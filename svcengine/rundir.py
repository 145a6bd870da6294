"""The runtime directory: where a service named NAME keeps its control socket.

Both sides need it: the master makes the directory (0700) and refuses one someone else
controls; `svcengine ctl --name` refuses to trust a socket in such a directory. One module,
so the two sides' rules cannot drift apart.
"""

from __future__ import annotations

import os
import stat

from .config import check_name


class UnsafeDirectory(PermissionError):
    """A runtime directory someone else controls: a socket there is not ours to trust."""


def runtime_dir(name: str) -> str | None:
    """Where a service named `name` keeps its control socket.

    Raises ValueError for a name that is not a single safe path component (`../x`, `/x`).
    """
    check_name(name)
    given = os.environ.get("RUNTIME_DIRECTORY")
    if given:
        return given.split(":")[0]
    base = "/run" if os.geteuid() == 0 else os.environ.get("XDG_RUNTIME_DIR")
    if not base:
        return None
    return os.path.join(base, "svcengine", name or "default")


def no_runtime_dir(name: str) -> str:
    """Why runtime_dir(name) found nothing, for an error message."""
    return (
        f"no runtime directory for --name {name or 'default'}: XDG_RUNTIME_DIR is not set "
        "(a non-root user's services keep their sockets there); give --socket or --pid"
    )


def name_candidates(name: str) -> list[str]:
    """Where a service started with --name may have its control socket: its runtime
    directory, or next to /run/svcengine/NAME.pid (svcengine-forking@.service gives --pid,
    and a pidfile puts the socket beside it)."""
    directory = runtime_dir(name)
    if directory is None:
        return []
    out = [os.path.join(directory, "control.sock")]
    if name:
        out.append(os.path.join(os.path.dirname(directory), f"{name}.ctl"))
    return out


def _check_dir(path: str, owners: set[int] | None, parent: bool = False) -> None:
    """Refuse a directory that is a symlink, owned by someone not in `owners`, or writable
    by others (a parent may be, with the sticky bit, like /tmp)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise UnsafeDirectory(f"runtime directory {path} is not a directory (a symlink?)")
    if owners is not None and st.st_uid not in owners:
        who = " or ".join(f"uid {u}" for u in sorted(owners))
        raise UnsafeDirectory(
            f"runtime directory {path} is owned by uid {st.st_uid}, not {who}; refusing it"
        )
    if st.st_mode & 0o022 and not (parent and st.st_mode & stat.S_ISVTX):
        raise UnsafeDirectory(
            f"runtime directory {path} is writable by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); refusing it"
        )


def make_runtime_dir(directory: str) -> None:
    """The master's side: create its runtime directory (0700), or accept an existing one
    only if this user owns it and no one else may write to it or to its parent."""
    euid = os.geteuid()
    old = os.umask(0o022)  # a parent we create (/run/svcengine) is 0755 whatever chumask says
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    finally:
        os.umask(old)
    _check_dir(os.path.dirname(directory), {0, euid}, parent=True)
    _check_dir(directory, {euid})


def check_runtime_dir(directory: str) -> None:
    """The client's side (`ctl --name`): only a directory root or we own, that no one
    else may write to, can hold the socket we are about to trust."""
    owners = {0, os.geteuid()}
    _check_dir(os.path.dirname(directory), owners, parent=True)
    _check_dir(directory, owners)


def socket_path(control_socket: str | None, pid_path: str | None, name: str) -> str | None:
    """The control socket's path: explicit, next to the pidfile, or in the runtime dir."""
    if control_socket:
        return control_socket
    if pid_path:
        root, ext = os.path.splitext(pid_path)
        return (root if ext == ".pid" else pid_path) + ".ctl"
    directory = runtime_dir(name)
    return os.path.join(directory, "control.sock") if directory else None
