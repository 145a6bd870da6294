"""The mold (svcengine/child/mold.py): the app imported once, in a child of the master,
workers forked from it and re-parented to the master; a new mold per reload.

The app is a module the test writes into its own directory (`moldapp.py`): it notes
the pid of every process that imports it, and each worker logs the module's VERSION,
so a test can tell which code a worker runs and where it was imported.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest
from harness import alive, wait_for, wait_gone

from svcengine.cli import client

APP = """\
import os, threading
import svcengine

VERSION = "{version}"
{extra}
with open(os.path.join(os.environ["SVC_TEST_DIR"], "imports.txt"), "a") as f:
    f.write(f"{{os.getpid()}}\\n")


class Versioned(svcengine.Worker):
    def run(self):
        self.logger.info("worker %d runs version %s", self.worker_id, VERSION)
        while not self.stopping:
            self.wait(3600)
"""

HOOKS = """\
import logging, os


def after_mold_ready(server):
    logging.getLogger("svcengine.test").info("after_mold_ready in pid %d", os.getpid())
"""

NO_PYC = {"PYTHONDONTWRITEBYTECODE": "1"}  # a rewritten module is read again, not its .pyc


def write_app(tmp: Path, version: str, extra: str = "") -> None:
    (tmp / "moldapp.py").write_text(APP.format(version=version, extra=extra))


def importers(tmp: Path) -> list[int]:
    try:
        return [int(x) for x in (tmp / "imports.txt").read_text().split()]
    except FileNotFoundError:
        return []


def ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def title(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().split(b"\0")[0].decode()


def mold_of(svc, generation: int) -> int:
    """The pid of the master's mold of that generation, once it is there."""

    def find() -> int | None:
        for pid in svc.molds():
            if title(pid).startswith(f"svcengine mold gen {generation}"):
                return pid
        return None

    pid: int = wait_for(find, 10, f"mold gen {generation}")
    return pid


def test_the_app_is_imported_once_in_the_mold_and_workers_are_the_masters(service, tmp_path):
    write_app(tmp_path, "v1")
    (tmp_path / "moldhooks.py").write_text(HOOKS)
    svc = service(worker="moldapp:Versioned", workers=3, config='hooks = "moldhooks"\n')
    svc.wait_ready()
    workers = svc.wait_workers(3)
    mold = mold_of(svc, 1)
    assert importers(tmp_path) == [mold]  # not the master, not one import per worker
    assert ppid(mold) == svc.pid
    assert all(ppid(w) == svc.pid for w in workers)  # re-parented: the master reaps them
    svc.wait_log(rf"after_mold_ready in pid {mold}$", since_mark=False)
    wait_for(lambda: svc.log_text().count("runs version v1") == 3, 10, "3 workers running")
    assert "rehearsal" not in svc.log_text()  # the mold's warm-up (child/warm.py) logs nothing
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0
    assert not wait_gone({mold, *workers}, 5)


@pytest.mark.parametrize("pdeathsig", [True, False], ids=["pdeathsig", "life-pipe-only"])
def test_sigkill_of_the_master_takes_the_mold_and_every_worker(service, tmp_path, pdeathsig):
    write_app(tmp_path, "v1")
    config = f"worker_pdeathsig = {str(pdeathsig).lower()}\n"
    svc = service(worker="moldapp:Versioned", workers=4, config=config)
    svc.wait_ready()
    workers = svc.wait_workers(4)
    mold = mold_of(svc, 1)
    svc.kill(signal.SIGKILL)
    assert svc.wait_exit(5) == -signal.SIGKILL
    assert not wait_gone({mold, *workers}, 5), "the mold or a worker outlived the master"


REPORTS = """
import random
from svcengine.unix import linux as _linux


class Reports(svcengine.Worker):
    def run(self):
        self.logger.info(
            "worker %d ppid=%d pdeathsig=%d random=%d", self.worker_id, os.getppid(),
            _linux.get_pdeathsig(), random.getrandbits(64),
        )
        while not self.stopping:
            self.wait(3600)
"""


def test_a_worker_runs_as_the_masters_armed_child_with_its_own_random_state(service, tmp_path):
    """The middle process skips CPython's at-fork work (child/mold.py), and a worker boots
    before it is re-parented: still, run() starts only once the master is its parent and
    PDEATHSIG is armed, and the worker's own fork reseeded `random` (no two alike)."""
    write_app(tmp_path, "v1", extra=REPORTS)
    svc = service(worker="moldapp:Reports", workers=3)
    svc.wait_ready()
    workers = svc.wait_workers(3)
    os.kill(min(workers), signal.SIGKILL)  # a respawn is forked the same way
    line = r"worker \d+ ppid=(\d+) pdeathsig=(\d+) random=(\d+)"

    def four() -> list[tuple[str, str, str]] | None:
        found = re.findall(line, svc.log_text())
        return found if len(found) == 4 else None

    found = wait_for(four, 10, "4 reports")
    assert {(int(p), int(s)) for p, s, _ in found} == {(svc.pid, int(signal.SIGKILL))}
    assert len({r for _, _, r in found}) == 4, found
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


def test_sigkill_of_the_mold_makes_a_new_one_and_the_workers_serve_on(service, tmp_path):
    write_app(tmp_path, "v1")
    svc = service(worker="moldapp:Versioned", workers=2)
    svc.wait_ready()
    workers = svc.wait_workers(2)
    first = mold_of(svc, 1)
    svc.mark()
    os.kill(first, signal.SIGKILL)
    svc.wait_log(rf"mold gen 1 \(pid {first}\) killed by SIGKILL; making a new one")
    second = mold_of(svc, 2)
    svc.wait_log(rf"mold gen 2 \(pid {second}\) ready")
    assert all(alive(w) for w in workers) and svc.workers() == workers  # served on
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    replacement = wait_for(lambda: (svc.workers() - workers) or None, 10, "a replacement")
    (new,) = replacement
    assert ppid(new) == svc.pid
    wait_for(lambda: svc.log_text().count("runs version v1") == 3, 10, "the replacement runs")
    assert importers(tmp_path) == [first, second]
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


def test_hup_reloads_the_code_through_a_new_mold(service, tmp_path):
    write_app(tmp_path, "v1")
    svc = service(worker="moldapp:Versioned", workers=2, start=False).start(NO_PYC)
    svc.wait_ready()
    old_workers = svc.wait_workers(2)
    first = mold_of(svc, 1)
    write_app(tmp_path, "v22")
    svc.mark()
    svc.kill(signal.SIGHUP)
    svc.wait_log(r"reload complete")
    second = mold_of(svc, 2)
    assert not wait_gone({first, *old_workers}, 5)  # the old generation and its mold went
    wait_for(lambda: svc.log_text().count("runs version v22") == 2, 10, "2 new workers running")
    assert importers(tmp_path) == [first, second]
    assert svc.molds() == {second}
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


def test_hup_into_code_that_cannot_import_keeps_the_old_generation(service, tmp_path):
    write_app(tmp_path, "v1")
    svc = service(worker="moldapp:Versioned", workers=2, start=False).start(NO_PYC)
    svc.wait_ready()
    old_workers = svc.wait_workers(2)
    first = mold_of(svc, 1)
    write_app(tmp_path, "v2", extra='raise ImportError("a broken release")')
    svc.mark()
    svc.kill(signal.SIGHUP)
    svc.wait_log(r"mold could not import moldapp:Versioned: ImportError: a broken release")
    svc.wait_log(r"reload abandoned: worker \d failed to boot: ImportError: a broken release")
    wait_for(lambda: svc.molds() == {first}, 10, "only the old mold left")
    # the failed generation's workers go; the old ones never stopped
    wait_for(lambda: svc.workers() == old_workers, 10, "only the old workers")
    # a respawn after the abandoned reload forks the code that worked, not the file on disk
    svc.mark()
    os.kill(min(old_workers), signal.SIGKILL)
    svc.wait_log(r"worker \d runs version v1")
    assert "failed to boot" not in svc.log_text()[svc._log_offset :]
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


def test_mold_false_forks_every_worker_from_the_master(service, tmp_path):
    write_app(tmp_path, "v1")
    svc = service(worker="moldapp:Versioned", workers=2, config="mold = false\n")
    svc.wait_ready()
    workers = svc.wait_workers(2)
    assert svc.molds() == set()
    assert sorted(importers(tmp_path)) == sorted(workers)  # each worker imported it
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


def test_a_mold_that_starts_threads_at_import_is_warned_about(service, tmp_path):
    extra = "threading.Thread(target=threading.Event().wait, daemon=True).start()"
    write_app(tmp_path, "v1", extra=extra)
    svc = service(worker="moldapp:Versioned", workers=1)
    svc.wait_ready()
    svc.wait_log(
        r"the mold forks workers while the app's import left it runs other threads .*"
        r'use worker_type = "spawn"',
        since_mark=False,
    )
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


def test_a_new_mold_whose_import_hangs_is_abandoned_after_reload_timeout(service, tmp_path):
    write_app(tmp_path, "v1")
    config = "reload_timeout = 2\n"
    svc = service(worker="moldapp:Versioned", workers=2, config=config, start=False).start(NO_PYC)
    svc.wait_ready()
    old_workers = svc.wait_workers(2)
    first = mold_of(svc, 1)
    write_app(tmp_path, "v2", extra="threading.Event().wait()  # an import that never ends")
    svc.mark()
    svc.kill(signal.SIGHUP)
    second = mold_of(svc, 2)
    svc.wait_log(r"reload abandoned: the new workers were not ready within 2s \(reload_timeout\)")
    assert not wait_gone({second}, 5)  # the hanging mold was stopped (and, below, reaped)
    wait_for(lambda: svc.molds() == {first} and svc.workers() == old_workers, 5, "the old pool")
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


def test_a_mold_that_dies_at_import_is_retried_with_a_growing_delay(service, tmp_path):
    """A crash loop (the app's import exits the mold) backs off: 1 s, 2 s, ... (capped); the
    master answers its control socket meanwhile, `ctl status` says why, and TERM stops it."""
    write_app(tmp_path, "v1", extra="os._exit(3)  # only the mold imports it: no worker runs")
    svc = service(worker="moldapp:Versioned", workers=1)
    dies = r"mold gen {} \(pid \d+\) exited with status 3; making a new one in {}s$"
    svc.wait_log(dies.format(1, 1), since_mark=False)
    svc.wait_log(dies.format(2, 2), since_mark=False)
    sock = str(svc.tmp / "run" / "control.sock")
    mold = client.request(sock, {"cmd": "status"})["mold"]
    assert mold["last_exit"] == "exited with status 3"
    assert mold["retries"] >= 2 and (mold["pid"] is None or not mold["ready"])
    svc.wait_log(dies.format(3, 4), since_mark=False)  # about 3 s after the first
    mold = client.request(sock, {"cmd": "status"})["mold"]
    assert mold["pid"] is None and mold["retries"] == 3
    assert 0 < mold["retry_in"] <= 4
    assert "gen 4" not in svc.log_text()
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0
