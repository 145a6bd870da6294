"""Pool.abandon_generation: a reload that cannot boot gives each slot its old worker back."""

from __future__ import annotations

from svcengine.master.pool import Pool, SlotState


def _ready_pool() -> Pool:
    pool = Pool(2)
    for wid, pid in ((0, 100), (1, 101)):
        pool.spawned(wid, pid, 0.0)
        pool.ready(pid, 0.0)
    return pool


def test_abandon_restores_the_superseded_workers_and_returns_the_new_ones():
    pool = _ready_pool()
    pool.supersede_generation()
    new0 = pool.spawned(0, 200, 1.0)
    new1 = pool.spawned(1, 201, 1.0)
    pool.slots[1].fast_failures = 2
    doomed = pool.abandon_generation()
    assert doomed == [new0, new1]
    assert [pool.slots[i].current.key for i in (0, 1)] == [100, 101]
    assert not any(w.superseded for w in pool.workers())
    assert pool.slots[1].fast_failures == 0
    assert pool.ready_count() == 2 and pool.superseded() == []


def test_a_slot_whose_new_worker_is_ready_keeps_it():
    pool = _ready_pool()
    pool.supersede_generation()
    pool.spawned(0, 200, 1.0)
    pool.ready(200, 1.0)
    pool.by_key[100].state = SlotState.STOPPING  # the master stopped the old one at once
    new1 = pool.spawned(1, 201, 1.0)
    assert pool.abandon_generation() == [new1]
    assert pool.slots[0].current.key == 200
    assert pool.slots[1].current.key == 101


def test_a_slot_whose_worker_was_stopping_is_left_alone():
    pool = _ready_pool()
    pool.by_key[101].state = SlotState.STOPPING  # being stopped: not superseded, not restored
    pool.supersede_generation()
    pool.spawned(0, 200, 1.0)
    pool.abandon_generation()
    assert pool.slots[0].current.key == 100
    assert pool.slots[1].current.key == 101 and pool.slots[1].current.state is SlotState.STOPPING
