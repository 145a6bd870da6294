"""Typed worker keys and exit statuses (master/handles.py), thread workers without fake
pids, and the HUNG state: with real processes, real threads, and Master.step() on a fake
clock (tests/unit/masterkit.py)."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator

import pytest
from masterkit import Kit, kit_factory

from svcengine.child import DUMP_SIGNAL
from svcengine.master import health
from svcengine.master.handles import ExitStatus, ThreadKey, label, pid_of
from svcengine.master.launchers import ThreadLauncher
from svcengine.master.phase import Phase
from svcengine.master.pool import SlotState
from svcengine.worker import Worker


def _reaped(code: str) -> int:
    """Run `python -c code` and reap it ourselves: waitpid()'s raw status."""
    pid = os.posix_spawn(sys.executable, [sys.executable, "-c", code], os.environ)
    return os.waitpid(pid, 0)[1]


def test_an_exit_code_from_a_real_process():
    status = _reaped("import sys; sys.exit(3)")
    end = ExitStatus.from_wait(status)
    assert (end, str(end), end.wait_status()) == (
        ExitStatus(code=3),
        "exited with status 3",
        status,
    )


def test_a_signal_from_a_real_process():
    status = _reaped("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    end = ExitStatus.from_wait(status)
    assert (end.code, end.signal, str(end)) == (None, signal.SIGKILL, "killed by SIGKILL")
    assert end.wait_status() == status and os.waitstatus_to_exitcode(status) == -9


@pytest.mark.parametrize(
    ("line", "code"), [("0", 0), ("3", 3), ("-1", 255), ("256", 0), ("x", 1), ("", 1)]
)
def test_a_threads_exited_line_is_what_a_process_would_have_shown(line, code):
    end = ExitStatus.from_line(line)
    assert end == ExitStatus(code=code)
    assert os.waitstatus_to_exitcode(end.wait_status()) == code


def test_a_thread_key_is_never_a_pid():
    """An orphan reaped with pid 3 must not be taken for thread 3."""
    records = {3: "orphan", ThreadKey(3): "thread worker"}
    assert len(records) == 2 and ThreadKey(3) != 3
    assert (label(3), label(ThreadKey(3))) == ("pid 3", "thread 3")
    assert pid_of(3) == 3
    with pytest.raises(TypeError):
        pid_of(ThreadKey(3))


# --- Master.step() ----------------------------------------------------------------------


@pytest.fixture
def kit(tmp_path) -> Iterator[Callable[..., Kit]]:
    yield from kit_factory(tmp_path, after_beats=True)


def test_a_hung_worker_is_hung_not_starting_nor_ready(kit):
    """The fake workers never touch their heartbeat cells: past the timeout both hang."""
    k = kit(workers=2, worker_heartbeat_timeout=2.0, worker_heartbeat_interval=1.0)
    k.all_ready()
    assert k.master.pool.ready_count() == 2
    k.clock.advance(3.0)
    k.step()
    hung = [k.master.pool.by_key[key] for key in k.keys()]
    assert [w.state for w in hung] == [SlotState.HUNG] * 2
    assert [k.launcher.signalled(w.key) for w in hung] == [[DUMP_SIGNAL]] * 2
    assert [w["state"] for w in k.master.snapshot()["workers"]] == ["hung", "hung"]
    assert k.master.pool.ready_count() == 0 and "0/2 workers ready" in k.master.status_text()
    k.launcher.ready(hung[0].key)  # a late `ready` line does not make it ready again
    k.step()
    assert hung[0].state is SlotState.HUNG
    k.clock.advance(health.HUNG_KILL_AFTER)
    k.step()
    assert [k.launcher.signalled(w.key) for w in hung] == [[DUMP_SIGNAL, signal.SIGKILL]] * 2
    k.launcher.exit(hung[0].key, 1)
    k.step()
    assert hung[0].key not in k.master.pool.by_key and not hung[0].alive
    assert k.master.pool.slots[0].restarts == 1  # a hang is a failure: the slot restarts


def test_a_pool_whose_only_worker_hung_is_not_serving(kit):
    k = kit(workers=1, worker_heartbeat_timeout=2.0, worker_heartbeat_interval=1.0)
    k.all_ready()
    assert health.serving(k.master.pool, k.master.phase) == (True, "ok")
    k.clock.advance(3.0)
    k.step()
    assert health.serving(k.master.pool, k.master.phase) == (False, "no worker is ready")
    assert k.master.snapshot()["workers"][0]["state"] == "hung"


class Stays(Worker):
    """A thread worker that serves until asked to stop, then exits 0."""

    def run(self) -> None:
        while not self.wait(5.0):
            pass


class Fails(Worker):
    def run(self) -> None:
        raise SystemExit(3)


def _step_until(k: Kit, done: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"no {what} within {timeout}s"
        k.master.step(0.1)


def test_thread_workers_have_typed_keys_and_no_pid(kit):
    k = kit(real_launcher=True, worker_class=Stays, workers=2, worker_type="thread")
    exits: list[tuple[object, int]] = []
    k.server.hooks.add("after_worker_exit", lambda _s, w, status: exits.append((w, status)))
    assert isinstance(k.master.workers.launcher, ThreadLauncher)
    _step_until(k, lambda: k.master.phase is Phase.RUNNING, "ready pool")
    records = k.master.pool.workers()
    assert all(isinstance(w.key, ThreadKey) and w.pid is None for w in records)
    rows = k.master.snapshot()["workers"]
    assert [(r["pid"], r["state"], r["rss"]) for r in rows] == [(None, "ready", None)] * 2
    k.master.begin_stop(quick=False)
    _step_until(k, lambda: k.master.exit_code is not None, "stopped master")
    assert sorted(status for _, status in exits) == [0, 0]  # the hook's int, as before
    assert {w.key for w, _ in exits} == {w.key for w in records}
    assert all(w.exit_status == ExitStatus(code=0) for w in records)


def test_a_failing_thread_worker_ends_with_its_exit_code(kit, caplog):
    k = kit(real_launcher=True, worker_class=Fails, workers=1, worker_type="thread")
    statuses: list[int] = []
    k.server.hooks.add("after_worker_exit", lambda _s, _w, status: statuses.append(status))
    _step_until(k, lambda: bool(statuses), "worker exit")
    assert statuses[0] == 3 << 8 and k.master.pool.slots[0].last_exit == "exited with status 3"
    assert any("worker 0 (thread 1) exited with status 3" in r.message for r in caplog.records)


def test_a_reload_that_sets_a_heartbeat_timeout_checks_heartbeats_from_then_on(kit):
    """The heartbeat timer used to be armed at start only: a HUP that newly set
    worker_heartbeat_timeout was never checked until a restart."""
    k = kit(workers=1)
    k.all_ready()
    k.next_config = k.cfg.replace(worker_heartbeat_timeout=2.0, worker_heartbeat_interval=1.0)
    k.signal(signal.SIGHUP)
    k.all_ready(generation=k.master.pool.generation)
    for key in [w.key for w in k.master.pool.workers() if w.state is SlotState.STOPPING]:
        k.launcher.exit(key)
    k.step()
    (new,) = [k.master.pool.by_key[key] for key in k.keys()]
    assert new.state is SlotState.READY
    k.clock.advance(3.0)
    k.step()
    assert new.state is SlotState.HUNG
