"""A plain pika client for the tests: declare, publish with confirms, count."""

from __future__ import annotations

import pika


def connect(url: str) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(url))


def declare(url: str, queue: str, dlx: str | None = None) -> None:
    with connect(url) as conn:
        ch = conn.channel()
        args = {"x-dead-letter-exchange": dlx} if dlx else None
        ch.queue_declare(queue, durable=True, arguments=args)


def publish(url: str, queue: str, bodies: list[tuple[str, str]]) -> None:
    """(message_id, body) pairs, persistent, each confirmed by the broker."""
    with connect(url) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        for mid, body in bodies:
            ch.basic_publish(
                "",
                queue,
                body.encode(),
                pika.BasicProperties(message_id=mid, delivery_mode=2),
                mandatory=True,
            )


def publish_bulk(url: str, queue: str, bodies: list[tuple[str, str]], timeout: float = 120) -> None:
    """Like publish(), without a round trip per message: the queue's count proves arrival."""
    import time

    before = count(url, queue)
    with connect(url) as conn:
        ch = conn.channel()
        for mid, body in bodies:
            ch.basic_publish(
                "", queue, body.encode(), pika.BasicProperties(message_id=mid, delivery_mode=2)
            )
    deadline = time.monotonic() + timeout
    while count(url, queue) < before + len(bodies):
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(bodies)} messages published, not all in {queue!r}")
        time.sleep(0.2)  # the broker announces nothing: ask again


def count(url: str, queue: str) -> int:
    """Messages ready in the queue (not those delivered and unacked)."""
    with connect(url) as conn:
        return conn.channel().queue_declare(queue, passive=True).method.message_count


def drain(url: str, queue: str) -> list[tuple[str | None, bytes]]:
    """Take every ready message off the queue (acked)."""
    out = []
    with connect(url) as conn:
        ch = conn.channel()
        while True:
            method, props, body = ch.basic_get(queue, auto_ack=True)
            if method is None:
                return out
            out.append((props.message_id, body))
