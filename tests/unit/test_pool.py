"""Pool bookkeeping and the stop escalation, with a fake clock and no processes."""

from __future__ import annotations

import signal

from svcengine.master.handles import ExitStatus
from svcengine.master.pool import Backoff, Pool, SlotState, describe_status
from svcengine.master.stopping import Stopper

KILLED = ExitStatus.killed(signal.SIGKILL)
exited = ExitStatus.exited


def test_describe_status():
    assert describe_status(signal.SIGKILL) == "killed by SIGKILL"  # waitpid's raw status
    assert describe_status(3 << 8) == "exited with status 3"


def test_first_restart_at_once_then_exponential_backoff_capped():
    pool = Pool(1, Backoff(min_uptime=1.0, minimum=0.1, maximum=0.4))
    t = 100.0
    delays = []
    for pid in range(10, 16):
        assert pool.wanted(t + 10) == [0]
        w = pool.spawned(0, pid, t)
        pool.ready(pid, t)
        pool.exited(pid, KILLED, t + 0.5)  # died young
        delays.append(round(pool.slots[0].not_before - (t + 0.5), 3))
        t += 10
    assert delays == [0.0, 0.1, 0.2, 0.4, 0.4, 0.4]
    assert pool.total_restarts == 6 and w.exit_status == KILLED


def test_a_long_life_resets_the_backoff():
    pool = Pool(1, Backoff(1.0, 0.1, 30))
    for pid, life in ((1, 0.1), (2, 0.1), (3, 50.0)):
        pool.spawned(0, pid, 0.0)
        pool.ready(pid, 0.0)
        pool.exited(pid, KILLED, life)
    assert pool.slots[0].not_before == 50.0  # immediate again


def test_backoff_blocks_wanted_until_due():
    pool = Pool(1, Backoff(1.0, 0.5, 30))
    for pid in (1, 2):
        pool.spawned(0, pid, 0.0)
        pool.exited(pid, KILLED, 0.0)  # never ready: a fast failure
    assert pool.wanted(0.1) == []
    assert pool.next_retry(0.1) == 0.5
    assert pool.wanted(0.5) == [0]


def test_unrecoverable_code_retires_the_slot():
    pool = Pool(2, unrecoverable=frozenset({42}))
    pool.spawned(0, 1, 0.0)
    pool.spawned(1, 2, 0.0)
    pool.exited(1, exited(42), 1.0)
    assert pool.slots[0].state is SlotState.RETIRED and pool.wanted(5.0) == []
    assert pool.all_retired() is None
    pool.exited(2, exited(42), 1.0)
    assert pool.all_retired() == 42


def test_resize_down_returns_surplus_and_forgets_slots():
    pool = Pool(3)
    for wid in range(3):
        pool.spawned(wid, 10 + wid, 0.0)
    surplus = pool.resize(1)
    assert [w.worker_id for w in surplus] == [1, 2]
    for w in surplus:
        w.state = SlotState.STOPPING
        pool.exited(w.key, exited(0), 1.0)
    assert sorted(pool.slots) == [0]


def test_retired_generation_keeps_serving_until_replaced():
    pool = Pool(2)
    for wid in range(2):
        pool.spawned(wid, 10 + wid, 0.0)
        pool.ready(10 + wid, 0.0)
    old = pool.supersede_generation()
    assert [w.pid for w in old] == [10, 11] and pool.wanted(0.0) == [0, 1]
    pool.spawned(0, 20, 1.0)
    pool.ready(20, 1.0)
    assert [w.pid for w in pool.superseded(0)] == [10]
    pool.exited(10, exited(0), 2.0)  # old worker exit: no restart accounting
    assert pool.total_restarts == 0 and pool.slots[0].current.pid == 20


def test_stopper_term_then_kill_after_timeout():
    pool = Pool(2)
    ws = [pool.spawned(i, 10 + i, 0.0) for i in range(2)]
    s = Stopper(quick=False, timeout=5.0, quick_timeout=1.0)
    assert [s.signal_for(w) for w in s.start(ws, 0.0)] == [signal.SIGTERM] * 2
    assert s.tick(ws, 4.9) == []
    assert s.tick(ws, 5.0) == [(ws[0], signal.SIGKILL), (ws[1], signal.SIGKILL)]
    assert s.tick(ws, 9.0) == []  # only once


def test_stopper_escalation_shortens_the_deadline():
    pool = Pool(1)
    ws = [pool.spawned(0, 10, 0.0)]
    s = Stopper(quick=False, timeout=30.0, quick_timeout=1.0)
    s.start(ws, 0.0)
    assert s.escalate(ws, 2.0) == [(ws[0], signal.SIGQUIT)]
    assert s.deadline == 3.0 and s.quick
