"""Timers on a fake clock; config loading errors; status-line parsing."""

from __future__ import annotations

import pytest

from svcengine import channel, config
from svcengine.signals import PRESETS, Command
from svcengine.timers import Timers


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_no_timer_means_no_timeout():
    assert Timers(Clock()).timeout() is None


def test_timers_run_in_deadline_order_and_periodic_ones_repeat():
    clock = Clock()
    timers = Timers(clock)
    ran: list[str] = []
    timers.after(2, lambda: ran.append("b"))
    timers.after(1, lambda: ran.append("a"))
    timers.every(1.5, lambda: ran.append("p"))
    assert timers.timeout() == 1
    clock.t = 2.0
    timers.run_due()
    assert ran == ["a", "p", "b"]
    assert timers.timeout() == 1.0  # the periodic one, at 3.0
    clock.t = 10.0  # a stall: it runs once, not five times
    timers.run_due()
    assert ran.count("p") == 2 and timers.timeout() == 1.5


def test_cancelled_timer_never_runs():
    clock = Clock()
    timers = Timers(clock)
    t = timers.after(1, lambda: pytest.fail("cancelled timer ran"))
    t.cancel()
    clock.t = 5
    assert timers.run_due() == 0 and timers.timeout() is None


def test_config_types_and_unknown_keys(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("workers = 3\nworker_graceful_kill_timeout = 2\nlisten = ['127.0.0.1:1']\n")
    cfg = config.load(str(f), {"workers": 5})
    assert cfg.workers == 5 and cfg.worker_graceful_kill_timeout == 2.0
    assert cfg.source == str(f)
    f.write_text("workers = true\n")
    with pytest.raises(
        config.ConfigError, match=r"key 'workers' in .*c\.toml: expected an integer"
    ):
        config.load(str(f))
    f.write_text("unrecoverable_exit_codes = [1, 'x']\n")
    with pytest.raises(config.ConfigError, match="expected a list of integers"):
        config.load(str(f))
    f.write_text("unrecoverable_exit_codes = [300]\n")
    with pytest.raises(config.ConfigError, match="out of 1..255"):
        config.load(str(f))


def test_status_lines_split_across_reads():
    msgs, rest = channel.parse(b"ready\nboot-failed Import")
    assert msgs == [(b"ready", "")] and rest == b"boot-failed Import"
    msgs, rest = channel.parse(rest + b"Error: x\n")
    assert msgs == [(b"boot-failed", "ImportError: x")] and rest == b""


def test_presets_differ_where_the_peers_differ():
    import signal

    assert PRESETS["svcengine"][signal.SIGTERM] is Command.GRACEFUL_STOP
    assert PRESETS["unicorn"][signal.SIGTERM] is Command.QUICK_STOP
    assert PRESETS["unicorn"][signal.SIGQUIT] is Command.GRACEFUL_STOP
    assert PRESETS["serverengine"][signal.SIGUSR2] is Command.RELOAD
    for preset in PRESETS.values():
        assert preset[signal.SIGCONT] is Command.IGNORE
