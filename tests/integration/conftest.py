"""Fixtures for the integration tests (the harness itself is in harness.py).

Every test runs with the pytest process as a child subreaper, so a worker
orphaned by its master re-parents to us, where the leak check finds it: a test
that leaves any process behind fails (and the leftover is killed by pid).
"""

from __future__ import annotations

import os
import signal

import pytest
from harness import Service, alive, children_of, wait_gone

from svcengine.unix import linux as _linux


@pytest.fixture(autouse=True)
def no_process_left_behind():
    """Adopt orphans while the test runs; fail the test if any process is left."""
    before = children_of(os.getpid())
    _linux.set_child_subreaper()
    try:
        yield
    finally:
        # orphans of a master killed a moment ago may still be on their way out
        leftovers = wait_gone(children_of(os.getpid()) - before, 3.0)
        for pid in leftovers:
            os.kill(pid, signal.SIGKILL)  # ours: started by this test, adopted by us
        for pid in children_of(os.getpid()) - before:
            if alive(pid):  # re-parented to us after the wait above (a worker's child)
                leftovers.add(pid)
                os.kill(pid, signal.SIGKILL)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        _linux.set_child_subreaper(False)
        assert not leftovers, f"processes left behind: {sorted(leftovers)}"


@pytest.fixture
def service(tmp_path):
    made: list[Service] = []

    def make(
        worker: str = "apps:Commanded",
        workers: int = 2,
        config: str = "",
        args=(),
        start=True,
        log_to_file=True,
    ) -> Service:
        svc = Service(tmp_path, worker, workers, config, list(args), log_to_file)
        made.append(svc)
        if start:
            svc.start()
        return svc

    yield make
    for svc in made:
        svc.cleanup()
