"""svcengine under a real systemd (Debian 12: 252, Debian 13: 257) in the nspawn box: the shipped
units, the installed wheel, real processes. Every wait is on an event with a deadline.

Run: sudo python -m pytest -m systemd tests/systemd   (first run builds the box rootfs, ~1-2 min)
"""

from __future__ import annotations

import json
import re
import time

import pytest
from boxlib import EXAMPLES, REPO, TEST_LIB, Box, is_mold, wait_until

pytestmark = pytest.mark.systemd

APP = "svcengine@app.service"
APP_CGROUP = "/sys/fs/cgroup/system.slice/system-svcengine.slice/svcengine@app.service"
MARKER_TOML = f'workers = 2\nworker = "boxworkers:Marker"\npython_path = ["{TEST_LIB}"]\n'
READY = "2/2 workers ready"


def key(p: dict) -> tuple[int, int]:
    """A process identity that survives pid reuse."""
    return (p["pid"], p["starttime"])


def alive(box: Box, procs: list[dict]) -> list[dict]:
    now = {key(p) for p in box.procs()}
    return [p for p in procs if key(p) in now]


def pool(box: Box, main_pid: int) -> tuple[dict, list[dict]]:
    procs = box.procs()
    (master,) = [p for p in procs if p["pid"] == main_pid]
    workers = sorted(
        (p for p in procs if p["ppid"] == main_pid and not is_mold(p)), key=lambda p: p["cmdline"]
    )
    return master, workers


def start(box: Box, unit: str, status: str = READY, timeout: float = 30) -> dict[str, str]:
    cursor = box.cursor()
    box.systemctl("start", "--no-block", unit)
    return box.wait_running(unit, status, timeout=timeout, cursor=cursor)


def test_start(box: Box, units):
    units.config("app", MARKER_TOML)
    props = start(box, APP)
    main = int(props["MainPID"])
    assert props["NRestarts"] == "0"
    assert props["ControlGroup"] == "/system.slice/system-svcengine.slice/svcengine@app.service"

    master, workers = pool(box, main)
    assert master["cmdline"].startswith("svcengine master"), master
    assert "app" in master["cmdline"], master
    assert master["comm"].startswith("svcengine"), master  # what ps -o comm / pgrep see
    assert len(workers) == 2, workers
    for w in workers:
        assert w["cmdline"].startswith("svcengine worker"), w
        assert "app" in w["cmdline"], w

    (mold,) = [p for p in box.procs() if p["ppid"] == main and is_mold(p)]
    assert mold["cmdline"].startswith("svcengine mold gen 1 app"), mold
    in_cgroup = {int(x) for x in box.out("cat", f"{APP_CGROUP}/cgroup.procs").split()}
    assert in_cgroup == {main, mold["pid"]} | {w["pid"] for w in workers}


def test_reload_replaces_workers(box: Box, units):
    units.config("app", MARKER_TOML)
    props = start(box, APP)
    main = int(props["MainPID"])
    _, old = pool(box, main)
    assert len(old) == 2
    cursor = box.cursor()

    box.systemctl("reload", APP)  # on systemd 252 this returns when `kill -HUP` has exited

    states = []

    def reloaded():
        p = box.show(APP)
        if not states or states[-1] != p["ActiveState"]:
            states.append(p["ActiveState"])
        if (p["ActiveState"], p["SubState"]) != ("active", "running") or READY not in p[
            "StatusText"
        ]:
            return None
        _, now = pool(box, main)
        if len(now) == 2 and not {key(w) for w in now} & {key(w) for w in old}:
            return p, now
        return None

    props, new = wait_until("reloaded with 2 new workers", reloaded, timeout=45)
    print(f"ActiveState during the reload: {states}")
    assert int(props["MainPID"]) == main, "reload must not replace the master"
    assert props["NRestarts"] == "0"
    # the reload job ran (on 252 this is logged when `kill -HUP` exits, not when READY=1 came)
    box.wait_journal(APP, r"Reloaded svcengine@app\.service", cursor)
    wait_until("old workers gone", lambda: not alive(box, old), timeout=40)
    for w in old:
        box.wait_journal(APP, rf"graceful-exit-marker worker \d+ pid {w['pid']}\b", cursor)


def test_watchdog_restarts_a_wedged_master(box: Box, units):
    units.config("app", MARKER_TOML)
    # RestartSec=2s: Result=watchdog stays visible in `systemctl show` until the restart
    units.dropin(APP, "[Service]\nWatchdogSec=2s\nRestartSec=2s\n")
    props = start(box, APP)
    main = int(props["MainPID"])
    master, workers = pool(box, main)
    restarts = int(props["NRestarts"])
    cursor = box.cursor()

    # healthy: the master pings (systemd records each WATCHDOG=1); outlive two watchdog periods
    pings = {props["WatchdogTimestampMonotonic"]}

    def pinged_long_enough():
        p = box.show(APP)
        assert (p["MainPID"], p["NRestarts"]) == (str(main), str(restarts)), (
            f"restarted while healthy: {p}\n{box.journal(APP, cursor=cursor)}"
        )
        pings.add(p["WatchdogTimestampMonotonic"])
        stamps = sorted(int(x) for x in pings if x not in ("", "0"))
        return len(stamps) >= 2 and stamps[-1] - stamps[0] > 4_000_000  # µs: 2 x WatchdogSec

    wait_until("pinging the watchdog for 4 s", pinged_long_enough, timeout=20)

    box.run("kill", "-STOP", str(main))

    results = set()

    def restarted():
        p = box.show(APP)
        results.add(p["Result"])
        if (
            int(p["NRestarts"]) > restarts
            and p["MainPID"] not in ("0", str(main))
            and p["ActiveState"] == "active"
            and READY in p["StatusText"]
        ):
            return p
        return None

    props = wait_until("restarted by the watchdog", restarted, timeout=75)
    text = box.wait_journal(APP, r"Failed with result 'watchdog'", cursor)
    assert "Watchdog timeout" in text, text
    assert "watchdog" in results, f"Result values seen while polling: {sorted(results)}"
    assert not alive(box, [master, *workers]), "the wedged pool must be gone"


def test_stop_is_graceful_and_complete(box: Box, units):
    units.config("app", MARKER_TOML)
    units.exit_probe(APP)
    props = start(box, APP)
    main = int(props["MainPID"])
    master, workers = pool(box, main)
    assert len(workers) == 2
    cursor = box.cursor()

    t0 = time.monotonic()
    box.systemctl("stop", APP, timeout=90)  # returns once the unit is down
    took = time.monotonic() - t0

    assert box.show(APP)["ActiveState"] == "inactive"
    assert box.exit_of(APP, cursor) == ("success", "exited", "0"), "the master must exit 0"
    cgroup_left = box.sh(f"cat {APP_CGROUP}/cgroup.procs 2>/dev/null || true").split()
    assert cgroup_left == [], f"left in the unit's cgroup: {cgroup_left}"
    assert not alive(box, [master, *workers])

    text = box.journal(APP, cursor=cursor)
    for w in workers:
        assert re.search(rf"graceful-exit-marker worker \d+ pid {w['pid']}\b", text), text
    assert "Killing process" not in text, f"systemd had to kill leftovers:\n{text}"
    assert not re.search(r"killed by SIGKILL|signal=KILL", text), text
    assert took < 20, f"stop took {took:.1f} s"


def test_kill_9_master_restarts_without_orphans(box: Box, units):
    units.config("app", MARKER_TOML)
    props = start(box, APP)
    main = int(props["MainPID"])
    master, workers = pool(box, main)
    restarts = int(props["NRestarts"])

    box.run("kill", "-9", str(main))

    props = wait_until(
        "restarted after kill -9",
        lambda: (
            (p := box.show(APP))["ActiveState"] == "active"
            and int(p["NRestarts"]) > restarts
            and p["MainPID"] not in ("0", str(main))
            and READY in p["StatusText"]
            and p
        ),
        timeout=45,
    )
    assert not alive(box, [master, *workers]), "workers of the killed master survived it"
    _, new = pool(box, int(props["MainPID"]))
    assert len(new) == 2


@pytest.mark.parametrize("listen", ["unix", "tcp"])
def test_socket_activation_serves_the_first_connection(box: Box, units, listen):
    if not (REPO / "examples" / "http_worker.py").exists():
        pytest.fail("examples/http_worker.py (class HttpWorker) does not exist yet")
    units.config(
        "web", f'workers = 2\nworker = "http_worker:HttpWorker"\npython_path = ["{EXAMPLES}"]\n'
    )
    target = "/run/svcengine/web.sock"
    if listen == "tcp":
        target = "127.0.0.1:18080"
        units.dropin("svcengine@web.socket", f"[Socket]\nListenStream=\nListenStream={target}\n")
    box.systemctl("start", "svcengine@web.socket")
    assert box.show("svcengine@web.service")["ActiveState"] == "inactive"
    cursor = box.cursor()

    result = box.http(target)  # this connection makes systemd start the service

    first_line = result["response"].split("\r\n", 1)[0]
    assert first_line.startswith("HTTP/1.") and " 200" in first_line, (
        f"{result}\n{box.journal('svcengine@web.service', cursor=cursor)}"
    )
    props = box.wait_running("svcengine@web.service", READY, cursor=cursor)
    _, workers = pool(box, int(props["MainPID"]))
    assert len(workers) == 2


def test_journal_priorities(box: Box, units):
    units.config("app", MARKER_TOML)
    cursor = box.cursor()
    start(box, APP)
    box.wait_journal(APP, r"info-marker worker \d", cursor, count=2)
    box.wait_journal(APP, r"warn-marker worker \d", cursor, count=2)

    # what an operator types
    warnings = box.out("journalctl", "-q", "--no-pager", "-o", "cat", "-u", APP, "-p", "warning")
    assert len(re.findall(r"warn-marker worker", warnings)) >= 2, warnings
    assert "info-marker" not in warnings, warnings

    entries = [
        json.loads(line) for line in box.journal(APP, cursor=cursor, fmt="json").splitlines()
    ]
    prio: dict[str, set[str]] = {}
    for e in entries:
        msg = e.get("MESSAGE")
        m = re.search(r"\b(info|warn)-marker worker", msg) if isinstance(msg, str) else None
        if m:
            assert not msg.startswith("<"), f"priority prefix not consumed by journald: {msg!r}"
            prio.setdefault(m.group(1), set()).add(e.get("PRIORITY"))
    assert prio == {"info": {"6"}, "warn": {"4"}}, prio


def test_default_demo_worker(box: Box, units):
    units.config("demo", "workers = 2\n")
    cursor = box.cursor()
    start(box, "svcengine@demo.service")
    for n in (0, 1):
        box.wait_journal("svcengine@demo.service", rf"\[worker_id: {n}\] Awesome work!", cursor)


@pytest.mark.parametrize(
    "name, toml, message",
    [
        ("bad", 'workers = "two"\n', "key 'workers' in /etc/svcengine/bad.toml"),
        ("missing", None, "/etc/svcengine/missing.toml"),  # `systemctl start svcengine@typo`
    ],
)
def test_config_error_is_not_restarted(box: Box, units, name, toml, message):
    if toml is not None:
        units.config(name, toml)
    unit = f"svcengine@{name}.service"
    cursor = box.cursor()
    proc = box.run("systemctl", "start", unit, check=False, timeout=120)
    assert proc.returncode != 0
    props = box.show(unit)
    # failed for good, not "activating (auto-restart)": RestartPreventExitStatus=78 applied
    assert (props["ActiveState"], props["SubState"]) == ("failed", "failed"), props
    assert (props["ExecMainCode"], props["ExecMainStatus"]) == ("1", "78"), props
    assert props["NRestarts"] == "0", props
    text = box.journal(unit, cursor=cursor)
    assert message in text, text


def test_forking_unit(box: Box, units):
    units.config("fork", MARKER_TOML)
    unit = "svcengine-forking@fork.service"
    units.exit_probe(unit)
    cursor = box.cursor()
    # Type=forking: returns once the launcher has exited and systemd has read the pidfile
    proc = box.run("systemctl", "start", unit, check=False, timeout=60)
    assert proc.returncode == 0, f"start failed:\n{box.journal(unit, cursor=cursor)}"
    props = box.wait_running(unit, status=None)
    main = int(props["MainPID"])
    assert box.out("cat", "/run/svcengine/fork.pid").strip() == str(main)
    master, workers = pool(box, main)
    assert master["cmdline"].startswith("svcengine master"), master
    assert master["ppid"] == 1, f"the launcher must be gone, the master re-parented: {master}"
    assert len(workers) == 2, workers
    cursor = box.cursor()

    box.systemctl("stop", unit, timeout=90)
    assert box.show(unit)["ActiveState"] == "inactive"
    assert box.exit_of(unit, cursor) == ("success", "exited", "0")
    assert box.run("test", "-e", "/run/svcengine/fork.pid", check=False).returncode != 0
    assert not alive(box, [master, *workers])
