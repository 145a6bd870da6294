"""The shipped units are sandboxed (packaging/systemd/, docs/systemd.md "Sandboxing"), and a pool
still does everything under them: start, workers dropping to another user, reload, log
reopening, a USR2 upgrade, stop. In each box release (systemd 252, 257).
"""

from __future__ import annotations

import re

import pytest
from boxlib import TEST_LIB, Box, is_mold, wait_until

pytestmark = pytest.mark.systemd

UNITS = ("svcengine@app.service", "svcengine-forking@app.service")
# what `systemd-analyze security` calls "OK" starts at 2.0; the bar is 3.0
MAX_EXPOSURE = 3.0
APP = "svcengine@hard.service"
LOG = "/var/log/svcengine-hard.log"
HARD_TOML = (
    f'workers = 2\nworker = "boxworkers:Marker"\npython_path = ["{TEST_LIB}"]\n'
    f'chuser = "nobody"\nchgroup = "nogroup"\nlog = "{LOG}"\n'
)
READY = "2/2 workers ready"
NOBODY = "65534"
# CAP_CHOWN 0, CAP_DAC_OVERRIDE 1, CAP_KILL 5, CAP_SETGID 6, CAP_SETUID 7, CAP_NET_BIND_SERVICE 10
CAPS = (1 << 0) | (1 << 1) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 10)


def exposure(box: Box, unit: str) -> tuple[float, str]:
    text = box.out("systemd-analyze", "security", "--no-pager", unit)
    m = re.search(rf"Overall exposure level for {re.escape(unit)}: (\d+\.\d+)", text)
    assert m, text
    return float(m.group(1)), text


@pytest.mark.parametrize("unit", UNITS)
def test_units_score_ok_in_systemd_analyze_security(box: Box, unit):
    score, text = exposure(box, unit)
    print(f"systemd {box.systemd}: {unit}: {score}")
    assert score <= MAX_EXPOSURE, text


def status(box: Box, pid: int) -> dict[str, str]:
    text = box.out("cat", f"/proc/{pid}/status")
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def workers_of(box: Box, main: int) -> list[dict]:
    return sorted(
        (p for p in box.procs() if p["ppid"] == main and not is_mold(p)), key=lambda p: p["pid"]
    )


def wait_log(box: Box, pattern: str, count: int = 1, timeout: float = 30) -> str:
    def found() -> str | None:
        text = box.sh(f"cat {LOG} 2>/dev/null || true")
        return text if len(re.findall(pattern, text)) >= count else None

    return wait_until(f"{count}x /{pattern}/ in {LOG}", found, timeout=timeout)


def test_hardened_pool_runs_reloads_upgrades_and_stops(box: Box, units):
    units.config("hard", HARD_TOML)
    units.exit_probe(APP)
    box.run("rm", "-f", LOG, f"{LOG}.1")
    try:
        run_the_pool(box)
    finally:
        box.run("rm", "-f", LOG, f"{LOG}.1")


def run_the_pool(box: Box) -> None:
    cursor = box.cursor()
    box.systemctl("start", "--no-block", APP)
    props = box.wait_running(APP, READY, cursor=cursor)
    main = int(props["MainPID"])

    # the sandbox is in force: the master keeps root but only the capabilities it needs
    master = status(box, main)
    assert master["Uid"].split()[0] == "0", master
    assert int(master["CapBnd"], 16) == CAPS, master
    assert master["NoNewPrivs"] == "1", master
    assert int(master["Seccomp"]) == 2, master  # SystemCallFilter=
    assert box.out("readlink", f"/proc/{main}/ns/mnt") != box.out("readlink", "/proc/1/ns/mnt")
    # ... and the workers dropped to nobody
    old = workers_of(box, main)
    assert len(old) == 2, old
    for w in old:
        assert status(box, w["pid"])["Uid"].split() == [NOBODY] * 4, w
    wait_log(box, r"info-marker worker \d", count=2)

    # reload: new workers (as nobody again), the old ones stop gracefully
    box.systemctl("reload", APP)

    def reloaded():
        p = box.show(APP)
        if (p["ActiveState"], p["SubState"]) != ("active", "running"):
            return None
        if READY not in p["StatusText"]:
            return None
        now = workers_of(box, main)
        fresh = {w["pid"] for w in now} & {w["pid"] for w in old}
        return now if len(now) == 2 and not fresh else None

    new = wait_until("reloaded with 2 new workers", reloaded, timeout=45)
    for w in new:
        assert status(box, w["pid"])["Uid"].split() == [NOBODY] * 4, w
    for w in old:
        wait_log(box, rf"graceful-exit-marker worker \d+ pid {w['pid']}\b")

    # log rotation: logrotate renames the file and creates the new one for the workers' user
    box.sh(f"mv {LOG} {LOG}.1 && install -o nobody -g nogroup -m 640 /dev/null {LOG}")
    box.run("kill", "-USR1", str(main))
    text = wait_log(box, r"reopened log file; telling workers")
    assert "cannot reopen" not in text, text
    for w in new:
        wait_log(box, rf"\[{w['pid']}\] .*: reopened log file")

    # a zero-downtime upgrade under the sandbox
    ctl = box.run("svcengine", "ctl", "--name", "hard", "upgrade", check=False, timeout=60)
    out = ctl.stdout.decode() + ctl.stderr.decode()
    assert ctl.returncode == 0, f"ctl upgrade: exit {ctl.returncode}: {out}"
    m = re.search(rf"master {main} replaced by (\d+)", out)
    assert m, out
    upgraded = int(m.group(1))
    wait_until(f"MainPID={upgraded}", lambda: box.show(APP)["MainPID"] == str(upgraded))
    box.wait_running(APP, READY)
    for w in workers_of(box, upgraded):
        assert status(box, w["pid"])["Uid"].split() == [NOBODY] * 4, w

    # stop: the master exits 0, nothing is left
    cursor = box.cursor()
    box.systemctl("stop", APP, timeout=90)
    assert box.exit_of(APP, cursor) == ("success", "exited", "0"), box.journal(APP, cursor=cursor)
    text = box.journal(APP, cursor=cursor)
    assert "Killing process" not in text, text
