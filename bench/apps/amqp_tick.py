"""The AMQP bench's consumers: every peer does the same per message.

Per message: one `os.write` of the monotonic time (ns) to a file of this
process (O_APPEND), then the ack. The rate is messages / (last - first time)
over every process of a run, so start-up and the idle tail are not counted.

- `Tick`: an svcengine.amqp.Consumer (the config's [amqp] table).
- `python amqp_tick.py URL QUEUE PREFETCH OUTDIR`: the plain pika loop, no
  svcengine (basic_qos, basic_consume, ack in the callback), until TERM.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from svcengine.amqp import Consumer, Message


def open_ticks(outdir: str) -> int:
    return os.open(f"{outdir}/ticks-{os.getpid()}", os.O_WRONLY | os.O_APPEND | os.O_CREAT)


class Tick(Consumer):
    def run(self) -> None:
        self.fd = open_ticks(os.environ["SVCBENCH_OUT"])
        super().run()

    def handle(self, message: Message) -> None:
        os.write(self.fd, b"%d\n" % time.monotonic_ns())


def plain(url: str, queue: str, prefetch: int, outdir: str) -> None:
    import pika

    fd = open_ticks(outdir)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=prefetch)

    def on_message(ch, method, props, body):  # type: ignore[no-untyped-def]
        os.write(fd, b"%d\n" % time.monotonic_ns())
        ch.basic_ack(method.delivery_tag)

    ch.basic_consume(queue, on_message, auto_ack=False)
    os.write(1, b"consuming\n")
    while not stop:
        conn.process_data_events(time_limit=0.5)
    conn.close()


if __name__ == "__main__":
    plain(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
