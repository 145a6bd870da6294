"""TTIN/TTOU, HUP, USR1 and WINCH on a running service."""

from __future__ import annotations

import os
import signal

from harness import wait_gone


def test_ttin_ttou_change_the_pool(service):
    svc = service(workers=2)
    svc.wait_ready()
    svc.wait_workers(2)
    svc.kill(signal.SIGTTIN)
    svc.notify.wait(lambda m: m.get("STATUS") == "3/3 workers ready; 0 restarts", 10, "3/3")
    three = svc.wait_workers(3)
    svc.kill(signal.SIGTTOU)
    # a second TTOU sent while the first is still pending would merge with it (POSIX)
    svc.notify.wait(lambda m: m.get("STATUS") == "2/2 workers ready; 0 restarts", 10, "2/2")
    svc.kill(signal.SIGTTOU)
    svc.notify.wait(lambda m: m.get("STATUS") == "1/1 workers ready; 0 restarts", 10, "1/1")
    one = svc.wait_workers(1)
    assert one <= three
    assert not wait_gone(three - one, 5)
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


def test_hup_rereads_config_and_replaces_workers(service):
    svc = service(workers=2)
    svc.wait_ready()
    old = svc.wait_workers(2)
    svc.write_config(3)
    svc.kill(signal.SIGHUP)
    svc.notify.wait_key("RELOADING", 5, "1")
    msg = svc.notify.wait_key("READY", 10, "1")
    assert msg["STATUS"] == "3/3 workers ready; 0 restarts"
    new = svc.wait_workers(3)
    assert not (new & old), "old workers still running after the reload completed"
    assert not wait_gone(old, 5)
    assert svc.log_text().count("finished gracefully") == 2  # old ones stopped gracefully
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


def test_hup_with_broken_config_keeps_serving(service):
    svc = service(workers=2)
    svc.wait_ready()
    old = svc.wait_workers(2)
    svc.config_path.write_text(svc.config_path.read_text() + "workers = 'many'\n")
    svc.kill(signal.SIGHUP)
    msg = svc.notify.wait(lambda m: m.get("STATUS", "").startswith("reload failed"), 5, "failure")
    assert "serving the previous config" in msg["STATUS"]
    assert str(svc.config_path) in msg["STATUS"]
    svc.wait_log(r"reload failed: .*not valid TOML")
    assert svc.workers() == old
    svc.write_config(2, "workers_typo = 1\n")
    svc.kill(signal.SIGHUP)
    msg = svc.notify.wait(lambda m: "workers_typo" in m.get("STATUS", ""), 5, "unknown key")
    assert "key 'workers_typo'" in msg["STATUS"] and "unknown key" in msg["STATUS"]
    assert svc.workers() == old
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


def test_usr1_reopens_a_renamed_log(service):
    svc = service(workers=2)
    svc.wait_ready()
    svc.wait_log(r"worker 1 listening for commands", since_mark=False)
    rotated = svc.log_path.with_suffix(".log.1")
    os.rename(svc.log_path, rotated)
    svc.kill(signal.SIGUSR1)
    svc.wait_log(r"master: reopened log file", since_mark=False)
    svc.wait_log(r"worker\[0\]: reopened log file", since_mark=False)
    svc.wait_log(r"worker\[1\]: reopened log file", since_mark=False)
    svc.command(1, "warn")
    svc.command(0, "print")
    svc.wait_log(r"worker\[1\]: warn-marker", since_mark=False)
    svc.wait_log(r"printed-by-worker", since_mark=False)
    assert "warn-marker" not in rotated.read_text()
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


def test_winch_stops_workers_and_keeps_the_master(service):
    svc = service(workers=2)
    svc.wait_ready()
    workers = svc.wait_workers(2)
    svc.kill(signal.SIGWINCH)  # no controlling terminal: start_new_session
    svc.notify.wait(
        lambda m: m.get("STATUS", "").startswith("workers stopped on request"), 5, "paused"
    )
    assert not wait_gone(workers, 5)
    assert svc.proc.poll() is None
    svc.kill(signal.SIGHUP)
    svc.notify.wait_key("READY", 10, "1")
    svc.wait_workers(2)
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


def test_unicorn_preset_quit_is_graceful_and_term_is_quick(service):
    svc = service(workers=2, config='signal_map = "unicorn"\n')
    svc.wait_ready()
    svc.kill(signal.SIGQUIT)
    assert svc.wait_exit() == 0
    assert svc.log_text().count("finished gracefully") == 2
    assert "graceful stop" in svc.log_text()


def test_serverengine_preset_usr2_reloads_the_config(service):
    svc = service(workers=1, config='signal_map = "serverengine"\n')
    svc.wait_ready()
    svc.write_config(2, 'signal_map = "serverengine"\n')
    svc.kill(signal.SIGUSR2)
    msg = svc.notify.wait_key("READY", 10, "1")
    assert msg["STATUS"] == "2/2 workers ready; 0 restarts"
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0
