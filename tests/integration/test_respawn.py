"""Workers that die are replaced at once, and every exit is logged with its cause."""

from __future__ import annotations

import os
import signal

import pytest
from harness import wait_gone


def _replace(svc, worker_id: int, cause_rx: str, how) -> None:
    svc.wait_ready()
    svc.wait_log(rf"worker {worker_id} listening for commands", since_mark=False)
    svc.mark()
    how()
    svc.wait_log(rf"worker {worker_id} \(pid \d+\) {cause_rx}")
    svc.wait_log(rf"worker {worker_id} listening for commands")
    svc.notify.wait(
        lambda m: m.get("STATUS") == "2/2 workers ready; 1 restarts", 10, "STATUS after the restart"
    )


def test_respawn_after_sigkill(service):
    svc = service()
    svc.wait_ready()
    before = svc.wait_workers(2)
    victim = min(before)
    svc.mark()
    os.kill(victim, signal.SIGKILL)
    svc.wait_log(rf"worker \d \(pid {victim}\) killed by SIGKILL")
    svc.notify.wait(lambda m: m.get("STATUS") == "2/2 workers ready; 1 restarts", 10, "restart")
    after = svc.wait_workers(2)
    assert victim not in after and len(after & before) == 1
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


@pytest.mark.parametrize(
    "command,cause",
    [
        ("segv", r"killed by SIGSEGV"),
        ("raise", r"exited with status 1"),
        ("exit 3", r"exited with status 3"),
    ],
)
def test_respawn_after_crash(service, command, cause):
    svc = service()
    _replace(svc, 1, cause, lambda: svc.command(1, command))
    if command == "raise":
        assert "RuntimeError: boom from a test" in svc.log_text()
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


def test_crash_loop_backs_off(service):
    svc = service(
        worker="apps:ExitsAtOnce",
        workers=1,
        config="worker_restart_backoff_min = 0.2\nworker_restart_backoff_max = 0.4\n",
    )
    svc.wait_log(r"crashing in a loop; next start in 0\.2s", since_mark=False)
    svc.wait_log(r"crashing in a loop; next start in 0\.4s", since_mark=False)
    svc.mark()
    svc.wait_log(r"crashing in a loop; next start in 0\.4s")  # capped
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


def test_unrecoverable_exit_code_ends_the_master_with_it(service, tmp_path):
    svc = service(
        worker="apps:ExitsAtOnce",
        workers=2,
        config="unrecoverable_exit_codes = [42]\n",
        start=False,
    )
    svc.start(env={"SVC_TEST_EXIT": "42"})
    assert svc.wait_exit(15) == 42
    text = svc.log_text()
    assert "exited with unrecoverable status 42; not restarting it" in text
    assert text.count("exited with status 42") == 2


def test_hung_worker_is_dumped_and_killed(service):
    svc = service(
        workers=2, config="worker_heartbeat_timeout = 1.0\nworker_heartbeat_interval = 0.2\n"
    )
    svc.wait_ready()
    svc.wait_log(r"worker 0 listening for commands", since_mark=False)
    svc.mark()
    svc.command(0, "hang")
    svc.wait_log(r"worker 0 \(pid (\d+)\) hung: no heartbeat", timeout=10)
    svc.wait_log(r"Thread 0x[0-9a-f]+ \(most recent call first\)")  # faulthandler's dump
    svc.wait_log(r"worker 0 \(pid \d+\) killed by SIGKILL")
    svc.wait_log(r"worker 0 listening for commands")
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


def test_boot_failure_at_start_ends_the_master(service):
    svc = service(worker="apps:BrokenImport", workers=2)
    assert svc.wait_exit(15) == 1
    assert "failed to boot (ImportError: this worker cannot be built); giving up" in svc.log_text()
    assert not wait_gone(svc.seen_workers, 1)
