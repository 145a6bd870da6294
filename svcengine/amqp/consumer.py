"""The Consumer worker: handle(message) per delivery, acked only after it returns.

One thread owns the pika connection (pika is not thread-safe) and keeps
turning its I/O loop, so AMQP heartbeats flow while a handler runs for
minutes. Handlers run in `threads` handler threads fed by a local queue that
prefetch bounds; each result comes back to the I/O thread as a thread-safe
callback, which acks (or retries / dead-letters) on the channel the message
came from. A delivery from a connection that has since been replaced is never
acked on the new one: the broker redelivers it (at least once, never lost).
"""

from __future__ import annotations

import collections
import logging
import queue
import random
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..worker import Worker
from . import settings as settingsmod
from .message import Job, Message, describe, retry_or_dead_letter

__all__ = ["Consumer", "Message"]

if TYPE_CHECKING:
    import pika
    import pika.adapters.blocking_connection


class Consumer(Worker):
    """Subclass it and write handle(); the `[amqp]` table of the config says where from."""

    ready_on_run = False  # ready once the broker confirmed basic.consume

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()  # guards _conn: stop() may come before run() connects
        self._conn: pika.BlockingConnection | None = None
        self._session = 0
        self._session_live = False
        self._channel: Any = None  # the I/O thread's, like _unsettled
        self._unsettled: set[int] = set()  # delivery tags of this session not yet settled
        self._jobs: queue.Queue[Job] = queue.Queue()
        self._done: collections.deque[Job] = collections.deque()  # handled, to settle
        self._done_lock = threading.Lock()

    def handle(self, message: Message) -> None:
        raise NotImplementedError("a Consumer subclass must implement handle(message)")

    def declare(self, channel: pika.adapters.blocking_connection.BlockingChannel) -> None:
        """Declare the queue (amqp.declare = true): durable, with its dead-letter exchange.

        Override to declare exchanges and bindings too; call super() for the queue.
        """
        args = {}
        if self.settings.dead_letter_exchange is not None:
            args["x-dead-letter-exchange"] = self.settings.dead_letter_exchange
        channel.queue_declare(self.settings.queue, durable=True, arguments=args or None)

    # --- the engine's side ------------------------------------------------
    def run(self) -> None:
        import pika.exceptions

        self.settings = settingsmod.parse(self.config.amqp, self.config.source)
        logging.getLogger("pika").setLevel(logging.WARNING)  # INFO is one line per frame type
        for i in range(self.settings.threads):
            threading.Thread(
                target=self._handler_loop, name=f"amqp-handler-{i}", daemon=True
            ).start()
        backoff = self.settings.reconnect_backoff_min
        while not self.stopping:
            try:
                if self._consume():
                    backoff = self.settings.reconnect_backoff_min
            except pika.exceptions.AMQPError as exc:
                self._forget_session()
                delay = backoff * random.uniform(0.5, 1.0)  # spread the herd after a broker restart
                self.logger.warning(
                    "broker %s: %s; reconnecting in %.1fs",
                    self.settings.safe_url,
                    describe(exc),
                    delay,
                )
                backoff = min(backoff * 2, self.settings.reconnect_backoff_max)
                self.wait(delay)
        self.logger.info("stopped consuming from %r", self.settings.queue)

    def stop(self) -> None:
        self._post(lambda: None)  # wake the I/O loop: it sees `stopping` and cancels

    # --- the I/O thread ---------------------------------------------------
    def _consume(self) -> bool:
        """One connection's life; returns True after a graceful stop, raises when lost."""
        import pika

        s = self.settings
        params = pika.URLParameters(s.url)
        params.heartbeat = s.heartbeat
        params.socket_timeout = s.connect_timeout
        params.blocked_connection_timeout = max(60.0, 2.0 * s.heartbeat)
        params.connection_attempts = 1
        conn = pika.BlockingConnection(params)
        try:
            channel = conn.channel()
            channel.basic_qos(prefetch_count=s.prefetch)
            if s.declare:
                self.declare(channel)
            channel.confirm_delivery()  # a retry's re-publish is confirmed before the ack
            with self._done_lock:
                self._done.clear()  # a lost session's results: never posted, never acked
            with self._lock:
                self._session += 1
                session = self._session
                self._conn = conn
                self._channel = channel
                self._unsettled = set()
            self._session_live = True
            tag = channel.basic_consume(
                s.queue, lambda ch, m, p, b: self._deliver(session, m, p, b), auto_ack=False
            )
            self.logger.info(
                "consuming from %r on %s (prefetch %d, %d handler thread(s))",
                s.queue,
                s.safe_url,
                s.prefetch,
                s.threads,
            )
            self.ready()
            while not self.stopping:
                conn.process_data_events(time_limit=1.0)
                self.heartbeat()
            self._drain(conn, channel, tag)
            return True
        finally:
            self._forget_session()
            if conn.is_open:
                try:
                    conn.close()
                except Exception as exc:  # closing a connection that is going anyway
                    self.logger.debug("closing the connection: %s", describe(exc))

    def _drain(self, conn: pika.BlockingConnection, channel: Any, tag: str) -> None:
        """Graceful stop: no new deliveries, unstarted ones back, the ones in hand acked."""
        channel.basic_cancel(tag)  # pika nacks (requeue) what it holds undispatched
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            channel.basic_nack(job.message.delivery_tag, requeue=True)
            self._unsettled.discard(job.message.delivery_tag)
        if self._unsettled:
            self.logger.info("finishing %d message(s) in hand", len(self._unsettled))
        while self._unsettled:  # the master's graceful timeout bounds this (then KILL)
            conn.process_data_events(time_limit=1.0)
            self.heartbeat()
        channel.close()

    def _deliver(self, session: int, method: Any, props: Any, body: bytes) -> None:
        headers = dict(props.headers or {})
        msg = Message(
            body=body,
            properties=props,
            routing_key=method.routing_key,
            exchange=method.exchange,
            redelivered=method.redelivered,
            delivery_tag=method.delivery_tag,
            headers=headers,
        )
        self._unsettled.add(method.delivery_tag)
        self._jobs.put(Job(session, msg))

    def _settle(self, job: Job) -> None:
        """In the I/O thread: ack, or apply the failure policy; only on the message's channel."""
        tag = job.message.delivery_tag
        if job.session != self._session or not self._session_live:
            self.logger.debug("delivery %d came on a lost connection: the broker redelivers", tag)
            return
        channel = self._channel
        try:
            if job.error is None:
                channel.basic_ack(tag)
            else:
                retry_or_dead_letter(channel, job, self.settings, self.logger)
        finally:
            self._unsettled.discard(tag)

    def _forget_session(self) -> None:
        self._session_live = False
        with self._lock:
            self._conn = None
        while True:  # deliveries of a lost channel: the broker requeues them itself
            try:
                self._jobs.get_nowait()
            except queue.Empty:
                break

    def _post(self, callback: Callable[[], None]) -> None:
        """Run callback in the I/O thread; dropped when no connection is up."""
        with self._lock:
            conn = self._conn
            if conn is None:
                return
            try:
                conn.add_callback_threadsafe(callback)
            except Exception:  # closed under us: the broker redelivers
                return

    # --- the handler threads ----------------------------------------------
    def _handler_loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job.session != self._session:
                continue  # its channel is gone; the broker redelivers it
            try:
                self.handle(job.message)
            except BaseException as exc:  # SystemExit too: the message must still be settled
                job.error = exc
                self.logger.debug("handle() raised", exc_info=True)
            with self._done_lock:  # one wake-up of the I/O thread per batch, not per message
                first = not self._done
                self._done.append(job)
            if first:
                self._post(self._settle_done)

    def _settle_done(self) -> None:
        """In the I/O thread: settle every handled job queued so far."""
        while True:
            with self._done_lock:
                if not self._done:
                    return
                job = self._done.popleft()
            self._settle(job)
