"""Seeded chaos soak: random faults against an HTTP worker pool under client load.

    .venv/bin/pytest tests/soak                                  # the short run (90 s), in CI
    SVC_SOAK_SECONDS=1800 .venv/bin/pytest tests/soak -m soak -s # a long one
    SVC_SOAK_SEED=1234 ...                                       # replay a schedule
    SVC_SOAK_PYTHON=/other/venv/bin/python ...                   # soak another installation

The schedule is drawn from random.Random(seed) (printed; from SVC_SOAK_SEED or the clock): the
first steps are every fault kind once, in a seeded order, then weighted draws until the time is
up. After every step the pool must converge back to its target (ctl status and /proc agree, no
zombie children, healthy), the master must be the one expected and keep serving. Every failed
client request must be explained by a fault: it was in flight while a worker was killed,
segfaulted or stopped (a worker serves one connection at a time, so at most one per victim);
HUP, USR1, USR2, TTIN/TTOU, bursts, an unwritable log directory, fork failure, an exception or
a segfault between requests explain none. At the end the master's fds and RSS must not have
grown, and after a SIGKILL of the master no worker may survive it.
"""

from __future__ import annotations

import os
import random
import re
import signal
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from soaklib import (
    Failure,
    Load,
    Service,
    alive,
    children,
    early_closers,
    fd_count,
    open_fds,
    processes_of_uid,
    rss_kib,
    wait_for,
    wait_gone,
)

pytestmark = pytest.mark.soak

SECONDS = float(os.environ.get("SVC_SOAK_SECONDS", "90"))
MIN_WORKERS, START_WORKERS, MAX_WORKERS = 1, 3, 4
HEARTBEAT_TIMEOUT = 3.0
CONVERGE = 25.0  # seconds for the pool to be whole again after any fault
CONFIG = (
    f"worker_heartbeat_timeout = {HEARTBEAT_TIMEOUT}\n"
    "worker_heartbeat_interval = 0.5\n"
    "worker_graceful_kill_timeout = 10.0\n"
    "worker_min_uptime = 0.5\n"
    "worker_restart_backoff_max = 2.0\n"
    "upgrade_timeout = 30.0\n"
    'hooks = "soak_hooks"\n'
)
# fault kind -> weight of the draws after the first round (every kind once)
WEIGHTS = {
    "kill9": 3,
    "segv_signal": 1,
    "segv_command": 1,
    "raise": 2,
    "sigstop": 1,
    "hup": 2,
    "ttin": 2,
    "ttou": 2,
    "usr1_rotate": 2,
    "usr2": 1,
    "logdir_unwritable": 1,
    "fork_failure": 1,
    "burst": 1,
    "early_close": 2,
    "hup_bad_config": 1,
    "usr2_no_pidfile": 1,
    "stop_during_upgrade": 1,
    "kill_mold": 1,
}
EARLY_CLOSERS = 200
# files a HUP must refuse while the running config serves on (the item, the file's bytes)
BAD_CONFIGS = [
    ("a non-UTF-8 byte", b'workers = 2\nname = "soak\xff"\n'),
    ("a 20,000-deep array", b"workers = " + b"[" * 20000 + b"]" * 20000 + b"\n"),
    ("a NUL in chuser", b'workers = 2\nchuser = "no\\u0000body"\n'),
    ("an unknown key", b"workers = 2\nwrokers = 3\n"),
    ("a float that is not finite", b"workers = 2\nworker_graceful_kill_timeout = nan\n"),
    ("workers out of bounds", b"workers = 9223372036854775807\n"),
    ("a port out of range", b'listen = ["127.0.0.1:99999"]\n'),
    ("not TOML at all", b"this is = = not toml\n"),
]
FD_SLACK = 3  # descriptors a master may hold beyond its first count (a control connection...)
RSS_SLACK_KIB = 6 * 1024


@dataclass
class Fault:
    step: int
    kind: str
    t0: float
    t1: float
    victims: int = 0  # failed requests it may explain: one per worker it killed mid-request
    explained: int = 0


class Soak:
    def __init__(self, svc: Service, load: Load, rng: random.Random, skip_root: str | None):
        self.svc = svc
        self.load = load
        self.rng = rng
        self.skip_root = skip_root
        self.target = svc.workers
        self.master = 0  # set once the service has started
        self.faults: list[Fault] = []
        self.kinds: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.samples: list[tuple[int, int, int]] = []  # (master pid, fds, rss KiB)
        self.step = 0
        self.kind = "start"
        self.t_start = time.monotonic()
        self.nproc = ""  # the master's RLIMIT_NPROC, as /proc/PID/limits shows it
        self.timeline: list[tuple[float, int, str]] = []  # (start, step, kind)
        self.last_status: dict = {}  # what ctl status said last, and the master's children
        self.last_kids: dict[int, str] = {}

    # --- observing --------------------------------------------------------------------------
    def _converged(self) -> dict | None:
        try:
            st = self.svc.status()
        except (OSError, ValueError):
            return None
        self.last_status = st
        if st.get("pid") != self.master or st["phase"] != "running" or not st["healthy"]:
            return None
        if st["target"] != self.target or (st.get("upgrade") or {}).get("state") == "in progress":
            return None
        pids = set()
        for w in st["workers"]:
            if w["state"] == "retiring":
                return None
            if w["id"] < self.target:
                if w["state"] != "ready" or not w["pid"]:
                    return None
                pids.add(w["pid"])
            elif w["pid"] is not None:
                return None
        mold = (st.get("mold") or {}).get("pid")
        if mold is None or not (st["mold"] or {}).get("ready"):
            return None  # a mold is always there once the pool is whole (a new one after a kill)
        kids = children(self.master)
        self.last_kids = kids
        if kids.pop(mold, None) is None:
            return None
        if set(kids) != pids or "Z" in kids.values() or len(pids) != self.target:
            return None
        return st

    def converge(self) -> dict:
        """The pool is whole again: ctl status and /proc agree, nothing left to reap."""
        self.last_status, self.last_kids = {}, {}
        assert alive(self.master), f"the master {self.master} is gone"
        try:
            st = wait_for(self._converged, CONVERGE, "the pool to converge", step=0.05)
        except AssertionError:
            raise AssertionError(
                f"pool of {self.target} not back within {CONVERGE} s; master {self.master} "
                f"(alive: {alive(self.master)}), its children {self.last_kids}, "
                f"last status {self.last_status}"
            ) from None
        # one status pipe per worker is the pool's, not a leak: count what the master holds
        # beyond its workers, so that a pool of 4 is comparable with a pool of 1
        fds = fd_count(self.master) - self.target
        self.samples.append((self.master, fds, rss_kib(self.master)))
        if self.load.running:
            self.load.wait_progress(20, 15)
        return st

    def workers(self) -> dict[int, int]:
        """worker id -> pid, of a converged pool."""
        return {w["id"]: w["pid"] for w in self.last_status["workers"] if w["pid"]}

    def victim(self) -> tuple[int, int]:
        wid = self.rng.choice(sorted(self.workers()))
        return wid, self.workers()[wid]

    def fault(self, victims: int, t0: float) -> None:
        self.faults.append(Fault(self.step, self.kind, t0, time.monotonic(), victims))

    def signal_master(self, sig: int) -> None:
        os.kill(self.master, sig)

    def say(self, text: str) -> None:
        t = time.monotonic() - self.t_start
        print(f"[{t:7.1f}s] step {self.step} {self.kind}: {text}", flush=True)

    # --- faults -------------------------------------------------------------------------------
    def _kill_worker(self, sig: signal.Signals, victims: int) -> None:
        wid, pid = self.victim()
        self.svc.log.mark()
        t0 = time.monotonic()
        os.kill(pid, sig)
        self.fault(victims, t0)
        assert not wait_gone([pid], 10), f"worker {wid} (pid {pid}) survived {sig.name}"
        self.svc.log.wait(rf"worker {wid} \(pid {pid}\) killed by {sig.name}", 10)
        self.say(f"worker {wid} (pid {pid})")

    def f_kill9(self) -> None:
        self._kill_worker(signal.SIGKILL, 1)

    def f_kill_mold(self) -> None:
        """SIGKILL to the mold: the master makes a new one; the workers serve on meanwhile
        and a worker killed right after is replaced from the new mold."""
        mold = self.svc.status()["mold"]["pid"]
        self.svc.log.mark()
        t0 = time.monotonic()
        os.kill(mold, signal.SIGKILL)
        self.fault(0, t0)  # no worker is touched: no request may fail
        self.svc.log.wait(rf"mold gen \d+ \(pid {mold}\) killed by SIGKILL; making a new one", 10)
        self.svc.log.wait(r"mold gen \d+ \(pid \d+\) ready", 10)
        self.say(f"mold {mold} killed; a new one is ready")
        self._kill_worker(signal.SIGKILL, 1)

    def f_segv_signal(self) -> None:
        self._kill_worker(signal.SIGSEGV, 1)

    def _command(self, command: str, outcome: str) -> None:
        wid, pid = self.victim()
        sock = self.svc.cmd_dir / f"{pid}.sock"
        wait_for(sock.exists, 10, f"worker {wid}'s command socket")
        self.svc.log.mark()
        t0 = time.monotonic()
        self.svc.send(pid, command)
        self.fault(0, t0)  # run between two requests: no request may fail
        assert not wait_gone([pid], 10), f"worker {wid} (pid {pid}) survived {command!r}"
        self.svc.log.wait(rf"worker {wid} \(pid {pid}\) {outcome}", 10)
        self.say(f"worker {wid} (pid {pid}) {outcome}")

    def f_segv_command(self) -> None:
        self._command("segv", "killed by SIGSEGV")

    def f_raise(self) -> None:
        self._command("raise", "exited with status 1")

    def f_sigstop(self) -> None:
        wid, pid = self.victim()
        self.svc.log.mark()
        t0 = time.monotonic()
        os.kill(pid, signal.SIGSTOP)
        self.fault(1, t0)
        assert not wait_gone([pid], HEARTBEAT_TIMEOUT + 10), f"stopped worker {pid} not killed"
        self.svc.log.wait(rf"worker {wid} \(pid {pid}\) hung: no heartbeat", 5)
        self.say(f"worker {wid} (pid {pid}) stopped; killed {time.monotonic() - t0:.1f} s later")

    def f_hup(self) -> None:
        before = set(self.workers().values())
        self.target = self.rng.randint(MIN_WORKERS, MAX_WORKERS)
        self.svc.write_config(self.target)
        self.svc.log.mark()
        t0 = time.monotonic()
        self.signal_master(signal.SIGHUP)
        self.fault(0, t0)
        self.svc.log.wait(r"reload complete", CONVERGE)
        self.converge()
        assert not before & set(self.workers().values()), "HUP left old workers serving"
        self.say(f"reloaded with workers = {self.target}")

    def _scale(self, sig: signal.Signals, delta: int) -> None:
        self.target += delta
        t0 = time.monotonic()
        self.signal_master(sig)
        self.fault(0, t0)
        self.say(f"pool -> {self.target}")

    def f_ttin(self) -> None:
        if self.target >= MAX_WORKERS:
            return self.f_ttou()
        self._scale(signal.SIGTTIN, +1)

    def f_ttou(self) -> None:
        if self.target <= MIN_WORKERS:
            return self.f_ttin()
        self._scale(signal.SIGTTOU, -1)

    def _reopened_by_all(self, old_inode: int) -> None:
        """Every process of the pool let go of old_inode and said so in the new file."""
        tree = [self.master, *self.workers().values()]
        self.svc.log.wait(r"reopened log file; telling workers", 10)
        try:
            wait_for(lambda: not holders(tree, old_inode), 10, "the pool off the old log file")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: still open: {holders(tree, old_inode)}") from None
        for pid in self.workers().values():
            self.svc.log.wait(rf"\[{pid}\] worker\[\d+\]: reopened log file", 10)

    def f_usr1_rotate(self) -> None:
        path = self.svc.log.path
        old = os.stat(path).st_ino
        path.rename(path.with_suffix(".log.1"))  # what logrotate does; replaces the last one
        self.svc.log.mark()
        t0 = time.monotonic()
        self.signal_master(signal.SIGUSR1)
        self.fault(0, t0)
        self._reopened_by_all(old)
        self.say("log renamed and reopened by the master and every worker")

    def f_logdir_unwritable(self) -> None:
        """logrotate moved the log away and the directory became unwritable: USR1, to the
        master (as `kill -USR1 $MAINPID`) and to one worker (as `systemctl kill -s USR1`, which
        signals the whole cgroup), must fail to reopen and change nothing else; the old file
        stays in use. Once the directory is writable again, USR1 works for every process."""
        if self.skip_root:
            self.skipped[self.kind] += 1
            return self.say(f"skipped: {self.skip_root}")
        d = self.svc.log_dir
        workers = set(self.workers().values())
        path = self.svc.log.path
        old = os.stat(path).st_ino
        path.rename(path.with_suffix(".log.1"))
        d.chmod(0)
        t0 = time.monotonic()
        try:
            self.signal_master(signal.SIGUSR1)
            os.kill(self.victim()[1], signal.SIGUSR1)
            hold = self.rng.uniform(0.5, 2.0)
            time.sleep(hold)  # pacing: the load runs on while the directory is unwritable
            assert alive(self.master), "the master died when its log could not be reopened"
            st = self.svc.status()
            assert st["pid"] == self.master, st
            assert {w["pid"] for w in st["workers"] if w["pid"]} == workers, st
            self.load.wait_progress(20, 15)
            assert not os.path.exists(path), "a log file appeared in a mode-0 directory"
        finally:
            d.chmod(0o755)
        self.fault(0, t0)
        self.svc.log.mark()
        self.signal_master(signal.SIGUSR1)
        self._reopened_by_all(old)
        self.say(f"log dir mode 0 for {hold:.1f} s under USR1; reopened once restored")

    def f_usr2(self) -> None:
        old_tree = {self.master, *children(self.master)}
        t0 = time.monotonic()
        r = self.svc.ctl("upgrade")
        self.fault(0, t0)
        assert r.returncode == 0, f"ctl upgrade: exit {r.returncode}: {r.stdout}{r.stderr}"
        m = re.search(rf"master {self.master} replaced by (\d+)", r.stdout)
        assert m, r.stdout
        assert not wait_gone(old_tree, 30), "the old master or its workers live on"
        self.svc.reap(self.master)
        new = int(m.group(1))
        assert self.svc.master() == new
        assert not self.svc.pid_path.with_suffix(".pid.oldbin").exists()
        self.say(f"master {self.master} -> {new} in {time.monotonic() - t0:.2f} s")
        self.master = new
        self.target = self.svc.workers  # the new master reads the config file

    def f_fork_failure(self) -> None:
        """RLIMIT_NPROC = 1 on the master (soak_hooks.py), then its mold is killed: forking a
        new one fails with EAGAIN, the master logs it and retries, a worker killed meanwhile
        waits for the new mold; once the limit is gone the pool is whole."""
        if self.skip_root:
            self.skipped[self.kind] += 1
            return self.say(f"skipped: {self.skip_root}")
        flag = self.svc.cmd_dir / "nproc-limit"
        mold = self.svc.status()["mold"]["pid"]
        self.svc.log.mark()
        t0 = time.monotonic()
        flag.touch()
        try:
            wait_for(lambda: nproc_limit(self.master).split()[2] == "1", 5, "RLIMIT_NPROC = 1")
            os.kill(mold, signal.SIGKILL)
            self.svc.log.wait(r"cannot fork the mold: .*Resource temporarily unavailable", 10)
            wid, pid = self.victim()
            os.kill(pid, signal.SIGKILL)  # its slot waits for a mold
            self.svc.log.wait(rf"worker {wid} \(pid {pid}\) killed by SIGKILL", 10)
            time.sleep(self.rng.uniform(0.2, 1.0))  # pacing: a few failed retries
        finally:
            flag.unlink()
        self.fault(1, t0)
        self.converge()
        assert nproc_limit(self.master) == self.nproc, "the master kept RLIMIT_NPROC = 1"
        self.say(f"RLIMIT_NPROC=1, mold {mold} killed: its fork failed, retried; pool whole again")

    def f_burst(self) -> None:
        n = 1000
        pairs = self.rng.randint(0, 3)
        harmless = [signal.SIGCONT, signal.SIGUSR1, signal.SIGCHLD, signal.SIGPIPE]
        sigs = [signal.SIGTTIN, signal.SIGTTOU] * pairs
        sigs += [self.rng.choice(harmless) for _ in range(n - len(sigs))]
        self.rng.shuffle(sigs)
        t0 = time.monotonic()
        for sig in sigs:
            self.signal_master(sig)
        # Equal signals pending at once merge (POSIX), so TTIN/TTOU pairs need not cancel out.
        # Every signal above was delivered (and queued on the master's wakeup pipe) before it
        # answers a request; after two answers it has read that pipe: then set the size back.
        for _ in range(2):
            self.svc.status()
        reply = self.svc.request({"cmd": "scale", "n": str(self.target)})
        assert reply.get("ok"), reply
        self.fault(0, t0)
        assert alive(self.master)
        self.say(f"{n} signals ({pairs} TTIN/TTOU pairs, CONT, USR1, CHLD, PIPE)")

    def f_early_close(self) -> None:
        """Clients that send a request and hang up before the answer: a worker writing into the
        dead connection gets EPIPE/ECONNRESET like any Python program (not a fatal SIGPIPE)."""
        before = self.workers()
        self.svc.log.mark()
        t0 = time.monotonic()
        early_closers(self.svc.port, EARLY_CLOSERS)
        self.fault(0, t0)
        self.load.wait_progress(20, 15)  # every early request was taken, and the pool serves on
        st = self.converge()
        after = {w["id"]: w["pid"] for w in st["workers"] if w["pid"]}
        died = self.svc.log.since_mark()
        assert after == before, f"workers replaced by early-closing clients: {before} -> {after}"
        assert "killed by" not in died and "exited with" not in died, died[-2000:]
        self.say(f"{EARLY_CLOSERS} clients hung up early; no worker died")

    def f_hup_bad_config(self) -> None:
        """A HUP with a config the master must refuse: it says why and serves on unchanged."""
        what, text = self.rng.choice(BAD_CONFIGS)
        before = self.workers()
        self.svc.write_broken_config(text)
        self.svc.log.mark()
        t0 = time.monotonic()
        try:
            self.signal_master(signal.SIGHUP)
            self.svc.log.wait(r"reload failed", 10)
            st = self.svc.status()
            assert st["pid"] == self.master and alive(self.master), st
            assert {w["id"]: w["pid"] for w in st["workers"] if w["pid"]} == before, st
            self.load.wait_progress(20, 15)
        finally:
            self.svc.write_config(self.target)
        self.fault(0, t0)
        self.say(f"HUP with {what} refused; the pool served on")

    def f_usr2_no_pidfile(self) -> None:
        """USR2 after the pidfile was removed: the upgrade goes on (and the new master writes
        a pidfile) or fails cleanly; either way a master serves."""
        old_tree = {self.master, *children(self.master)}
        self.svc.pid_path.unlink()
        self.svc.log.mark()
        t0 = time.monotonic()
        self.signal_master(signal.SIGUSR2)
        m = self.svc.log.wait(r"upgrade: handing over to|upgrade failed", 60)
        self.fault(0, t0)
        if "failed" in m.group(0):
            assert alive(self.master), "the master died of a failed upgrade"
            self.say(f"upgrade without a pidfile failed cleanly: {m.group(0)}")
            return
        assert not wait_gone(old_tree, 30), "the old master or its workers live on"
        self.svc.reap(self.master)
        new = self.svc.status()["pid"]
        assert new != self.master and alive(new)
        wait_for(self.svc.pid_path.exists, 10, "the new master's pidfile")
        assert self.svc.master() == new
        self.say(f"master {self.master} -> {new} without a pidfile to start from")
        self.master = new
        self.target = self.svc.workers

    def f_stop_during_upgrade(self) -> None:
        """TERM to the old master while its successor boots stops the whole service: both
        masters and every worker exit. Then the service is started again."""
        old_tree = {self.master, *children(self.master)}
        t0 = time.monotonic()
        upgrade = self.svc.ctl_async("--timeout", "30", "upgrade")
        try:
            new = wait_for(
                lambda: (self.svc.status().get("upgrade") or {}).get("pid") or None,
                10,
                "the successor master's pid",
            )
            self.signal_master(signal.SIGTERM)  # as `systemctl stop` or `ctl stop` would
            tree = old_tree | {new, *children(new)}
            left = wait_gone(tree, 30)
            assert not left, f"a stop during an upgrade left {sorted(left)} running"
        finally:
            upgrade.wait(30)
        self.svc.reap(self.master)
        self.svc.reap(new)
        self.master = self.svc.start()
        self.target = self.svc.workers
        self.converge()
        # the service was down until it served again: the stop explains every request that
        # failed meanwhile (refused while nothing listened)
        self.fault(10**9, t0)
        self.say(f"TERM during an upgrade stopped both masters; restarted as {self.master}")

    # --- the run ------------------------------------------------------------------------------
    def schedule(self):
        first = sorted(WEIGHTS)
        self.rng.shuffle(first)
        yield from first
        kinds, weights = zip(*sorted(WEIGHTS.items()), strict=True)
        while True:
            yield self.rng.choices(kinds, weights)[0]

    def run(self, seconds: float) -> None:
        self.converge()
        self.load.start()
        self.t_start = time.monotonic()
        for kind in self.schedule():
            if time.monotonic() - self.t_start >= seconds:
                break
            self.step += 1
            self.kind = kind
            self.timeline.append((time.monotonic(), self.step, kind))
            master = self.master
            getattr(self, f"f_{kind}")()
            self.kinds[kind] += 1
            upgrades = ("usr2", "usr2_no_pidfile", "stop_during_upgrade")
            assert kind in upgrades or self.master == master, "the master changed"
            self.converge()
            time.sleep(self.rng.uniform(0.5, 1.5))  # pacing: the load runs on the whole pool

    def step_at(self, t: float) -> str:
        """The step that was running (or had just run) at time t."""
        for start, step, kind in reversed(self.timeline):
            if start <= t:
                return f"step {step} ({kind}, +{t - start:.2f} s)"
        return "before the first step"

    def explain(self) -> list[tuple[Failure, Fault | None]]:
        """Match every failed request to a fault it was in flight across (or None)."""
        out: list[tuple[Failure, Fault | None]] = []
        for f in self.load.failures:
            for fault in self.faults:
                if fault.explained < fault.victims and f.start <= fault.t1 and f.end >= fault.t0:
                    fault.explained += 1
                    out.append((f, fault))
                    break
            else:
                out.append((f, None))
        return out


def test_chaos_soak(service_identity):
    prefix, uid, skip_root = service_identity
    seed = int(os.environ.get("SVC_SOAK_SEED") or time.time_ns() % 2**32)
    print(f"\nsoak: seed {seed}, {SECONDS:g} s (SVC_SOAK_SEED={seed} SVC_SOAK_SECONDS={SECONDS:g})")
    if skip_root:
        print(f"soak: no fork-failure or unwritable-log-dir faults: {skip_root}")
    root = Path(tempfile.mkdtemp(prefix="svcengine-soak-"))
    root.chmod(0o755)
    svc = Service(root, START_WORKERS, prefix, CONFIG)
    load = Load(svc.port, clients=6)
    soak = Soak(svc, load, random.Random(seed), skip_root)
    ok = False
    try:
        soak.master = svc.start()
        soak.nproc = nproc_limit(soak.master)
        try:
            soak.run(SECONDS)
            soak.kind = "final checks"
            soak.converge()
        except AssertionError as exc:
            raise AssertionError(
                f"soak failed at step {soak.step} ({soak.kind}) after "
                f"{time.monotonic() - soak.t_start:.1f} s; replay with SVC_SOAK_SEED={seed} "
                f"SVC_SOAK_SECONDS={SECONDS:g}:\n{exc}\n--- log tail ---\n{svc.log.tail()}"
            ) from None
        finally:
            load.stop()
        explained = soak.explain()
        summary(soak, seed, explained)
        unexplained = [f for f, fault in explained if fault is None]
        assert not unexplained, (
            f"seed {seed}: {len(unexplained)} failed requests no fault explains; the first: "
            + "; ".join(f"{f.error} in {soak.step_at(f.start)}" for f in unexplained[:10])
        )
        check_growth(soak.samples)

        # the master dies without a word: no worker may outlive it
        workers = set(children(soak.master))
        os.kill(soak.master, signal.SIGKILL)
        left = wait_gone(workers | {soak.master}, 5)
        assert not left, f"seed {seed}: outlived the master's SIGKILL: {sorted(left)}"
        if uid != os.getuid():
            assert not processes_of_uid(uid), "a process of the service's uid is still running"
        ok = True
    finally:
        if alive(soak.master) and not ok:
            os.kill(soak.master, signal.SIGKILL)  # ours; its workers follow (PDEATHSIG)
        svc.cleanup(remove=ok)
        if not ok:
            print(f"soak: kept {root} for inspection")


def nproc_limit(pid: int) -> str:
    with open(f"/proc/{pid}/limits") as f:
        return next(line for line in f if line.startswith("Max processes"))


def holders(pids: list[int], inode: int) -> dict[int, list[str]]:
    """pid -> its fds open on inode."""
    out: dict[int, list[str]] = {}
    for pid in pids:
        for fd, ino in open_fds(pid).items():
            if ino == inode:
                out.setdefault(pid, []).append(fd)
    return out


def summary(soak: Soak, seed: int, explained: list[tuple[Failure, Fault | None]]) -> None:
    victims = [f for f in soak.faults if f.victims]
    print(
        f"soak: seed {seed}: {soak.step} steps in {time.monotonic() - soak.t_start:.0f} s: "
        f"{dict(sorted(soak.kinds.items()))}"
        + (f"; skipped {dict(soak.skipped)}" if soak.skipped else "")
    )
    print(
        f"soak: {soak.load.ok} requests ok, {len(soak.load.failures)} failed; "
        f"{len(victims)} faults killed a worker that may have held a request"
    )
    shown: Counter[int] = Counter()  # a stop explains many refusals: a few lines per fault
    for f, fault in explained:
        key = fault.step if fault else -1
        shown[key] += 1
        if fault is None or shown[key] <= 3:
            why = f"in flight at step {fault.step} ({fault.kind})" if fault else "UNEXPLAINED"
            print(f"soak:   failed {why}: {f.error} after {f.end - f.start:.3f} s")
    for step, n in sorted(shown.items()):
        if step >= 0 and n > 3:
            print(f"soak:   ... {n} failed requests in all at step {step}")
    fds = [s[1] for s in soak.samples]
    rss = [s[2] for s in soak.samples]
    print(
        f"soak: {len({s[0] for s in soak.samples})} masters; fds {min(fds)}..{max(fds)}; "
        f"RSS {min(rss) / 1024:.1f}..{max(rss) / 1024:.1f} MiB"
    )


def check_growth(samples: list[tuple[int, int, int]]) -> None:
    """fds and RSS stay within a small bound: over each master's life, and from one master
    made by an upgrade to the next (the first master, made by the test, may differ)."""
    by_master: dict[int, list[tuple[int, int]]] = {}
    for pid, fds, rss in samples:
        by_master.setdefault(pid, []).append((fds, rss))
    for pid, series in by_master.items():
        fds = [s[0] for s in series]
        rss = [s[1] for s in series]
        assert max(fds) <= fds[0] + FD_SLACK, f"master {pid}: fds grew: {fds}"
        assert max(rss) <= rss[0] + RSS_SLACK_KIB, f"master {pid}: RSS grew (KiB): {rss}"
    upgraded = list(by_master.values())[1:]
    if upgraded:
        fds = [series[0][0] for series in upgraded]
        rss = [series[0][1] for series in upgraded]
        assert max(fds) <= fds[0] + FD_SLACK, f"fds grew from master to master: {fds}"
        assert max(rss) <= rss[0] + RSS_SLACK_KIB, f"RSS grew from master to master: {rss}"
