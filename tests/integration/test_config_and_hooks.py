"""Bad config exits 78 naming key and file; hooks run in the right process and order."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "svcengine", *args],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
    )


@pytest.mark.parametrize(
    "body,needle",
    [
        ("workers = 'two'\n", "key 'workers' in {f}: expected an integer, got str"),
        ("wrokers = 2\n", "key 'wrokers' in {f}: unknown key"),
        ("workers = -1\n", "key 'workers' in {f}: must be >= 0"),
        ("worker = 'nocolon'\n", "key 'worker' in {f}: expected 'module:Class'"),
        ("listen = ['nowhere']\n", "key 'listen' in {f}: expected HOST:PORT or unix:PATH"),
        ("hooks = 'no_such_module_x'\n", "key 'hooks' in {f}: cannot import hooks module"),
        ("workers = [\n", "in {f}: not valid TOML"),
    ],
)
def test_bad_config_exits_78_naming_key_and_file(tmp_path, body, needle):
    f = tmp_path / "bad.toml"
    f.write_text(body)
    r = run_cli("--config", str(f))
    assert r.returncode == 78, r.stderr
    assert needle.format(f=f) in r.stderr


def test_missing_config_file_exits_78(tmp_path):
    r = run_cli("--config", str(tmp_path / "absent.toml"))
    assert r.returncode == 78
    assert "absent.toml: no such file" in r.stderr


def test_cli_overrides_the_file(service):
    svc = service(workers=1, args=["--workers", "3"])
    assert svc.wait_ready()["STATUS"] == "3/3 workers ready; 0 restarts"
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


def test_hooks_run_in_the_right_process_and_order(service, tmp_path):
    svc = service(workers=2, config='hooks = "hooks_for_test"\n')
    svc.wait_ready()
    workers = svc.wait_workers(2)
    svc.kill(signal.SIGHUP)
    svc.notify.wait_key("READY", 10, "1")
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0
    lines = [line.split() for line in (tmp_path / "hooks.log").read_text().splitlines()]
    master = str(svc.pid)
    by_name: dict[str, list[list[str]]] = {}
    for line in lines:
        by_name.setdefault(line[0], []).append(line)
    for name in (
        "before_fork",
        "after_worker_ready",
        "after_worker_exit",
        "when_ready",
        "on_reload",
        "on_exit",
    ):
        assert all(rec[1] == master for rec in by_name[name]), name
    # after_fork runs in the worker itself
    assert {rec[1] for rec in by_name["after_fork"]} >= {str(p) for p in workers}
    assert master not in {rec[1] for rec in by_name["after_fork"]}
    order = [line[0] for line in lines]
    assert order.index("when_ready") > max(
        i for i, n in enumerate(order[: order.index("when_ready")]) if n == "after_worker_ready"
    )
    assert order.index("on_reload") > order.index("when_ready")
    assert order[-1] == "on_exit"
    assert len(by_name["before_fork"]) == 4 and len(by_name["after_worker_exit"]) == 4


def test_failing_after_fork_is_a_boot_failure(service, tmp_path):
    (tmp_path / "badhooks.py").write_text(
        "def after_fork(server, worker):\n    raise ValueError('after_fork says no')\n"
    )
    svc = service(workers=1, config='hooks = "badhooks"\n')
    assert svc.wait_exit(15) == 1
    assert "failed to boot (ValueError: after_fork says no)" in svc.log_text()
