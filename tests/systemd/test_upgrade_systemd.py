"""A zero-downtime USR2 upgrade under the real systemd in the box (252, 257), with clients in it.

The unit has NotifyAccess=all; the new master sends MAINPID=<self> + READY=1, then BARRIER=1,
then TERM to the old master. What systemd must see: the unit active/running the whole time,
MainPID moving to the new master, WATCHDOG=1 arriving for several intervals after the handoff,
no restart; what the clients must see: not one failed request. Then a clean stop.

Run: sudo .venv/bin/python -m pytest -m systemd tests/systemd/test_upgrade_systemd.py -v
"""

from __future__ import annotations

import json
import re
import select
import subprocess
import threading
import time

import pytest
from boxlib import BOX_SH, EXAMPLES, TEST_LIB, Box, _box_env, is_mold, wait_until

pytestmark = pytest.mark.systemd

APP = "svcengine@app.service"
APP_CGROUP = "/sys/fs/cgroup/system.slice/system-svcengine.slice/svcengine@app.service"
PORT = 18181
WORKERS = 4
READY = f"{WORKERS}/{WORKERS} workers ready"
WATCHDOG_SEC = 2
HTTP_TOML = (
    f'workers = {WORKERS}\nworker = "http_worker:HttpWorker"\npython_path = ["{EXAMPLES}"]\n'
    f'listen = ["127.0.0.1:{PORT}"]\n'
)


class BoxLoad:
    """tests/systemd/inbox/boxload.py running in the box (the box has only loopback), fed to
    us through a pipe: `warm ok=N` once the load is going, the totals when it is done."""

    def __init__(self, box: Box, clients: int, seconds: float, warm: int) -> None:
        self.seconds = seconds
        self.proc = subprocess.Popen(
            [str(BOX_SH), "exec", "python3", f"{TEST_LIB}/boxload.py"]
            + [f"127.0.0.1:{PORT}", str(clients), str(seconds), str(warm)],
            env=_box_env(box.name, box.suite),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []

    def wait_line(self, prefix: str, timeout: float) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {prefix!r} from the load in {timeout} s: {self.lines}")
            readable, _, _ = select.select([self.proc.stdout], [], [], left)
            if readable:
                line = self.proc.stdout.readline()
                if not line:
                    err = self.proc.stderr.read() if self.proc.stderr else ""
                    raise AssertionError(f"load ended before {prefix!r}: {self.lines}\n{err}")
                self.lines.append(line.rstrip("\n"))
                if line.startswith(prefix):
                    return line

    def result(self) -> dict:
        """The totals (waits for the end of the bounded load)."""
        return json.loads(self.wait_line("{", self.seconds + 30))

    def close(self) -> None:
        """The load is bounded: let it end; kill our own box.sh only if it overstays."""
        try:
            self.proc.wait(self.seconds + 30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


class UnitWatch:
    """Every distinct state of the unit while the test acts, read in a loop from `systemctl
    show` (an observer, not a synchronisation: the test waits on its own events)."""

    FIELDS = ("ActiveState", "SubState", "MainPID", "NRestarts", "Result")

    def __init__(self, box: Box, unit: str) -> None:
        self.box = box
        self.unit = unit
        self.states: list[tuple[str, ...]] = []
        self.pings: list[tuple[int, str]] = []  # (WatchdogTimestampMonotonic, MainPID)
        self.polls = 0
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> UnitWatch:
        self._thread.start()
        return self

    def _watch(self) -> None:
        try:
            while not self._stop.is_set():
                p = self.box.show(self.unit)
                self.polls += 1
                state = tuple(p[f] for f in self.FIELDS)
                if not self.states or self.states[-1] != state:
                    self.states.append(state)
                stamp = int(p["WatchdogTimestampMonotonic"] or 0)
                if stamp and (not self.pings or self.pings[-1][0] != stamp):
                    self.pings.append((stamp, p["MainPID"]))
        except BaseException as exc:  # reported by stop()
            self._error = exc

    def pings_by(self, pid: int) -> list[int]:
        return [stamp for stamp, main in self.pings if main == str(pid)]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        if self._error is not None:
            raise self._error


def test_usr2_upgrade_under_systemd_loses_nothing(box: Box, units):
    t0 = time.monotonic()
    units.config("app", HTTP_TOML)
    units.dropin(APP, f"[Service]\nWatchdogSec={WATCHDOG_SEC}s\n")
    units.exit_probe(APP)
    cursor = box.cursor()
    box.systemctl("start", APP, timeout=60)  # Type=notify: returns at READY=1
    props = box.wait_running(APP, READY, cursor=cursor)
    old = int(props["MainPID"])
    restarts = props["NRestarts"]
    procs = box.procs()
    old_workers = [p for p in procs if p["ppid"] == old and not is_mold(p)]
    assert len(old_workers) == WORKERS, old_workers
    old_keys = {(p["pid"], p["starttime"]) for p in procs if p["pid"] == old or p["ppid"] == old}

    watch = UnitWatch(box, APP).start()
    load = BoxLoad(box, clients=8, seconds=15, warm=300)
    try:
        load.wait_line("warm", 10)
        t_usr2 = time.monotonic()
        ctl = box.run("svcengine", "ctl", "--name", "app", "upgrade", check=False, timeout=60)
        took = time.monotonic() - t_usr2
        out = ctl.stdout.decode() + ctl.stderr.decode()
        assert ctl.returncode == 0, f"ctl upgrade: exit {ctl.returncode}: {out}"
        m = re.search(rf"master {old} replaced by (\d+)", out)
        assert m, out
        new = int(m.group(1))
        assert new != old

        # systemd follows the new master, and it keeps pinging the watchdog afterwards
        wait_until(f"MainPID={new}", lambda: box.show(APP)["MainPID"] == str(new), timeout=5)
        wait_until(
            "3 watchdog pings from the new master",
            lambda: len(watch.pings_by(new)) >= 4,
            timeout=4 * WATCHDOG_SEC + 2,
        )
        result = load.result()
    finally:
        load.close()
        watch.stop()
    stamps = [stamp for stamp, _ in watch.pings]
    gaps = [(b - a) // 1000 for a, b in zip(stamps, stamps[1:], strict=False)]
    print(
        f"upgrade {old} -> {new}: ctl took {took:.2f} s; load {result['ok']} ok "
        f"{result['failed']} failed; {watch.polls} polls; states {watch.states}; "
        f"watchdog gaps (ms) {gaps}"
    )
    journal = box.journal(APP, cursor=cursor)

    # the unit never left active/running and never restarted
    assert {s[:2] for s in watch.states} == {("active", "running")}, watch.states
    assert {s[3] for s in watch.states} == {restarts}, watch.states
    assert {s[4] for s in watch.states} == {"success"}, watch.states
    assert {s[2] for s in watch.states} == {str(old), str(new)}, watch.states
    assert "Watchdog timeout" not in journal, journal

    # the pings continued from the new master (a lapse would have been a restart, seen above)
    assert len(watch.pings_by(new)) >= 4, watch.pings

    # the clients saw nothing
    assert result["failed"] == 0, f"{result['failed']} failed requests: {result['errors']}"
    assert result["ok"] > 1000, result
    procs = box.procs()
    (master,) = [p for p in procs if p["pid"] == new]
    assert master["cmdline"].startswith("svcengine master app"), master
    new_workers = [p for p in procs if p["ppid"] == new and not is_mold(p)]
    assert len(new_workers) == WORKERS, new_workers
    assert {str(p["pid"]) for p in new_workers} & set(result["pids"]), "new workers never served"
    assert not old_keys & {(p["pid"], p["starttime"]) for p in procs}, "the old pool lives on"
    assert "upgrade: took over from pid" in journal, journal

    # a clean stop of the new master: exit 0, nothing left in the unit's cgroup
    cursor = box.cursor()
    box.systemctl("stop", APP, timeout=90)
    assert box.exit_of(APP, cursor) == ("success", "exited", "0"), box.journal(APP, cursor=cursor)
    left = box.sh(f"cat {APP_CGROUP}/cgroup.procs 2>/dev/null || true").split()
    assert left == [], f"left in the unit's cgroup: {left}"
    assert "Killing process" not in box.journal(APP, cursor=cursor)
    print(f"test took {time.monotonic() - t0:.1f} s")
