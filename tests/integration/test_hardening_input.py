"""Issue 12, configuration and command-line input: bad input gets one line, never a traceback.

Each test runs the real `svcengine` (or `svcengine ctl`) as a subprocess. A start with bad
input must end at once with exit 78 (config) and one line on stderr naming the file and the
key; a HUP with bad input must leave the running master serving.
"""

from __future__ import annotations

import os
import pwd
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
from harness import REPO

from svcengine.cli import client

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
NOBODY = pwd.getpwnam("nobody")


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 10.0):
    """Run svcengine; a process still running at the deadline failed the test (it got TERM)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "svcengine", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGTERM)  # ours; TERM so it removes what it created
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: only what it started
            out, err = proc.communicate()
        raise AssertionError(f"still running after {timeout}s; stderr: {err[-2000:]}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got {len(lines)}:\n{text[-3000:]}"
    return lines[0]


# --- item 3: undecodable files -------------------------------------------------------------

UNDECODABLE = {
    "non-utf8": (b"workers = 0\n# caf\xe9\n", None),
    "deep-array": (b"workers = 0\nx = " + b"[" * 20000 + b"]" * 20000 + b"\n", None),
    "nul-chuser": (b'workers = 0\nchuser = "no\\u0000body"\n', "chuser"),
    "nul-chgroup": (b'workers = 0\nchgroup = "no\\u0000group"\n', "chgroup"),
    "huge-int": (b"workers = " + b"9" * 5000 + b"\n", None),
}


@pytest.mark.parametrize("case", sorted(UNDECODABLE))
def test_undecodable_config_at_start_exits_78_in_one_line(tmp_path, case):
    body, key = UNDECODABLE[case]
    f = tmp_path / "app.toml"
    f.write_bytes(body)
    r = run("--config", str(f))
    line = one_line(r.stderr)
    assert r.returncode == 78, r.stderr
    assert str(f) in line
    if key:
        assert f"key '{key}'" in line


def test_undecodable_config_on_hup_keeps_the_master_serving(service):
    svc = service(workers=1, args=["--pid", "app.pid"])
    svc.wait_ready()
    worker = svc.wait_workers(1)
    for case in sorted(UNDECODABLE):
        body, key = UNDECODABLE[case]
        svc.config_path.write_bytes(body)
        svc.mark()
        svc.kill(signal.SIGHUP)
        status = svc.notify.wait(
            lambda m: m.get("STATUS", "").startswith("reload failed"), 15, f"reload failed ({case})"
        )["STATUS"]
        assert str(svc.config_path) in status
        line = svc.wait_log(r"reload failed: .*").group(0)
        assert str(svc.config_path) in line, line
        if key:
            assert f"key '{key}'" in line
        assert svc.proc.poll() is None
    assert svc.workers() == worker  # the old worker was never touched
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


# --- item 13: service names and the runtime directory ---------------------------------------


def _escapes(tmp_path: Path) -> dict[str, Path]:
    """Names that, joined to /run/svcengine, point somewhere else (here: into tmp_path)."""
    rel = os.path.relpath(tmp_path / "escaped", "/run/svcengine")
    return {rel: tmp_path / "escaped", str(tmp_path / "abs"): tmp_path / "abs", "..": Path("/run")}


@root_only
@pytest.mark.parametrize("which", [0, 1, 2])
def test_name_that_leaves_the_runtime_dir_is_refused(tmp_path, which):
    name, target = list(_escapes(tmp_path).items())[which]
    r = run("--workers", "0", "--name", name, env={"RUNTIME_DIRECTORY": ""})
    line = one_line(r.stderr)
    assert r.returncode == 78, r.stderr
    assert "key 'name' in the command line" in line
    assert not (target / "control.sock").exists()


def test_name_in_the_file_is_checked_too(tmp_path):
    f = tmp_path / "app.toml"
    f.write_text('workers = 0\nname = "a/b"\n')
    r = run("--config", str(f))
    assert r.returncode == 78, r.stderr
    assert f"key 'name' in {f}" in one_line(r.stderr)


@pytest.mark.parametrize("name", ["../../x", "/abs", ".."])
def test_ctl_refuses_a_bad_name_before_touching_anything(name):
    r = run("ctl", "--name", name, "status", env={"RUNTIME_DIRECTORY": ""})
    line = one_line(r.stderr)
    assert r.returncode not in (0, 69), r.stderr  # 69: it looked for a socket there
    assert "name" in line and "control.sock" not in line


def _foreign_dir(path: Path) -> Path:
    path.mkdir(mode=0o700)
    os.chown(path, NOBODY.pw_uid, NOBODY.pw_gid)
    return path


@root_only
def test_master_refuses_a_runtime_dir_owned_by_someone_else(tmp_path):
    rt = _foreign_dir(tmp_path / "rt")
    log = ["--log", str(tmp_path / "log")]  # stderr: the operator's line alone
    r = run("--workers", "0", "--name", "app", *log, env={"RUNTIME_DIRECTORY": str(rt)})
    line = one_line(r.stderr)
    assert r.returncode == 1, r.stderr
    assert str(rt) in line and f"uid {NOBODY.pw_uid}" in line
    assert not (rt / "control.sock").exists()


@root_only
def test_master_refuses_a_foreign_dir_under_run_svcengine(tmp_path):
    name = f"hardening-input-{uuid.uuid4().hex[:8]}"
    os.makedirs("/run/svcengine", exist_ok=True)
    rt = Path("/run/svcengine") / name
    try:
        _foreign_dir(rt)
        log = ["--log", str(tmp_path / "log")]
        r = run("--workers", "0", "--name", name, *log, env={"RUNTIME_DIRECTORY": ""})
        line = one_line(r.stderr)
        assert r.returncode == 1, r.stderr
        assert str(rt) in line and f"uid {NOBODY.pw_uid}" in line
    finally:
        shutil.rmtree(rt, ignore_errors=True)


@root_only
def test_ctl_refuses_a_runtime_dir_owned_by_someone_else(tmp_path):
    rt = _foreign_dir(tmp_path / "rt")
    fake = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    fake.bind(str(rt / "control.sock"))  # someone else's socket, where ours would be
    fake.listen(4)
    fake.setblocking(False)
    try:
        r = run("ctl", "--name", "app", "status", env={"RUNTIME_DIRECTORY": str(rt)}, timeout=30)
        line = one_line(r.stderr)
        assert r.returncode == 77, r.stderr
        assert str(rt) in line and f"uid {NOBODY.pw_uid}" in line
        with pytest.raises(BlockingIOError):
            fake.accept()  # ctl never connected
    finally:
        fake.close()


# --- item 16: bounds ---------------------------------------------------------------------------

SLOW = "start_worker_delay = 3600\n"  # if the old code accepts a huge pool: one worker, not 4097

BOUNDS = {
    "graceful-nan": ("worker_graceful_kill_timeout = nan\n", "worker_graceful_kill_timeout"),
    "immediate-inf": ("worker_immediate_kill_timeout = inf\n", "worker_immediate_kill_timeout"),
    "upgrade-1e300": ("upgrade_timeout = 1e300\n", "upgrade_timeout"),
    "heartbeat-inf": ("worker_heartbeat_timeout = inf\n", "worker_heartbeat_timeout"),
    "interval-nan": ("worker_heartbeat_interval = nan\n", "worker_heartbeat_interval"),
    "delay-1e300": ("start_worker_delay = 1e300\n", "start_worker_delay"),
    "rand-5": ("start_worker_delay_rand = 5.0\n", "start_worker_delay_rand"),
    "backoff-min>max": (
        "worker_restart_backoff_min = 60.0\nworker_restart_backoff_max = 1.0\n",
        "worker_restart_backoff_min",
    ),
    "workers-2**63-1": (SLOW + "workers = 9223372036854775807\n", "workers"),
    "workers-4097": (SLOW + "workers = 4097\n", "workers"),
    "port-99999": ('listen = ["127.0.0.1:99999"]\n', "listen"),
    "port-v6-70000": ('listen = ["[::1]:70000"]\n', "listen"),
}


@pytest.mark.parametrize("case", sorted(BOUNDS))
def test_out_of_bounds_value_exits_78_in_one_line(tmp_path, case):
    body, key = BOUNDS[case]
    f = tmp_path / "app.toml"
    f.write_text(("workers = 0\n" if "workers =" not in body else "") + body)
    r = run("--config", str(f), timeout=8)
    line = one_line(r.stderr)
    assert r.returncode == 78, r.stderr
    assert f"key '{key}' in {f}" in line


def test_port_out_of_range_on_the_command_line(tmp_path):
    r = run("--workers", "0", "--listen", "127.0.0.1:65536")
    assert r.returncode == 78, r.stderr
    assert "key 'listen' in the command line" in one_line(r.stderr)


def test_scale_beyond_the_maximum_is_refused_over_the_control_socket(service, tmp_path):
    svc = service(workers=1, config=SLOW, args=["--pid", "app.pid"])
    svc.wait_ready()
    path = str(tmp_path / "app.ctl")
    for n in ("10000", "+9000"):
        reply = client.request(path, {"cmd": "scale", "n": n})
        assert reply["ok"] is False, reply
        assert "4096" in reply["error"]
    assert client.request(path, {"cmd": "status"})["workers"].__len__() == 1
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


def test_hup_that_changes_a_start_only_key_says_so(service, tmp_path):
    svc = service(workers=1, args=["--pid", "app.pid"])
    svc.wait_ready()
    svc.write_config(1, 'signal_map = "unicorn"\nworker_type = "thread"\nname = "renamed"\n')
    svc.mark()
    svc.kill(signal.SIGHUP)
    line = svc.wait_log(r"reload: .* not applied.*").group(0)
    for key in ("signal_map", "worker_type", "name"):
        assert key in line, line
    assert "USR2" in line
    svc.notify.wait_key("READY", 15, "1")
    assert client.request(str(tmp_path / "app.ctl"), {"cmd": "status"})["name"] == ""
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


# --- low: the launcher's own fork; numeric ids ----------------------------------------------


def _python_for(user: pwd.struct_passwd) -> list[str] | None:
    """An interpreter `user` may run, with this checkout and the venv's packages importable."""
    site = next((REPO / ".venv" / "lib").glob("python3*/site-packages"), None)
    for exe in (sys.executable, "/usr/bin/python3"):
        try:
            probe = subprocess.run(
                [exe, "-c", "import svcengine, daemon"],
                user=user.pw_uid,
                group=user.pw_gid,
                extra_groups=[],
                env={"PYTHONPATH": f"{REPO}:{site}", "PYTHONDONTWRITEBYTECODE": "1"},
                cwd="/",
                capture_output=True,
                timeout=30,
            )
        except OSError:  # e.g. an interpreter under /root
            continue
        if probe.returncode == 0:
            return [exe]
    return None


@root_only
def test_launcher_fork_failure_is_one_line_and_exit_71(tmp_path):
    exe = _python_for(NOBODY)
    if exe is None:
        pytest.skip("no interpreter that nobody may run")
    site = next((REPO / ".venv" / "lib").glob("python3*/site-packages"))

    def no_more_processes() -> None:  # RLIMIT_NPROC: a real limit, enforced for non-root
        resource.setrlimit(resource.RLIMIT_NPROC, (1, 1))

    r = subprocess.run(
        [*exe, "-m", "svcengine", "--daemonize", "--workers", "1", "--name", "nproc"],
        user=NOBODY.pw_uid,
        group=NOBODY.pw_gid,
        extra_groups=[],
        preexec_fn=no_more_processes,
        env={"PYTHONPATH": f"{REPO}:{site}", "PYTHONDONTWRITEBYTECODE": "1"},
        cwd="/",
        capture_output=True,
        text=True,
        timeout=30,
    )
    line = one_line(r.stderr)
    assert r.returncode == 71, r.stderr
    assert "cannot fork" in line


@root_only
def test_numeric_chuser_and_chgroup_with_an_entry_are_accepted(service):
    svc = service(workers=0, config=f'chuser = "{NOBODY.pw_uid}"\nchgroup = "{NOBODY.pw_gid}"\n')
    svc.wait_ready()
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


def test_numeric_id_without_an_entry_is_one_line(tmp_path):
    uid = 4242424
    while True:
        try:
            pwd.getpwuid(uid)
            uid += 1
        except KeyError:
            break
    f = tmp_path / "app.toml"
    f.write_text(f'workers = 0\nchuser = "{uid}"\n')
    r = run("--config", str(f))
    assert r.returncode == 78, r.stderr
    assert f"key 'chuser' in {f}: no user with uid {uid}" in one_line(r.stderr)


@root_only
@pytest.mark.parametrize("command", ["status", "reload"])
def test_ctl_refused_by_the_master_is_one_line(service, command):
    """The master answers a uid it does not serve with an error; ctl must say so, not
    raise KeyError. (The socket is opened to all here so that nobody can reach it.)"""
    exe = _python_for(NOBODY)
    if exe is None:
        pytest.skip("no interpreter that nobody may run")
    site = next((REPO / ".venv" / "lib").glob("python3*/site-packages"))
    run_dir = Path(tempfile.mkdtemp(prefix="svc-input-"))  # nobody can reach it (not tmp_path)
    os.chmod(run_dir, 0o711)
    try:
        svc = service(workers=0, args=["--pid", str(run_dir / "app.pid")])
        svc.wait_ready()
        path = run_dir / "app.ctl"
        os.chmod(path, 0o666)
        r = _ctl_as_nobody(exe, site, path, command)
        line = one_line(r.stderr)
        assert r.returncode == 77, r.stderr
        assert f"uid {NOBODY.pw_uid} is not allowed" in line
        svc.kill(signal.SIGTERM)
        assert svc.wait_exit() == 0
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _ctl_as_nobody(exe: list[str], site: Path, path: Path, command: str):
    return subprocess.run(
        [*exe, "-m", "svcengine", "ctl", "--socket", str(path), command],
        user=NOBODY.pw_uid,
        group=NOBODY.pw_gid,
        extra_groups=[],
        env={"PYTHONPATH": f"{REPO}:{site}", "PYTHONDONTWRITEBYTECODE": "1"},
        cwd="/",
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize("mode", ["--foreground", "--daemonize"])
def test_log_file_that_cannot_be_opened_is_one_line(tmp_path, mode):
    log = tmp_path / "no-such-dir" / "app.log"
    r = run(mode, "--workers", "0", "--log", str(log))
    assert r.returncode == 78, r.stderr  # a config error: the `log` key names a bad path
    lines = r.stderr.strip().splitlines() if mode == "--foreground" else [one_line(r.stderr)]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[-1].startswith("svcengine: config error: key 'log'"), lines
    assert lines[-1].endswith(f"cannot open {log}: No such file or directory"), lines
