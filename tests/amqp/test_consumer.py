"""The Consumer worker against a real RabbitMQ: acks, graceful stop, kill -9, retries."""

from __future__ import annotations

import collections
import os
import signal

import amqpclient
import pytest
from harness import wait_for


@pytest.mark.parametrize("worker_type", ["process", "spawn", "thread"])
def test_consumes_every_message_and_acks_it(amqp_service, broker, queue_name, worker_type):
    amqpclient.declare(broker.url, queue_name)
    svc = amqp_service(workers=2, prefetch=5, extra=f'worker_type = "{worker_type}"\n')
    svc.wait_ready(60)  # READY=1 only once every worker consumes
    # after READY, so the broker spreads them over both consumers
    amqpclient.publish(broker.url, queue_name, [(f"m{i}", "work:0.002") for i in range(300)])
    wait_for(lambda: len(svc.handled()) >= 300, 60, "300 messages handled", step=0.1)
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit(60) == 0
    ids = collections.Counter(r[0] for r in svc.handled())
    assert set(ids) == {f"m{i}" for i in range(300)}
    assert max(ids.values()) == 1, "no fault, so no redelivery"
    if worker_type != "thread":  # threads share the master's pid
        assert len({r[1] for r in svc.handled()}) == 2, "both workers consumed"
    assert amqpclient.count(broker.url, queue_name) == 0, "every message was acked"
    assert "consuming from" in svc.log_text()


def test_not_ready_until_consuming(amqp_service, broker, queue_name):
    """declare = false and no queue: the worker retries, the master never says READY."""
    svc = amqp_service(workers=1, declare=False, reconnect_backoff_max=1.0)
    svc.wait_log(r"NOT_FOUND - no queue", 60)
    svc.mark()
    svc.wait_log(r"NOT_FOUND - no queue", 30)  # and again, after a backoff
    while svc.notify._receive(0) is not None:  # every datagram the master sent so far
        pass
    assert any("STATUS" in m for m in svc.notify.messages), "the master does talk to us"
    assert not any(m.get("READY") == "1" for m in svc.notify.messages)
    amqpclient.declare(broker.url, queue_name)  # the queue appears: the worker consumes
    svc.wait_ready(60)
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit(60) == 0


def test_graceful_stop_finishes_and_acks_the_message_in_hand(amqp_service, broker, queue_name):
    amqpclient.declare(broker.url, queue_name)
    amqpclient.publish(
        broker.url,
        queue_name,
        [("slow", "sleep:3")] + [(f"m{i}", "x") for i in range(20)],
    )
    svc = amqp_service(workers=1, prefetch=10)
    svc.wait_ready(60)
    wait_for(lambda: any(r[0] == "slow" for r in svc.started()), 60, "the slow message started")
    svc.kill(signal.SIGTERM)  # while handle() sleeps with 10 prefetched behind it
    assert svc.wait_exit(60) == 0
    assert [r[0] for r in svc.handled()] == ["slow"], "finished, and nothing new was taken"
    svc.wait_log(r"finishing 1 message\(s\) in hand", 5, since_mark=False)
    left = amqpclient.drain(broker.url, queue_name)
    assert sorted(mid for mid, _ in left) == sorted(f"m{i}" for i in range(20)), (
        "the prefetched ones went back to the queue, the one in hand was acked"
    )


def test_kill_9_of_a_worker_redelivers_what_it_held(amqp_service, broker, queue_name):
    amqpclient.declare(broker.url, queue_name)
    amqpclient.publish(broker.url, queue_name, [("held", "sleep-first:60")])
    svc = amqp_service(workers=1)
    svc.wait_ready(60)
    wait_for(lambda: svc.started(), 60, "the message started")
    (worker,) = svc.workers()
    os.kill(worker, signal.SIGKILL)
    wait_for(lambda: svc.handled(), 60, "the message handled by the new worker", step=0.1)
    (rec,) = svc.handled()
    assert rec[0] == "held" and rec[2] == "1", "redelivered by the broker"
    assert int(rec[1]) != worker
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit(60) == 0
    assert amqpclient.count(broker.url, queue_name) == 0


def test_heartbeats_flow_while_a_handler_runs(amqp_service, broker, queue_name):
    """heartbeat = 1 s and an 8 s handler: the connection survives, no redelivery."""
    amqpclient.declare(broker.url, queue_name)
    amqpclient.publish(broker.url, queue_name, [("long", "sleep:8")])
    svc = amqp_service(workers=1, heartbeat=1)
    svc.wait_ready(60)
    wait_for(lambda: svc.handled(), 60, "the long message handled", step=0.1)
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit(60) == 0
    assert [r[:1] + r[2:3] for r in svc.handled()] == [["long", "0"]]
    assert "reconnecting" not in svc.log_text()
    assert amqpclient.count(broker.url, queue_name) == 0


def test_failures_are_retried_then_dead_lettered(amqp_service, broker, queue_name):
    dead = f"{queue_name}-dead"
    with amqpclient.connect(broker.url) as conn:
        ch = conn.channel()
        ch.exchange_declare(dead, "fanout", durable=True)
        ch.queue_declare(dead, durable=True)
        ch.queue_bind(dead, dead)
    svc = amqp_service(workers=1, dead_letter_exchange=dead, retry_limit=2, start=False)
    svc.start()
    svc.wait_ready(60)
    amqpclient.publish(broker.url, queue_name, [("bad", "fail"), ("flaky", "fail-once")])
    wait_for(lambda: amqpclient.count(broker.url, dead) == 1, 60, "one dead-lettered message")
    wait_for(lambda: [r[0] for r in svc.handled()] == ["flaky"], 30, "flaky handled on retry")
    tries = collections.Counter(r[0] for r in svc.started())
    assert tries == {"bad": 3, "flaky": 2}, "retry_limit = 2: one try and two retries"
    svc.wait_log(r"message bad: handle\(\) raised ValueError: cannot handle bad after 2 retries")
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit(60) == 0
    ((mid, _),) = amqpclient.drain(broker.url, dead)
    assert mid == "bad"
    assert amqpclient.count(broker.url, queue_name) == 0


def test_credentials_never_logged(amqp_service, broker, queue_name):
    url = broker.url.replace("guest:guest", "guest:s3cret-Pw0rd")
    svc = amqp_service(workers=1, url=url, reconnect_backoff_max=1.0)
    svc.wait_log(r"reconnecting in", 60)
    svc.wait_log(r"reconnecting in", 30)  # a second attempt: still refused, still masked
    svc.kill(signal.SIGTERM)  # stops during the backoff wait
    assert svc.wait_exit(60) == 0
    text = svc.log_text() + (svc.tmp / "stderr.txt").read_text()
    assert "s3cret-Pw0rd" not in text
    assert "guest:***@127.0.0.1" in text
    assert "ACCESS_REFUSED" in text
