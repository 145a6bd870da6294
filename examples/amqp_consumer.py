"""A RabbitMQ consumer run as an svcengine service (`pip install svcengine[amqp]`).

    svcengine --foreground --config amqp_consumer.toml
    (run from this directory, or put it on `python_path`)

handle() is called once per message; when it returns the message is acked,
when it raises the message is retried (`retry_limit` times), then
dead-lettered. TERM, HUP, USR2 and TTOU let the message in hand finish and
ack it; kill -9 of a worker or of the master leaves it unacked, and RabbitMQ
delivers it again (at least once: make handle() idempotent). docs/amqp.md.
"""

from __future__ import annotations

import json

from svcengine.amqp import Consumer, Message


class Resize(Consumer):
    def handle(self, message: Message) -> None:
        job = json.loads(message.body)  # a ValueError here: retried, then dead-lettered
        if message.redelivered:
            self.logger.info("job %s again (a worker or the broker went away)", job.get("id"))
        self.resize(job["image"], job.get("width", 640))

    def resize(self, image: str, width: int) -> None:
        self.logger.info("resized %s to %d px (worker %d)", image, width, self.worker_id)
