"""RabbitMQ consumers as svcengine workers: `pip install svcengine[amqp]`.

    class Resize(svcengine.amqp.Consumer):
        def handle(self, message):
            ...  # return: acked; raise: retried, then dead-lettered

Importing this package does not import pika; the Consumer does, when a worker runs.
"""

from __future__ import annotations

from .consumer import Consumer, Message
from .settings import Settings, mask_url, parse

__all__ = ["Consumer", "Message", "Settings", "mask_url", "parse"]
