"""examples/amqp_consumer.py with its own TOML, against the real broker."""

from __future__ import annotations

import json
import signal

import amqpclient
from conftest import AmqpService
from harness import REPO


def test_example_consumes_with_its_toml(tmp_path, broker, queue_name):
    toml = (REPO / "examples" / "amqp_consumer.toml").read_text()
    toml = toml.replace("amqp://guest:guest@127.0.0.1:5672/%2F", broker.url)
    toml = toml.replace('queue = "images"', f'queue = "{queue_name}"')
    toml = toml.replace('python_path = ["."]', f'python_path = ["{REPO / "examples"}"]')
    toml = toml.replace("workers = 4 ", "workers = 2 ")
    svc = AmqpService(tmp_path, 2, {})
    svc.config_path.write_text(toml.replace("[amqp]", f'log = "{svc.log_path}"\n[amqp]', 1))
    with amqpclient.connect(broker.url) as conn:
        conn.channel().exchange_declare("images-dead", "fanout", durable=True)
    svc.start()
    svc.wait_ready(60)
    job = {"id": 7, "image": "cat.png", "width": 320}
    amqpclient.publish(broker.url, queue_name, [("j7", json.dumps(job)), ("bad", "not json")])
    svc.wait_log(r"resized cat.png to 320 px", 60)
    svc.wait_log(r"message bad: handle\(\) raised JSONDecodeError.* after 3 retries", 60)
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit(60) == 0
    assert amqpclient.count(broker.url, queue_name) == 0
    assert "guest:***@127.0.0.1" in svc.log_text() and "guest:guest" not in svc.log_text()
