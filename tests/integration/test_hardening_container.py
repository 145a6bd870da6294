"""A master started as a non-root user, as in a container run with `--user` or `runAsNonRoot`.

Real processes: the test (root) starts svcengine as uid 65534 (nobody) with no supplementary
groups, through util-linux's setpriv. It keeps one capability, CAP_DAC_READ_SEARCH, only so that
an interpreter under /root (a pyenv) stays reachable; it has no CAP_SETUID/CAP_SETGID, like a
container's non-root user. chuser naming that same user must not be attempted (initgroups fails
with EPERM, and every worker would crash in a loop); chuser naming anybody else must stop the
start with exit 78 and one line naming the key and the file (tests/container: the same in podman).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import wait_for

NOBODY = 65534
AS_NOBODY = [
    "setpriv",
    f"--reuid={NOBODY}",
    f"--regid={NOBODY}",
    "--clear-groups",
    "--inh-caps=+dac_read_search",
    "--ambient-caps=+dac_read_search",
]


def _other_user() -> str:
    """A user that is neither root nor nobody (Debian has daemon, uid 1)."""
    for entry in pwd.getpwall():
        if entry.pw_uid not in (0, NOBODY):
            return entry.pw_name
    pytest.skip("no user other than root and nobody in /etc/passwd")


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    """A directory nobody can read (pytest's tmp_path is private to root)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: starts the master as uid 65534")
    if not shutil.which("setpriv"):
        pytest.skip("no setpriv (util-linux) to start the master as uid 65534")
    try:
        pwd.getpwuid(NOBODY)
    except KeyError:
        pytest.skip("no user with uid 65534")
    path = Path(tempfile.mkdtemp(prefix="svcengine-nonroot-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def start_as_nobody(where: Path, chuser: str) -> tuple[subprocess.Popen, Path]:
    conf = where / "app.toml"
    conf.write_text(
        f'worker = "svcengine.demo:Demo"\nworkers = 2\nchuser = "{chuser}"\n'
        "start_worker_delay_rand = 0.0\n"
    )
    conf.chmod(0o644)
    out = where / "stderr.txt"
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "XDG_RUNTIME_DIR")}
    with open(out, "wb") as stderr:
        proc = subprocess.Popen(
            [*AS_NOBODY, sys.executable, "-m", "svcengine", "--foreground", "--config", str(conf)],
            env=env,
            cwd=where,
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
            start_new_session=True,
        )
    return proc, out


def test_chuser_naming_the_user_it_runs_as_is_no_switch(nobody_dir: Path) -> None:
    proc, out = start_as_nobody(nobody_dir, pwd.getpwuid(NOBODY).pw_name)
    try:
        wait_for(
            lambda: "ready: 2/2 workers ready" in out.read_text() or proc.poll() is not None,
            20,
            "2/2 workers ready",
        )
        text = out.read_text()
        assert "ready: 2/2 workers ready" in text, text
        assert "Traceback" not in text and "exited with status" not in text, text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, out.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()  # ours
            proc.wait(10)


def test_chuser_naming_another_user_stops_the_start_with_78(nobody_dir: Path) -> None:
    other = _other_user()
    proc, out = start_as_nobody(nobody_dir, other)
    try:
        code = proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()  # ours: the old code crash-loops its workers instead of exiting
        proc.wait(10)
        raise AssertionError(f"still running after 20 s:\n{out.read_text()[-2000:]}") from None
    text = out.read_text()
    assert code == 78, text
    lines = text.splitlines()
    assert len(lines) == 1, text
    assert "key 'chuser'" in lines[0] and str(nobody_dir / "app.toml") in lines[0], text
    assert repr(other) in lines[0], text


def test_a_control_socket_asked_for_but_not_creatable_stops_the_start(service, tmp_path) -> None:
    """control_socket named in the config (a container's probes depend on it) but impossible to
    create (there: a read-only root; here: its directory is a file): exit 78 naming the key,
    not a master that serves where no probe reaches it."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    path = blocker / "control.sock"
    svc = service(config=f'control_socket = "{path}"\n', log_to_file=False)
    assert svc.wait_exit(20) == 78, (tmp_path / "stderr.txt").read_text()
    lines = (tmp_path / "stderr.txt").read_text().splitlines()
    assert len(lines) == 1, lines
    assert "key 'control_socket'" in lines[0] and str(svc.config_path) in lines[0], lines
    assert f"cannot create {path}: " in lines[0], lines
