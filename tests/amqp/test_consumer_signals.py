"""HUP, TTOU (graceful: the message in hand is acked) vs QUIT (quick: redelivered);
a HUP with a bad [amqp] table keeps the consuming workers."""

from __future__ import annotations

import collections
import signal

import amqpclient
import pytest
from harness import wait_for


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTTOU])
def test_reload_and_scale_down_ack_the_message_in_hand(amqp_service, broker, queue_name, sig):
    amqpclient.declare(broker.url, queue_name)
    svc = amqp_service(workers=1, prefetch=5)
    svc.wait_ready(60)
    (old,) = svc.workers()
    amqpclient.publish(broker.url, queue_name, [("slow", "sleep:3")])
    wait_for(lambda: svc.started(), 60, "the slow message started")
    svc.kill(sig)  # HUP: a new worker, then TERM to the old; TTOU: TERM to the one worker
    svc.wait_log(rf"worker 0 \(pid {old}\) exited", 60)
    assert [r[:3] for r in svc.handled()] == [["slow", str(old), "0"]]
    amqpclient.publish(broker.url, queue_name, [("after", "x")])
    if sig == signal.SIGHUP:  # the new worker consumes what comes next
        wait_for(lambda: len(svc.handled()) == 2, 60, "the next message handled")
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit(60) == 0
    ids = collections.Counter(r[0] for r in svc.handled())
    assert ids["slow"] == 1, "acked before the old worker exited: never redelivered"
    left = [mid for mid, _ in amqpclient.drain(broker.url, queue_name)]
    assert left == ([] if sig == signal.SIGHUP else ["after"])


def test_quick_stop_leaves_the_message_to_the_broker(amqp_service, broker, queue_name):
    amqpclient.declare(broker.url, queue_name)
    amqpclient.publish(broker.url, queue_name, [("held", "sleep:30")])
    svc = amqp_service(workers=1)
    svc.wait_ready(60)
    wait_for(lambda: svc.started(), 60, "the message started")
    svc.kill(signal.SIGQUIT)
    assert svc.wait_exit(60) == 0
    assert svc.handled() == []
    ((mid, _),) = amqpclient.drain(broker.url, queue_name)  # unacked: back in the queue
    assert mid == "held"


def test_hup_with_a_bad_amqp_table_keeps_the_consumers(amqp_service, broker, queue_name):
    svc = amqp_service(workers=2)
    svc.wait_ready(60)
    before = svc.workers()
    good = svc.config_path.read_text()
    svc.config_path.write_text(good + "prefetch = 'lots'\n")
    svc.mark()
    svc.kill(signal.SIGHUP)
    svc.wait_log(rf"key 'amqp.prefetch' in {svc.config_path}: expected an integer, got str", 30)
    assert svc.workers() == before
    amqpclient.publish(broker.url, queue_name, [("still", "x")])
    wait_for(lambda: svc.handled(), 60, "a message handled after the refused HUP")
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit(60) == 0
