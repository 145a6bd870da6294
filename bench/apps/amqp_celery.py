"""The AMQP bench's Celery peer: one no-op task doing what the other peers do.

acks_late: acked after the task ran (as the Consumer acks after handle());
prefetch = worker_prefetch_multiplier x concurrency, set from the bench.
"""

from __future__ import annotations

import os
import time

from celery import Celery
from celery.signals import worker_process_init

app = Celery("amqp_celery", broker=os.environ.get("SVCBENCH_URL", "amqp://"))
app.conf.update(
    task_acks_late=True,
    task_default_queue=os.environ.get("SVCBENCH_QUEUE", "celery"),
    worker_prefetch_multiplier=int(os.environ.get("SVCBENCH_PREFETCH", "10")),
    task_ignore_result=True,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)
_fd: list[int] = []


@worker_process_init.connect
def _open(**_: object) -> None:
    _fd.append(
        os.open(
            f"{os.environ['SVCBENCH_OUT']}/ticks-{os.getpid()}",
            os.O_WRONLY | os.O_APPEND | os.O_CREAT,
        )
    )


@app.task(name="tick")
def tick() -> None:
    os.write(_fd[0], b"%d\n" % time.monotonic_ns())
