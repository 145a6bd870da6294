"""Type=notify-reload (systemd >= 253, Debian 13): with packaging/systemd/svcengine@.service.d/
notify-reload.conf, `systemctl reload` sends SIGHUP itself and returns once the master has sent
RELOADING=1 + MONOTONIC_USEC ... READY=1, i.e. once the new workers are ready. Skipped in boxes
with an older systemd, which do not get the drop-in (boxlib.provision).
"""

from __future__ import annotations

import time

import pytest
from boxlib import NOTIFY_RELOAD_SINCE, TEST_LIB, Box, is_mold, wait_until

pytestmark = pytest.mark.systemd

APP = "svcengine@app.service"
MARKER_TOML = f'workers = 2\nworker = "boxworkers:Marker"\npython_path = ["{TEST_LIB}"]\n'
READY = "2/2 workers ready"


@pytest.fixture
def notify_reload(box: Box) -> Box:
    if box.systemd < NOTIFY_RELOAD_SINCE:
        pytest.skip(f"systemd {box.systemd}: Type=notify-reload needs {NOTIFY_RELOAD_SINCE}")
    return box


def start(box: Box) -> tuple[int, set[tuple[int, int]]]:
    cursor = box.cursor()
    box.systemctl("start", "--no-block", APP)
    props = box.wait_running(APP, READY, cursor=cursor)
    main = int(props["MainPID"])
    return main, {
        (p["pid"], p["starttime"]) for p in box.procs() if p["ppid"] == main and not is_mold(p)
    }


def test_the_unit_is_notify_reload(notify_reload: Box, units):
    text = notify_reload.systemctl("show", "-p", "Type,ReloadSignal,ExecReload", APP)
    props = dict(line.split("=", 1) for line in text.splitlines())
    assert props["Type"] == "notify-reload", text
    assert props["ReloadSignal"] == "1", text  # SIGHUP
    assert not props.get("ExecReload"), f"the drop-in must clear ExecReload= (two HUPs): {text}"


def test_reload_returns_once_the_new_workers_are_ready(notify_reload: Box, units):
    box = notify_reload
    units.config("app", MARKER_TOML)
    main, old = start(box)

    t0 = time.monotonic()
    box.systemctl("reload", APP)  # blocks until READY=1 after RELOADING=1
    took = time.monotonic() - t0

    # at once, no polling: the reload is over and two new workers run
    props = box.show(APP)
    assert (props["ActiveState"], props["SubState"]) == ("active", "running"), props
    assert READY in props["StatusText"], props
    assert int(props["MainPID"]) == main
    now = {(p["pid"], p["starttime"]) for p in box.procs() if p["ppid"] == main and not is_mold(p)}
    assert len(now - old) == 2, f"new workers when reload returned: {now - old} (old {old})"
    print(f"systemctl reload took {took:.2f} s")


def test_a_refused_reload_returns_with_the_reason(notify_reload: Box, units):
    box = notify_reload
    units.config("app", MARKER_TOML)
    # a bounded wait if the master never answers (reload uses the start timeout)
    units.dropin(APP, "[Service]\nTimeoutStartSec=8s\n")
    main, old = start(box)
    units.config("app", 'workers = "two"\n')

    t0 = time.monotonic()
    proc = box.run("systemctl", "reload", APP, check=False, timeout=60)
    took = time.monotonic() - t0
    props = box.show(APP)
    print(f"refused reload: exit {proc.returncode} after {took:.1f} s; {props}")

    assert took < 6, f"systemctl reload waited {took:.1f} s for an answer"
    assert props["ActiveState"] == "active", props
    assert int(props["MainPID"]) == main, "a refused config must not cost the running pool"
    assert "key 'workers'" in props["StatusText"], props
    wait_until(
        "the old workers still serving",
        lambda: (
            old
            <= {
                (p["pid"], p["starttime"])
                for p in box.procs()
                if p["ppid"] == main and not is_mold(p)
            }
        ),
        timeout=5,
    )
