"""The one boot sequence (svcengine/child/boot.py), in this process: no fork, no thread."""

from __future__ import annotations

import os

import pytest

from svcengine import channel, config
from svcengine.child import Runtime
from svcengine.child.boot import boot_error, construct, exit_code, serve
from svcengine.worker import Worker


class Recording(Worker):
    events: list[str] = []

    def run(self) -> None:
        self.events.append("run")

    def stop(self) -> None:
        self.events.append("stop")

    def reload(self) -> None:
        self.events.append("reload")


class Broken(Worker):
    def __init__(self, *args: object) -> None:
        raise RuntimeError("no database")


@pytest.fixture
def runtime():
    r, w = os.pipe()
    rt = Runtime(
        worker_id=3,
        config=config.Config(),
        master_pid=os.getpid(),
        status_fd=w,
        life_fd=None,
        beat=lambda: None,
        sockets=[],
    )
    yield rt, r
    os.close(r)
    os.close(w)


def test_a_stop_before_the_worker_exists_is_replayed(runtime):
    rt, status = runtime
    Recording.events = []
    rt.request_stop("TERM during the import")  # nothing bound yet: no stop() to call
    after: list[Worker] = []
    worker = construct(rt, Recording, after.append)
    assert after == [worker] and worker.worker_id == 3
    assert serve(rt, worker) == 0
    assert Recording.events == ["stop", "run"]
    assert channel.parse(os.read(status, 100))[0] == [(channel.READY, "")]


def test_bound_worker_gets_stop_and_reload(runtime):
    rt, _ = runtime
    Recording.events = []
    construct(rt, Recording, lambda w: None)
    rt.request_reload()
    rt.request_stop("TERM")
    assert Recording.events == ["reload", "stop"]


def test_boot_failure_text_and_exit_codes(runtime):
    rt, _ = runtime
    with pytest.raises(RuntimeError) as info:
        construct(rt, Broken, lambda w: None)
    assert boot_error(info.value) == "RuntimeError: no database"
    assert [exit_code(SystemExit(c)) for c in (None, 0, 4, "bye")] == [0, 0, 4, 1]
