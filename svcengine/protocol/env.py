"""The environment contracts across an exec: the USR2 upgrade and spawn workers.

- Upgrade (old master -> the new master it execs): the listening sockets by systemd's
  socket-activation protocol (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES, fds from 3), their own
  addresses (SVCENGINE_LISTEN_ADDRS, JSON: names may contain ':'), the old master's pid
  (SVCENGINE_UPGRADE_FROM) and the hand-over channel's fd (SVCENGINE_UPGRADE_FD).
- Spawn (master -> `python -m svcengine.spawned`): SVCENGINE_SPAWN, a JSON spec with a
  version field `v`; a spec without one is version 1 (what svcengine wrote before it had one).

Readers pop what they read: a worker or a later child must not see a stale contract.
Standard library only, and json is imported only where a contract is actually used.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from typing import Any

UPGRADE_FROM = "SVCENGINE_UPGRADE_FROM"  # the old master's pid, in the new master's env
UPGRADE_FD = "SVCENGINE_UPGRADE_FD"  # the new master's end of the hand-over channel
LISTEN_ADDRS = "SVCENGINE_LISTEN_ADDRS"  # the sockets' own names, JSON
LISTEN_FDS = "LISTEN_FDS"
LISTEN_PID = "LISTEN_PID"
LISTEN_FDNAMES = "LISTEN_FDNAMES"
LISTEN_FDS_START = 3  # SD_LISTEN_FDS_START
SPAWN = "SVCENGINE_SPAWN"
SPAWN_VERSION = 1

Environ = MutableMapping[str, str]


def _env(environ: Environ | None) -> Environ:
    return os.environ if environ is None else environ


# --- upgrade -------------------------------------------------------------------------------
def upgrade_env(names: list[str], old_pid: int, new_pid: int, channel_fd: int) -> dict[str, str]:
    """What the old master adds to the new master's environment (the sockets at fds 3..,
    in the order of `names`; the channel right after them)."""
    import json  # in the process that execs the new master: nowhere else

    env = {UPGRADE_FROM: str(old_pid), UPGRADE_FD: str(channel_fd)}
    if names:
        env.update(
            {
                LISTEN_FDS: str(len(names)),
                LISTEN_PID: str(new_pid),
                LISTEN_FDNAMES: ":".join(f"svc{i}" for i in range(len(names))),
                LISTEN_ADDRS: json.dumps(names),
            }
        )
    return env


def upgraded_from(environ: Environ | None = None) -> int | None:
    """In a new master: the old master's pid (and forget it, for our own children)."""
    value = _env(environ).pop(UPGRADE_FROM, None)
    return int(value) if value and value.isdigit() else None


def upgrade_fd(environ: Environ | None = None) -> int | None:
    """In a new master: its end of the hand-over channel (None: an older old master)."""
    value = _env(environ).pop(UPGRADE_FD, "")
    return int(value) if value.isdigit() else None


def adopted(environ: Environ | None = None, pid: int | None = None) -> list[tuple[int, str]] | None:
    """Sockets passed to this process (pid) by socket activation, as (fd, name); None if none
    were. An upgrading master's names win over systemd's FDNAMES. The variables are removed."""
    env = _env(environ)
    try:
        if int(env.get(LISTEN_PID, "0")) != (os.getpid() if pid is None else pid):
            return None
        count = int(env.get(LISTEN_FDS, "0"))
    except ValueError:
        return None
    names = env[LISTEN_FDNAMES].split(":") if env.get(LISTEN_FDNAMES) else []
    addrs = env.get(LISTEN_ADDRS)
    if addrs:
        import json  # only after an upgrade

        try:
            names = [str(a) for a in json.loads(addrs)]
        except ValueError:
            pass
    for key in (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES, LISTEN_ADDRS):
        env.pop(key, None)
    out = []
    for i in range(count):
        fd = LISTEN_FDS_START + i
        out.append((fd, names[i] if i < len(names) else f"fd{fd}"))
    return out


# --- spawn workers -------------------------------------------------------------------------
def encode_spawn(spec: dict[str, Any]) -> str:
    """The SVCENGINE_SPAWN value: worker_id, master_pid, status_fd, life_fd, beat_fd,
    beat_index, beat_capacity, sockets (fds), config (values), sys_path, source."""
    import json  # only the spawn worker type needs it, and the caller execs at once

    return json.dumps({"v": SPAWN_VERSION, **spec})


def decode_spawn(value: str) -> dict[str, Any]:
    """The spec back; ValueError for one from a newer svcengine than this code."""
    import json

    spec = json.loads(value)
    if not isinstance(spec, dict):
        raise ValueError(f"{SPAWN}: not a JSON object")
    version = spec.pop("v", 1)
    if version != SPAWN_VERSION:
        raise ValueError(f"{SPAWN}: spec version {version!r}, this svcengine reads {SPAWN_VERSION}")
    return spec
