"""USR2 edges under the real systemd 252 (issue 12, items 5 and 18): a stop in the upgrade
window, and a broken release, with the shipped unit (Type=notify, NotifyAccess=all,
KillMode=mixed).

The new release's workers wait (unready) while /opt/uptest/gate exists, for a datagram on
gate-<pid>.sock, which holds an upgrade in its window without sleeps.

Run: sudo BOX_NAME=... .venv/bin/python -m pytest -m systemd \
     tests/systemd/test_hardening_upgrade_systemd.py -v
"""

from __future__ import annotations

import pytest
from boxlib import Box

pytestmark = pytest.mark.systemd

APP = "svcengine@app.service"
APP_CGROUP = "/sys/fs/cgroup/system.slice/system-svcengine.slice/svcengine@app.service"
DIR = "/opt/uptest"
RELEASE = f'''
import os, socket
import svcengine


class Gated(svcengine.Worker):
    ready_on_run = False

    def run(self):
        if os.path.exists("{DIR}/gate"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(f"{DIR}/gate-{{os.getpid()}}.sock")
            self.logger.info("worker %d gated (pid %d)", self.worker_id, os.getpid())
            while not self.stopping and not self.wait_readable([sock]):
                pass
        if not self.stopping:
            self.ready()
        while not self.stopping:
            self.wait(3600)
'''
CONFIG = f'workers = 2\nworker = "release:Gated"\npython_path = ["{DIR}"]\n'


@pytest.fixture
def release(box: Box):
    box.sh(f"rm -rf {DIR}")
    box.write(f"{DIR}/release.py", RELEASE)
    yield
    box.sh(f"rm -rf {DIR}")


def _start(box: Box, units) -> tuple[int, str]:
    units.config("app", CONFIG)
    units.exit_probe(APP)
    cursor = box.cursor()
    box.systemctl("start", APP, timeout=60)
    props = box.wait_running(APP, "2/2 workers ready", cursor=cursor)
    return int(props["MainPID"]), cursor


def test_systemctl_stop_during_an_upgrade_leaves_nothing(box: Box, units, release):
    old, cursor = _start(box, units)
    box.sh(f"touch {DIR}/gate; kill -USR2 {old}")
    box.wait_journal(APP, r"gated \(pid", cursor, count=2)  # the new master is booting
    cursor = box.cursor()
    box.systemctl("stop", APP, timeout=90)
    journal = box.journal(APP, cursor=cursor)
    assert box.exit_of(APP, cursor) == ("success", "exited", "0"), journal
    left = box.sh(f"cat {APP_CGROUP}/cgroup.procs 2>/dev/null || true").split()
    assert left == [], f"left in the unit's cgroup: {left}"
    assert "Killing process" not in journal, journal
    assert "stopping the new master" in journal, journal


def test_a_broken_release_under_systemd_rolls_back_and_the_unit_stays_up(box: Box, units, release):
    old, cursor = _start(box, units)
    box.write(f"{DIR}/release.py", "def broken(:\n")
    box.sh(f"kill -USR2 {old}")
    # the old master's STATUS= comes after anything the failed new master said
    props = box.wait_for(
        APP,
        "the rollback's status",
        lambda p: "upgrade failed" in p["StatusText"],
        timeout=60,
        cursor=cursor,
    )
    state = (props["ActiveState"], props["SubState"], props["MainPID"])
    assert state == ("active", "running", str(old)), (props, box.journal(APP, cursor=cursor))
