"""The "app code is running" marker both peers' apps send to the bench.

One datagram to the unix socket named by $SVCBENCH_MARKER:
``KIND PID PPID MONOTONIC_NS WORKER_ID``. The time is taken first thing, with
CLOCK_MONOTONIC, the clock the kernel's proc-connector timestamps use.
Without $SVCBENCH_MARKER this is a no-op, so the apps also run outside the bench.
"""

import os
import socket
import time

ENV = "SVCBENCH_MARKER"


def emit(kind: str, worker_id: int = -1) -> None:
    t_ns = time.monotonic_ns()
    path = os.environ.get(ENV)
    if not path:
        return
    msg = f"{kind} {os.getpid()} {os.getppid()} {t_ns} {worker_id}".encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            s.sendto(msg, path)
        except OSError:
            pass  # the bench is gone or not listening: nothing to report to
