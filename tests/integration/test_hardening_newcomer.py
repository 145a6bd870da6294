"""What a newcomer trips on: a failed start that leaves a log file behind, command-line flags
that override the file on every reload without a word, flags the CLI lacks."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import pytest
from harness import REPO, wait_for


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "svcengine", *args],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
    )


@pytest.mark.parametrize("mode", ["--foreground", "--daemonize"])
@pytest.mark.parametrize(
    "body,needle",
    [
        ('hooks = "no_such_hooks_module_x"\n', "key 'hooks'"),
        ('listen = ["nowhere"]\n', "key 'listen'"),
    ],
)
def test_config_error_at_start_creates_no_log_file(tmp_path, mode, body, needle):
    """The README's example with a hooks module that does not exist: exit 78, and the log
    file it names is not created (a failed start writes nothing but its message)."""
    log = tmp_path / "logs" / "app.log"
    log.parent.mkdir()
    f = tmp_path / "app.toml"
    f.write_text(f'log = "{log}"\n' + body)
    r = run_cli(mode, "--config", str(f), "--pid", str(tmp_path / "app.pid"), cwd=tmp_path)
    assert r.returncode == 78, r.stderr
    assert needle in r.stderr and str(f) in r.stderr
    assert r.stderr.count("config error") == 1, r.stderr  # said once, to the terminal
    assert not log.exists(), f"a failed start created {log}: {log.read_text()!r}"
    assert not (tmp_path / "app.pid").exists()


def test_flag_keeps_overriding_the_file_on_reload_and_the_log_says_so(service):
    """Gunicorn's rule: a flag given on the command line holds across reloads. A reload whose
    file sets that key differently says which flag wins, every time."""
    svc = service(workers=1, args=["--workers", "2"])
    assert svc.wait_ready()["STATUS"] == "2/2 workers ready; 0 restarts"
    svc.write_config(3)
    svc.mark()
    svc.kill(signal.SIGHUP)
    line = svc.wait_log(r"reload: .*workers.*", timeout=15).group(0)
    assert "--workers 2" in line and "workers = 3" in line and str(svc.config_path) in line, line
    svc.notify.wait(lambda m: m.get("READY") == "1", 15, "READY=1 after the reload")
    svc.wait_workers(2, timeout=15)
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


def test_reload_without_conflicting_flags_says_nothing_about_them(service):
    svc = service(workers=1, args=["--workers", "1"])
    svc.wait_ready()
    svc.mark()
    svc.kill(signal.SIGHUP)
    svc.wait_log(r"reload complete", timeout=15)
    assert "overrid" not in svc.log_text()[svc._log_offset :]
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


def test_signal_map_flag(service):
    """--signal-map unicorn: QUIT is a graceful stop there (a quick one in svcengine's map)."""
    svc = service(workers=1, args=["--signal-map", "unicorn"])
    svc.wait_ready()
    svc.mark()
    svc.kill(signal.SIGQUIT)
    assert svc.wait_exit() == 0
    svc.wait_log(r"graceful stop", timeout=5)


def test_cli_help_names_every_worker_type_and_signal_map():
    r = run_cli("--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    for name in ("process", "spawn", "thread", "embedded", "serverengine", "unicorn"):
        assert name in text, name
    assert "--signal-map" in text


def test_bad_signal_map_flag_exits_78_naming_the_key():
    r = run_cli("--signal-map", "bogus")
    assert r.returncode == 78
    assert "signal_map" in r.stderr


def _code_block(text: str, after: str, lang: str) -> str:
    start = text.index(f"```{lang}\n", text.index(after)) + len(lang) + 4
    return text[start : text.index("```", start)]


def test_readme_config_example_runs_as_written(tmp_path):
    """README's worker, its app.toml and docs/hooks.md's svc_hooks.py, saved as the README
    says: the service starts, the hooks run, TERM stops it. Only the port is made free."""
    readme = (REPO / "README.md").read_text()
    (tmp_path / "jobs.py").write_text(_code_block(readme, "## Writing a worker", "python"))
    hooks_md = (REPO / "docs" / "hooks.md").read_text()
    (tmp_path / "svc_hooks.py").write_text(_code_block(hooks_md, "## Example", "python"))
    toml = _code_block(readme, "## Configuration", "toml")
    assert '"127.0.0.1:8000"' in toml
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "app.toml").write_text(toml.replace(":8000", f":{port}"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "svcengine", "--config", "app.toml"],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        log = tmp_path / "app.log"

        def ready_or_exited() -> bool:
            text = log.read_text() if log.exists() else ""
            return "ready: 4/4" in text or proc.poll() is not None

        wait_for(ready_or_exited, 30, "ready, or an exit")
        assert proc.poll() is None, f"exit {proc.returncode}: {proc.stderr.read().decode()}"
        text = log.read_text()
        assert "starting worker 3 (restarts so far: 0)" in text  # the before_fork hook
        assert "Awesome work!" in text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stderr.close()
