"""Hooks the soak loads into its master (`hooks = "soak_hooks"` in its config).

before_fork applies RLIMIT_NPROC = 1 to the master itself and to its mold (which forks the
workers; found by its title, as a child of the master may be limited) while the flag file
$SVC_SOAK_CMD_DIR/nproc-limit exists, and puts the old limit back at the first fork after it is
gone: the soak's fork-failure fault. (From outside, prlimit(2) on the master needs
CAP_SYS_RESOURCE, or the caller's uids equal to all of the master's; the soak's master runs with
real uid != effective uid, and test containers often lack the capability.)
"""

from __future__ import annotations

import os
import resource

_saved: tuple[int, int] | None = None


def _molds() -> list[int]:
    me = os.getpid()
    with open(f"/proc/{me}/task/{me}/children") as f:
        kids = [int(p) for p in f.read().split()]
    found = []
    for pid in kids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().startswith(b"svcengine mold "):
                    found.append(pid)
        except OSError:
            continue
    return found


def _limit(limits: tuple[int, int]) -> None:
    resource.setrlimit(resource.RLIMIT_NPROC, limits)
    for pid in _molds():
        try:
            resource.prlimit(pid, resource.RLIMIT_NPROC, limits)
        except ProcessLookupError:
            pass


def before_fork(server: object, slot: object) -> None:
    global _saved
    limited = os.path.exists(os.path.join(os.environ["SVC_SOAK_CMD_DIR"], "nproc-limit"))
    if limited and _saved is None:
        _saved = resource.getrlimit(resource.RLIMIT_NPROC)
        _limit((1, _saved[1]))
    elif not limited and _saved is not None:
        _limit(_saved)
        _saved = None
