"""The bounds a configuration is checked against, and which keys only a start applies.

Standard library only: the config, TTIN/`ctl scale` and the master's checks share them.
"""

from __future__ import annotations

MAX_WORKERS = 4096  # a pool, not a fork bomb: `ctl scale` and TTIN stop here too
# Longest duration: a week. Every timer ends as a select() timeout in milliseconds, which
# must fit a C int (24.8 days); nan or inf would turn a graceful stop into an instant KILL.
MAX_SECONDS = 7 * 86400.0
MIN_HEARTBEAT_INTERVAL = 0.01  # below this the master would do little but check heartbeats
NAME_MAX = 64  # /run/svcengine/NAME/control.sock must fit sun_path (108 bytes)
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_.-@\\")

# keys a HUP cannot apply: they shape the master itself (its signals, sockets, pidfile, control
# socket, log, title) or what each worker becomes at fork. An upgrade (USR2) or a restart does.
START_ONLY = (
    "name",
    "worker_type",
    "signal_map",
    "listen",
    "pid_path",
    "control_socket",
    "log",
    "hooks",
    "preload",
    "mold",
    "subreaper",
    "chuser",
    "chgroup",
    "chumask",
    "daemon_process_name",
)


def check_workers(n: int) -> int:
    """The one bound on a pool's size, for the config, TTIN and `ctl scale` alike."""
    if n < 0:
        raise ValueError(f"must be >= 0, got {n}")
    if n > MAX_WORKERS:
        raise ValueError(f"must be <= {MAX_WORKERS}, got {n}")
    return n


def check_name(name: str) -> str:
    """A service name is one path component under /run/svcengine (systemd's unit-name
    characters: letters, digits, `:_.-@\\`); it must not be `.`, `..` or hidden."""
    if len(name) > NAME_MAX:
        raise ValueError(f"a service name has at most {NAME_MAX} characters")
    bad = sorted(set(name) - _NAME_CHARS)
    if bad:
        raise ValueError(
            f"invalid service name {name!r}: {bad[0]!r} is not allowed "
            "(letters, digits and :_.-@\\ only)"
        )
    if name.startswith("."):
        raise ValueError(f"invalid service name {name!r}: it must not start with '.'")
    return name
