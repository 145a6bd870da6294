"""One delivery as handle() sees it, and what happens to it when handle() raises.

The failure policy lives here, apart from the Consumer's threads: a failed message is
re-published with its retry counter up (confirmed by the broker before the original is
acked, so it is never lost), and past the limit nacked to its dead-letter exchange.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any

from . import settings as settingsmod

RETRIES_HEADER = "x-svcengine-retries"


@dataclass
class Message:
    """One delivery as handle() sees it."""

    body: bytes
    properties: Any  # pika.BasicProperties
    routing_key: str
    exchange: str
    redelivered: bool
    delivery_tag: int
    headers: dict[str, Any] = field(default_factory=dict)

    @property
    def message_id(self) -> str | None:
        return getattr(self.properties, "message_id", None)

    @property
    def retries(self) -> int:
        """How many times handle() already raised for this message."""
        n = self.headers.get(RETRIES_HEADER, 0)
        return n if isinstance(n, int) else 0


@dataclass
class Job:
    session: int
    message: Message
    error: BaseException | None = None


def retry_or_dead_letter(
    channel: Any, job: Job, s: settingsmod.Settings, logger: logging.Logger
) -> None:
    """Re-publish with the retry counter up (confirmed, then ack); past the limit, nack."""
    msg = job.message
    what = f"message {msg.message_id or msg.delivery_tag}"
    if msg.retries < s.retry_limit:
        props = copy.copy(msg.properties)  # the same message, one retry more
        props.headers = dict(msg.headers, **{RETRIES_HEADER: msg.retries + 1})
        props.delivery_mode = props.delivery_mode or 2
        # confirmed and routed (mandatory), or it raises and the original is not acked
        channel.basic_publish("", s.queue, msg.body, props, mandatory=True)
        channel.basic_ack(msg.delivery_tag)
        logger.warning(
            "%s: handle() raised %s; retry %d of %d",
            what,
            describe(job.error),
            msg.retries + 1,
            s.retry_limit,
        )
        return
    channel.basic_nack(msg.delivery_tag, requeue=False)
    where = (
        f"dead-lettered to exchange {s.dead_letter_exchange!r}"
        if s.dead_letter_exchange is not None
        else "dead-lettered by the queue's policy, if any (else dropped by the broker)"
    )
    logger.error(
        "%s: handle() raised %s after %d retries; %s",
        what,
        describe(job.error),
        s.retry_limit,
        where,
        exc_info=job.error,
    )


def describe(exc: BaseException | None) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
