"""`python -m svcengine.spawned`: the entry of a worker_type = "spawn" worker.

A fresh interpreter, exec'd by a forked child of the master (PDEATHSIG is
already armed and survives exec). It rebuilds the worker's world from the fds
named in SVCENGINE_SPAWN and imports the worker class by its path, so nothing
of the master's memory, threads or locks comes along.
"""

from __future__ import annotations

import mmap
import os
import socket
import sys

from . import channel, child, config
from .hooks import Hooks
from .protocol.env import SPAWN, decode_spawn
from .spawn import boot
from .unix import log as logsetup


def main() -> int:
    spec = decode_spawn(os.environ.pop(SPAWN))
    cfg = config.from_mapping(spec["config"], spec["source"])
    logsetup.setup(cfg.log_level)  # fd 2 is already the master's log (file or journal)
    for entry in reversed(spec["sys_path"]):  # the master's import path, as a fork would have
        if entry not in sys.path:
            sys.path.insert(0, entry)
    for entry in reversed(cfg.python_path):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    hooks = Hooks()
    if cfg.hooks:
        hooks.load_module(cfg.hooks)
    size = spec["beat_capacity"] * 8
    beats = mmap.mmap(spec["beat_fd"], size)
    os.close(spec["beat_fd"])
    for fd in (spec["status_fd"], spec["life_fd"]):
        os.set_inheritable(fd, False)
    sockets = [socket.socket(fileno=fd) for fd in spec["sockets"]]
    for s in sockets:
        s.set_inheritable(False)
    return boot(
        worker_id=spec["worker_id"],
        cfg=cfg,
        master_pid=spec["master_pid"],
        status_fd=spec["status_fd"],
        life_fd=spec["life_fd"],
        beat=channel.Beat(beats, spec["beat_index"]),
        sockets=sockets,
        worker_class=None,
        after_fork=lambda w: hooks.call_strict("after_fork", None, w),
        unblock=lambda: None,
    )


if __name__ == "__main__":
    child.finish(main())
