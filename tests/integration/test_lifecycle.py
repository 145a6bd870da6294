"""Start, ready, stop: the basic life of a service, on real processes."""

from __future__ import annotations

import signal

from harness import alive, wait_gone


def test_start_ready_term_exits_zero(service):
    svc = service(workers=3)
    ready = svc.wait_ready()
    assert ready["STATUS"] == "3/3 workers ready; 0 restarts"
    assert ready["MAINPID"] == str(svc.pid)
    workers = svc.wait_workers(3)
    for pid in workers:
        assert open(f"/proc/{pid}/cmdline").read().startswith("svcengine worker[")
    assert open(f"/proc/{svc.pid}/cmdline").read().startswith("svcengine master")
    svc.kill(signal.SIGTERM)
    svc.notify.wait_key("STOPPING", 5, "1")
    assert svc.wait_exit(10) == 0
    assert not wait_gone(workers, 5)
    text = svc.log_text()
    assert text.count("finished gracefully") == 3
    assert "master exits 0" in text


def test_ready_is_sent_only_once_every_worker_is_ready(service):
    svc = service(workers=4)
    svc.wait_ready()
    statuses = [m["STATUS"] for m in svc.notify.messages if "STATUS" in m]
    ready_index = next(i for i, m in enumerate(svc.notify.messages) if m.get("READY") == "1")
    assert all("READY" not in m for m in svc.notify.messages[:ready_index])
    assert statuses[-1] == "4/4 workers ready; 0 restarts"
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


def test_quit_is_a_quick_stop(service):
    svc = service(
        worker="apps:IgnoresTerm", workers=2, config="worker_immediate_kill_timeout = 1.0\n"
    )
    svc.wait_ready()
    workers = svc.wait_workers(2)
    svc.kill(signal.SIGQUIT)
    assert svc.wait_exit(10) == 0
    assert not wait_gone(workers, 5)
    assert "quick stop" in svc.log_text()


def test_int_is_a_quick_stop(service):
    svc = service(workers=2)
    svc.wait_ready()
    workers = svc.wait_workers(2)
    svc.kill(signal.SIGINT)
    assert svc.wait_exit(10) == 0
    assert not wait_gone(workers, 5)
    assert "finished gracefully" not in svc.log_text()


def test_term_escalates_to_kill_after_graceful_timeout(service):
    svc = service(
        worker="apps:IgnoresTerm", workers=1, config="worker_graceful_kill_timeout = 0.5\n"
    )
    svc.wait_ready()
    (worker,) = svc.wait_workers(1)
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit(10) == 0
    svc.wait_log(r"did not stop in time; sending SIGKILL")
    svc.wait_log(rf"worker 0 \(pid {worker}\) killed by SIGKILL")


def test_stop_hook_unblocks_a_blocked_run(service):
    svc = service(worker="apps:StopHook", workers=2)
    svc.wait_ready()
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit(10) == 0
    assert svc.log_text().count("unblocked by stop()") == 2


def test_sigcont_does_nothing(service):
    svc = service(workers=2)
    svc.wait_ready()
    workers = svc.wait_workers(2)
    svc.mark()
    svc.kill(signal.SIGCONT)
    svc.kill(signal.SIGTTIN)  # an event we can wait for, queued after CONT
    svc.wait_workers(3)
    assert workers <= svc.workers()
    assert all(alive(p) for p in workers)
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0
