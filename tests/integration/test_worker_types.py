"""The same lifecycle across worker types; periodic work; preload; PID 1 and subreaper."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess

import pytest
from harness import children_of, wait_for, wait_gone

from svcengine.cli import client

POOL_TYPES = ["process", "spawn", "thread"]


@pytest.mark.parametrize("worker_type", POOL_TYPES)
def test_lifecycle_across_worker_types(service, worker_type):
    svc = service(workers=2, config=f'worker_type = "{worker_type}"\n')
    assert svc.wait_ready()["STATUS"] == "2/2 workers ready; 0 restarts"
    svc.wait_log(r"worker 1 listening for commands", since_mark=False)
    # respawn after an exception and after sys.exit(3)
    svc.mark()
    svc.command(1, "raise")
    svc.wait_log(r"worker 1 \((pid|thread) -?\d+\) exited with status 1")
    svc.wait_log(r"worker 1 listening for commands")
    svc.mark()
    svc.command(0, "exit 3")
    svc.wait_log(r"worker 0 \((pid|thread) -?\d+\) exited with status 3")
    svc.notify.wait(lambda m: m.get("STATUS") == "2/2 workers ready; 2 restarts", 10, "2 restarts")
    # HUP: a new generation replaces the old one
    svc.mark()
    svc.kill(signal.SIGHUP)
    svc.notify.wait_key("READY", 10, "1")
    wait_for(lambda: svc.log_text().count("finished gracefully") == 2, 10, "old ones stopped")
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


@pytest.mark.parametrize("worker_type", ["process", "spawn"])
def test_process_like_workers_die_with_the_master(service, worker_type):
    svc = service(workers=3, config=f'worker_type = "{worker_type}"\n')
    svc.wait_ready()
    workers = svc.wait_workers(3)
    for pid in workers:
        assert open(f"/proc/{pid}/cmdline").read().startswith("svcengine worker[")
    svc.kill(signal.SIGKILL)
    svc.wait_exit()
    assert not wait_gone(workers, 5)


def test_spawn_workers_are_fresh_interpreters(service):
    svc = service(workers=1, config='worker_type = "spawn"\n')
    svc.wait_ready()
    (pid,) = svc.wait_workers(1)
    environ = open(f"/proc/{pid}/environ", "rb").read()
    assert b"SVCENGINE_SPAWN=" in environ  # it was exec'd, not just forked
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


def test_thread_workers_run_in_the_master_process(service):
    svc = service(workers=2, config='worker_type = "thread"\n')
    svc.wait_ready()
    assert children_of(svc.pid) == set()
    svc.wait_log(r"\[\d+\] worker\[1\]: worker 1 listening", since_mark=False)
    # no fake pids: a thread worker has none of its own; the log names it `thread N`
    status = client.request(str(svc.tmp / "run" / "control.sock"), {"cmd": "status"})
    assert [(w["pid"], w["state"]) for w in status["workers"]] == [(None, "ready")] * 2
    svc.wait_log(r"worker 1 started \(thread \d+\)", since_mark=False)
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


def test_thread_worker_that_ignores_stop_is_abandoned(service):
    svc = service(
        worker="apps:IgnoresTerm",
        workers=1,
        config='worker_type = "thread"\nworker_graceful_kill_timeout = 0.3\n',
    )
    svc.wait_ready()
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit(10) == 0
    assert "is a thread and cannot be killed; abandoning it" in svc.log_text()


def test_embedded_worker_runs_in_the_main_process(service):
    svc = service(workers=1, config='worker_type = "embedded"\n')
    msg = svc.wait_ready()
    assert msg["MAINPID"] == str(svc.pid)
    assert children_of(svc.pid) == set()
    svc.wait_log(r"worker 0 listening for commands", since_mark=False)
    svc.kill(signal.SIGHUP)
    svc.wait_log(r"worker 0 reload\(\) called", since_mark=False)
    svc.kill(signal.SIGTERM)
    svc.notify.wait_key("STOPPING", 5, "1")
    assert svc.wait_exit() == 0
    assert "worker 0 finished gracefully" in svc.log_text()


def test_thread_started_by_a_hook_before_fork_is_warned_about(service):
    """mold = false: the master forks each worker, with the hook's thread running."""
    svc = service(workers=1, config='hooks = "hooks_threads"\nmold = false\n')
    svc.wait_ready()
    line = svc.wait_log(
        r"forking worker 0 while the master runs other threads \(hook-monitor\)", since_mark=False
    )
    assert 'worker_type = "spawn"' in svc.log_text()[line.start() :].splitlines()[0]
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


def test_a_master_thread_reaches_no_worker_through_the_first_mold_but_the_next_is_warned(service):
    """The mold was forked before the hook's thread started: the workers it forks never had
    that thread. A reload forks a new mold from the master, which runs the thread now."""
    svc = service(workers=1, config='hooks = "hooks_threads"\n')
    svc.wait_ready()
    assert "runs other threads" not in svc.log_text()
    svc.mark()
    svc.kill(signal.SIGHUP)
    line = svc.wait_log(
        r"forking the mold gen 2 while the master runs other threads \(hook-monitor\)"
    )
    assert 'worker_type = "spawn"' in svc.log_text()[line.start() :].splitlines()[0]
    svc.wait_log(r"reload complete")
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


def test_server_every_runs_from_the_loop_without_a_thread(service):
    svc = service(workers=1, config='hooks = "hooks_every"\n')
    svc.wait_ready()
    svc.wait_log(r"tick 4 at", since_mark=False)
    text = svc.log_text()
    ticks = [(float(t), int(n)) for t, n in re.findall(r"tick \d+ at ([\d.]+) threads=(\d+)", text)]
    assert all(n == 1 for _, n in ticks), "a thread appeared in the master"
    gaps = [b[0] - a[0] for a, b in zip(ticks, ticks[1:], strict=False)]
    assert all(0.15 < g < 0.6 for g in gaps), gaps
    assert "a failing tick" in text and "the timer keeps going" in text
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


def test_preload_imports_in_the_master(service):
    svc = service(workers=2, config="preload = true\n")
    svc.wait_ready()
    svc.wait_log(r"preloaded apps:Commanded", since_mark=False)
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


def test_preload_import_error_fails_the_start(service, tmp_path):
    svc = service(worker="no_such_module_q:Job", workers=1, config="preload = true\n")
    assert svc.wait_exit() == 1
    assert "preload: cannot import no_such_module_q:Job" in (tmp_path / "stderr.txt").read_text()


def _orphan_count(text: str) -> int:
    return len(re.findall(r"reaped orphan pid \d+", text))


def test_subreaper_reaps_orphaned_grandchildren(service):
    svc = service(workers=1, config="subreaper = true\n")
    svc.wait_ready()
    svc.wait_log(r"worker 0 listening for commands", since_mark=False)
    svc.command(0, "orphans 50")
    wait_for(lambda: _orphan_count(svc.log_text()) == 50, 10, "50 orphans reaped")
    svc.wait_log(r"worker 0 listening for commands")  # replaced
    zombies = [
        p for p in children_of(svc.pid) if open(f"/proc/{p}/stat").read().split(") ")[1][0] == "Z"
    ]
    assert zombies == []
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


needs_unshare = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare"
)


def _start_as_pid_1(svc) -> int:
    """Run the master as PID 1 of a new pid namespace, like a container's entrypoint."""
    svc.args = []
    real_popen = subprocess.Popen

    def popen(cmd, **kw):
        return real_popen(["unshare", "--pid", "--fork", "--mount-proc", *cmd], **kw)

    subprocess.Popen = popen
    try:
        svc.start()
    finally:
        subprocess.Popen = real_popen
    svc.wait_ready()
    (master,) = wait_for(lambda: children_of(svc.pid) or None, 5, "the namespace's PID 1")
    status = open(f"/proc/{master}/status").read()
    assert re.search(r"^NSpid:\s+\d+\s+1$", status, re.M), "the master is not PID 1"
    return master


@needs_unshare
def test_as_pid_1_reaps_everything_and_exits_cleanly(service):
    svc = service(workers=2, start=False)
    master = _start_as_pid_1(svc)
    svc.wait_log(r"worker 0 listening for commands", since_mark=False)
    svc.command(0, "orphans 50")
    wait_for(lambda: _orphan_count(svc.log_text()) == 50, 10, "50 orphans reaped by PID 1")
    os.kill(master, signal.SIGTERM)
    assert svc.wait_exit(10) == 0
    assert "master exits 0" in svc.log_text()


@needs_unshare
def test_as_pid_1_refuses_an_upgrade_and_serves_on(service):
    """The new master would be PID 1's child, and the namespace ends when PID 1 exits."""
    svc = service(workers=2, start=False)
    master = _start_as_pid_1(svc)
    workers = children_of(master)
    os.kill(master, signal.SIGUSR2)
    svc.wait_log(r"upgrade failed: refused: this master is PID 1")
    assert children_of(master) == workers, "the upgrade forked something, or lost a worker"
    os.kill(master, signal.SIGTERM)
    assert svc.wait_exit(10) == 0
