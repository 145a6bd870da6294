"""The soak's fixtures: a process-leak check (pytest is the child subreaper, so whatever the
service leaves re-parents to us and is found) and the identity the service runs as."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

import pytest
from soaklib import PYTHON, alive, children, processes_of_uid

from svcengine.unix import linux as _linux

SOAK_UIDS = range(64000, 65000)  # as root: the service's real uid, one with no processes
DROP_CAPS = "-sys_resource,-sys_admin,-dac_override,-dac_read_search"


@pytest.fixture(autouse=True)
def no_process_left_behind():
    before = set(children(os.getpid()))
    _linux.set_child_subreaper()
    try:
        yield
    finally:
        leftovers = {p for p in set(children(os.getpid())) - before if alive(p)}
        for pid in leftovers:
            os.kill(pid, signal.SIGKILL)  # ours: started by this test, adopted by us
        for pid in set(children(os.getpid())) - before:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        _linux.set_child_subreaper(False)
        assert not leftovers, f"processes left behind: {sorted(leftovers)}"


@pytest.fixture
def service_identity() -> tuple[list[str], int, str | None]:
    """(command prefix that runs the service, its real uid, why the fork-failure and
    unwritable-log-directory faults cannot run, or None).

    Root ignores RLIMIT_NPROC (for real uid 0, or with CAP_SYS_RESOURCE or CAP_SYS_ADMIN) and
    file modes (CAP_DAC_OVERRIDE). As root the service therefore runs with euid 0 but a real uid
    of its own (RLIMIT_NPROC counts per real uid) and without those four capabilities in its
    bounding set. (Not as a plain unprivileged user: the interpreter may live under /root, e.g.
    with pyenv.)"""
    if os.geteuid() != 0:
        return [], os.getuid(), None
    if shutil.which("setpriv") is None:
        return [], 0, "no setpriv(1) to drop the capabilities root ignores them with"
    start = os.getpid() % len(SOAK_UIDS)  # concurrent soaks pick different ones
    uid = next(
        (u for u in [*SOAK_UIDS[start:], *SOAK_UIDS[:start]] if not processes_of_uid(u)), None
    )
    if uid is None:
        return [], 0, f"every uid in {SOAK_UIDS} has processes on this host"
    prefix = ["setpriv", "--ruid", str(uid), "--bounding-set", DROP_CAPS, "--"]
    probe = subprocess.run([*prefix, PYTHON, "-c", "import svcengine"], capture_output=True)
    if probe.returncode != 0:
        return [], 0, f"setpriv cannot run the service: {probe.stderr.decode()[-300:]}"
    return prefix, uid, None
