"""Issue 12 item 9 under a real systemd 252 (the box): a reload into workers that cannot boot
must not end in an outage. Before the fix the new slots crash-looped to the backoff cap, the
pool turned unhealthy, WATCHDOG=1 stopped, and systemd killed the master and the old workers
that were still serving.

Run: sudo BOX_NAME=... python -m pytest -m systemd tests/systemd/test_hardening_loop_systemd.py
"""

from __future__ import annotations

import time

import pytest
from boxlib import TEST_LIB, Box, wait_until
from test_in_systemd import APP, MARKER_TOML, READY, alive, key, pool, start

pytestmark = pytest.mark.systemd

# a small backoff cap: the old engine reached it (and stopped the watchdog) within seconds
FAST_BACKOFF = "worker_restart_backoff_min = 0.1\nworker_restart_backoff_max = 0.5\n"
BROKEN_TOML = (
    f'workers = 2\nworker = "boxworkers:NoSuchWorker"\npython_path = ["{TEST_LIB}"]\n'
    + FAST_BACKOFF
)


def test_reload_into_a_worker_that_cannot_boot_keeps_the_unit_active(box: Box, units):
    units.config("app", MARKER_TOML + FAST_BACKOFF)
    units.dropin(APP, "[Service]\nWatchdogSec=2s\nRestartSec=1s\n")
    props = start(box, APP)
    main = int(props["MainPID"])
    restarts = props["NRestarts"]
    _, old = pool(box, main)
    assert len(old) == 2
    cursor = box.cursor()

    units.config("app", BROKEN_TOML)
    box.systemctl("reload", APP)

    # for 4 watchdog periods: never restarted, old workers serving, watchdog fed
    pings: set[int] = set()
    t0 = time.monotonic()

    def outlived_the_watchdog() -> bool:
        p = box.show(APP)
        assert (p["MainPID"], p["NRestarts"]) == (str(main), restarts), (
            f"the unit was restarted: {p}\n{box.journal(APP, cursor=cursor, tail=30)}"
        )
        assert p["ActiveState"] in ("active", "reloading"), p
        assert len(alive(box, old)) == 2, "the old workers must keep serving"
        if p["WatchdogTimestampMonotonic"] not in ("", "0"):
            pings.add(int(p["WatchdogTimestampMonotonic"]))
        return time.monotonic() - t0 > 8 and len(pings) >= 3

    wait_until("active through 4 watchdog periods", outlived_the_watchdog, timeout=30)
    box.wait_journal(APP, r"reload abandoned: worker \d failed to boot", cursor)
    p = box.show(APP)
    assert (p["ActiveState"], p["SubState"]) == ("active", "running"), p
    assert "reload failed: worker" in p["StatusText"], p["StatusText"]
    assert "previous workers keep serving" in p["StatusText"], p["StatusText"]
    assert READY in p["StatusText"], p["StatusText"]
    _, now = pool(box, main)
    assert {key(w) for w in now} == {key(w) for w in old}, "only the old workers are left"
