"""No worker outlives its master, however the master dies."""

from __future__ import annotations

import signal

import pytest
from harness import wait_gone


@pytest.mark.parametrize("pdeathsig", [True, False], ids=["pdeathsig", "life-pipe-only"])
def test_master_sigkilled_takes_every_worker_with_it(service, pdeathsig):
    svc = service(workers=4, config=f"worker_pdeathsig = {str(pdeathsig).lower()}\n")
    svc.wait_ready()
    workers = svc.wait_workers(4)
    for pid in workers:
        with open(f"/proc/{pid}/status") as f:
            assert any(line.startswith("PPid:") for line in f)
    svc.kill(signal.SIGKILL)
    assert svc.wait_exit(5) == -signal.SIGKILL
    assert not wait_gone(workers, 5), "workers outlived their master"
    if not pdeathsig:
        # the pipe path stops them gracefully: run() returned
        svc.wait_log(r"master \(pid \d+\) is gone; stopping")
        assert svc.log_text().count("finished gracefully") == 4


def test_life_pipe_hard_exit_for_a_worker_that_ignores_stop(service):
    svc = service(
        worker="apps:IgnoresTerm",
        workers=2,
        config="worker_pdeathsig = false\nworker_graceful_kill_timeout = 0.5\n",
    )
    svc.wait_ready()
    workers = svc.wait_workers(2)
    svc.kill(signal.SIGKILL)
    svc.wait_exit(5)
    assert not wait_gone(workers, 5)
    svc.wait_log(r"still running 0\.5s after the master died; exiting now")


@pytest.mark.parametrize("pdeathsig", [True, False], ids=["on", "off"])
def test_pdeathsig_armed_as_configured(service, pdeathsig):
    """Read back from the kernel inside the worker: PR_GET_PDEATHSIG."""
    svc = service(workers=1, config=f"worker_pdeathsig = {str(pdeathsig).lower()}\n")
    svc.wait_ready()
    svc.command(0, "pdeathsig")
    expected = int(signal.SIGKILL) if pdeathsig else 0
    svc.wait_log(rf"worker 0 pdeathsig={expected}$")
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0
