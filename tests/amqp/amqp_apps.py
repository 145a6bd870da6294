"""Consumer workers for the broker tests: each handling is recorded before the ack.

A record line is `id pid redelivered time`, written with one O_APPEND write
(atomic for a short line), so a worker killed after the write and before its
ack shows up as a duplicate, and one killed before the write as a redelivery.
The body says what to do: `sleep:S` (sleep S seconds first), `sleep-first:S`
(only on the first delivery), `fail` (always raise), `fail-once` (raise on the
first try only), anything else: just record.
"""

from __future__ import annotations

import os
import time

from svcengine.amqp import Consumer, Message


class Recording(Consumer):
    def run(self) -> None:
        base = os.environ["SVC_TEST_DIR"]
        self.record_fd = os.open(f"{base}/handled.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        self.start_fd = os.open(f"{base}/started.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        super().run()

    def handle(self, message: Message) -> None:
        body = message.body.decode()
        mid = message.message_id
        os.write(self.start_fd, f"{mid} {self.pid} {int(message.redelivered)}\n".encode())
        if body.startswith("sleep:"):
            time.sleep(float(body.split(":")[1]))
        elif body.startswith("sleep-first:") and not message.redelivered:
            time.sleep(float(body.split(":")[1]))
        elif body == "fail" or body == "fail-once" and message.retries == 0:
            raise ValueError(f"cannot handle {mid}")
        elif body.startswith("work:"):
            time.sleep(float(body.split(":")[1]))
        line = f"{mid} {self.pid} {int(message.redelivered)} {time.time():.3f}\n"
        os.write(self.record_fd, line.encode())
