"""`svcengine ctl` against the shipped units in a real systemd (issue 12): `--name` finds the
forking unit's master, and ctl's commands mean the same under a non-default signal_map."""

from __future__ import annotations

import pytest
from boxlib import TEST_LIB, Box

pytestmark = pytest.mark.systemd

TOML = f'workers = 2\nworker = "boxworkers:Marker"\npython_path = ["{TEST_LIB}"]\n'


def test_ctl_name_steers_the_forking_unit(box: Box, units):
    """svcengine-forking@.service gives --pid /run/svcengine/%i.pid, so the control socket
    sits beside the pidfile, not in /run/svcengine/%i/: ctl --name must look there too."""
    units.config("fork", TOML)
    unit = "svcengine-forking@fork.service"
    box.systemctl("start", unit, timeout=60)
    main = int(box.wait_running(unit, status=None)["MainPID"])
    st = box.run("svcengine", "ctl", "--name", "fork", "status", check=False)
    assert st.returncode == 0, st.stderr.decode()
    assert f"master pid {main} (fork)" in st.stdout.decode()
    stop = box.run("svcengine", "ctl", "--name", "fork", "stop", check=False, timeout=60)
    assert stop.returncode == 0, stop.stderr.decode()
    assert f"stop: master {main} exited" in stop.stdout.decode()
    box.wait_inactive(unit)


def test_ctl_stop_is_graceful_under_the_unicorn_signal_map(box: Box, units):
    units.config("app", TOML + 'signal_map = "unicorn"\n')
    unit = "svcengine@app.service"
    cursor = box.cursor()
    box.systemctl("start", unit, timeout=60)
    box.wait_running(unit, "2/2 workers ready", cursor=cursor)
    r = box.run("svcengine", "ctl", "--name", "app", "stop", check=False, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    box.wait_inactive(unit)
    text = box.journal(unit, cursor=cursor)
    assert "graceful stop: stopping 2 worker(s)" in text, text
