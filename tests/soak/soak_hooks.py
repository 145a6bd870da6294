"""Hooks the soak loads into its master (`hooks = "soak_hooks"` in its config).

before_fork applies RLIMIT_NPROC = 1 to the master itself while the flag file
$SVC_SOAK_CMD_DIR/nproc-limit exists, and puts the old limit back at the first fork after it is
gone: the soak's fork-failure fault. (From outside, prlimit(2) on the master needs
CAP_SYS_RESOURCE, or the caller's uids equal to all of the master's; the soak's master runs with
real uid != effective uid, and test containers often lack the capability.)
"""

from __future__ import annotations

import os
import resource

_saved: tuple[int, int] | None = None


def before_fork(server: object, slot: object) -> None:
    global _saved
    limited = os.path.exists(os.path.join(os.environ["SVC_SOAK_CMD_DIR"], "nproc-limit"))
    if limited and _saved is None:
        _saved = resource.getrlimit(resource.RLIMIT_NPROC)
        resource.setrlimit(resource.RLIMIT_NPROC, (1, _saved[1]))
    elif not limited and _saved is not None:
        resource.setrlimit(resource.RLIMIT_NPROC, _saved)
        _saved = None
