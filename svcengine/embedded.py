"""worker_type = "embedded": no pool, no master loop; the one worker is the process.

For a single worker under a supervisor that already is one (systemd, a
container runtime). Signals map to the worker directly: TERM stops it, INT
and QUIT end the process, HUP calls reload(), USR1 reopens the log. READY=1 is
sent when the worker is ready, STOPPING=1 on TERM. There is no loop to ping a
watchdog from, so WatchdogSec= must not be set for an embedded service.
"""

from __future__ import annotations

import logging
import os
import signal
import traceback
from typing import TYPE_CHECKING, Any, Protocol

from . import child
from .child.boot import boot_error, construct
from .signals import PRESETS
from .unix import log as logsetup
from .unix import proctitle
from .unix.systemd import Notifier

if TYPE_CHECKING:
    from .config import Config
    from .hooks import Hooks
    from .unix.sockets import Listener
    from .worker import Worker

log = logging.getLogger("svcengine")


class Server(Protocol):
    """What embedded mode uses of server.Server (named here so nothing points up)."""

    config: Config
    hooks: Hooks
    worker_class: type[Worker] | None
    boot_failure: Any

    def announce_ready(self) -> None: ...


def run(server: Server, listeners: list[Listener], notifier: Notifier) -> int:
    cfg = server.config
    proctitle.set_title(proctitle.master_title(cfg.name, cfg.daemon_process_name))
    logsetup.set_label("embedded")

    def on_ready() -> None:
        log.info("ready: embedded worker")
        server.hooks.call("when_ready", server)
        notifier.ready(status="embedded worker ready", mainpid=os.getpid())
        server.announce_ready()

    runtime = child.Runtime(
        worker_id=0,
        config=cfg,
        master_pid=os.getpid(),
        status_fd=-1,
        life_fd=None,
        beat=lambda: None,
        sockets=[s.sock for s in listeners],
        on_ready=on_ready,
    )
    runtime.install_signals()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, PRESETS[cfg.signal_map])  # held since start-up

    try:
        worker = construct(
            runtime,
            server.worker_class,
            lambda w: server.hooks.call_strict("after_fork", server, w),
        )
    except Exception as exc:
        log.error("the embedded worker failed to boot:\n%s", traceback.format_exc().rstrip())
        server.boot_failure = f"worker 0 failed to boot: {boot_error(exc)}"
        return 1
    runtime.start_watcher()
    if worker.ready_on_run:
        runtime.ready()
    try:
        worker.run()
    except Exception:
        log.exception("the embedded worker's run() raised")
        return 1
    finally:
        signal.set_wakeup_fd(-1)
        notifier.stopping()
    log.info("embedded worker finished")
    return 0
