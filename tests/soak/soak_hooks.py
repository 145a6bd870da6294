"""Hooks the soak loads into its master (`hooks = "soak_hooks"` in its config).

A timer of the master's loop (server.every) applies RLIMIT_NPROC = 1 to the master itself
while the flag file $SVC_SOAK_CMD_DIR/nproc-limit exists and puts the old limit back once it
is gone: the soak's fork-failure fault (the fault then kills the mold, which the master cannot
fork again until the limit is gone). From outside, prlimit(2) on the master needs
CAP_SYS_RESOURCE, or the caller's uids equal to all of the master's; the soak's master runs
with real uid != effective uid, and test containers often lack the capability.
"""

from __future__ import annotations

import os
import resource
from typing import Any

_saved: tuple[int, int] | None = None


def _follow_flag() -> None:
    global _saved
    limited = os.path.exists(os.path.join(os.environ["SVC_SOAK_CMD_DIR"], "nproc-limit"))
    if limited and _saved is None:
        _saved = resource.getrlimit(resource.RLIMIT_NPROC)
        resource.setrlimit(resource.RLIMIT_NPROC, (1, _saved[1]))
    elif not limited and _saved is not None:
        resource.setrlimit(resource.RLIMIT_NPROC, _saved)
        _saved = None


def when_ready(server: Any) -> None:
    server.every(0.05, _follow_flag)
