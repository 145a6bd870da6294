"""Hooks that record where and in what order they ran, into $SVC_TEST_DIR/hooks.log."""

from __future__ import annotations

import os


def _record(name: str, *extra: object) -> None:
    line = " ".join([name, str(os.getpid()), *map(str, extra)])
    with open(os.path.join(os.environ["SVC_TEST_DIR"], "hooks.log"), "a") as f:
        f.write(line + "\n")


def before_fork(server, worker):
    _record("before_fork", worker.worker_id)


def after_fork(server, worker):
    _record("after_fork", worker.worker_id)


def after_worker_ready(server, worker):
    _record("after_worker_ready", worker.worker_id, worker.pid)


def after_worker_exit(server, worker, status):
    _record("after_worker_exit", worker.worker_id, worker.pid)


def when_ready(server):
    _record("when_ready")


def on_reload(server):
    _record("on_reload")


def on_exit(server):
    _record("on_exit")
