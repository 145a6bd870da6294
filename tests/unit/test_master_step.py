"""Master.step() driven one turn at a time: a fake clock, a fake launcher, no fork.

Real: the signal handlers and wakeup pipe (signals are sent to this process), the
selector, the timers, the notify socket. Stand-ins (tests/unit/masterkit.py):
FakeLauncher for fork(), FakeServer for server.Server, Clock for time.
"""

from __future__ import annotations

import logging
import signal

import pytest
from masterkit import kit_factory

from svcengine.master.phase import Phase
from svcengine.master.pool import SlotState


@pytest.fixture
def kit(tmp_path):
    yield from kit_factory(tmp_path)


def test_start_forks_the_pool_and_announces_ready_once(kit):
    k = kit()
    assert len(k.keys()) == 2 and k.master.phase is Phase.STARTING
    k.launcher.ready(k.keys()[0])
    k.step()
    assert k.notify_socket.has("READY=1") == 0
    k.all_ready()
    assert k.master.phase is Phase.RUNNING and k.master.announced_ready
    assert k.notify_socket.has("READY=1") == 1
    assert k.server.calls == ["take_over", "announce_ready"]


def test_idle_master_arms_no_timer(kit):
    k = kit()
    k.all_ready()
    assert k.master.timers.timeout() is None  # select() without a timeout: zero wakeups


def test_hup_before_ready_still_sends_the_first_ready(kit):
    """The trap the review found: a HUP during STARTING must not lose the first READY."""
    k = kit()
    first = k.keys()
    k.signal(signal.SIGHUP)
    assert k.master.phase is Phase.RELOADING
    assert k.notify_socket.has("RELOADING=1") == 0  # systemd waits for READY=1 alone
    k.all_ready(generation=k.master.pool.generation)
    for key in first:  # the first generation never became ready: stopped when replaced
        k.launcher.exit(key)
    k.step()
    assert k.master.phase is Phase.RUNNING
    assert k.master.announced_ready and k.server.calls == ["take_over", "announce_ready"]
    assert k.notify_socket.has("READY=1") == 1


def test_crashing_worker_restarts_at_once_then_backs_off(kit):
    k = kit(worker_restart_backoff_min=5.0)
    k.all_ready()
    key = k.keys()[0]
    k.launcher.exit(key, 3)
    k.step()
    assert len(k.keys()) == 2  # first restart: at once
    k.launcher.exit(k.keys()[-1], 3)  # the new one dies before it is ready: a fast failure
    k.step()
    assert len(k.keys()) == 1
    assert 0 < k.master.timers.timeout() <= 5.0
    k.clock.advance(5.0)
    k.step()
    assert len(k.keys()) == 2


def test_failed_fork_is_retried_after_a_backoff(kit):
    k = kit(workers=1)
    k.all_ready()
    k.launcher.fail_next = True
    k.launcher.exit(k.keys()[0], 1)
    k.step()
    assert k.keys() == []
    k.clock.advance(30)
    k.step()
    assert len(k.keys()) == 1


def test_term_stops_gracefully_then_exits_when_workers_are_gone(kit):
    k = kit()
    k.all_ready()
    keys = k.keys()
    k.signal(signal.SIGTERM)
    assert k.master.phase is Phase.STOPPING
    assert k.notify_socket.has("STOPPING=1") == 1
    assert all(k.launcher.signalled(key) == [signal.SIGTERM] for key in keys)
    assert k.master.exit_code is None
    for key in keys:
        k.launcher.exit(key)
    k.step()
    assert k.master.exit_code == 0


def test_quick_stop_during_graceful_escalates_and_kills_at_the_deadline(kit):
    k = kit(worker_immediate_kill_timeout=2.0)
    k.all_ready()
    key = k.keys()[0]
    k.signal(signal.SIGTERM)
    k.signal(signal.SIGQUIT)
    assert k.launcher.signalled(key) == [signal.SIGTERM, signal.SIGQUIT]
    k.clock.advance(2.0)
    k.step()
    assert k.launcher.signalled(key)[-1] == signal.SIGKILL


def test_ttin_ttou_are_scale_plus_minus_one(kit):
    k = kit()
    k.all_ready()
    k.signal(signal.SIGTTIN)
    assert k.master.pool.target == 3 and len(k.keys()) == 3
    k.signal(signal.SIGTTOU)
    assert k.master.pool.target == 2
    assert [s for _, s in k.launcher.signals] == [signal.SIGTERM]


def test_control_socket_commands_use_the_same_table(kit):
    k = kit()
    k.all_ready()
    assert k.master.control_request({"cmd": "scale", "n": "+2"}) == {"ok": True, "workers": 4}
    assert len(k.keys()) == 4
    assert k.master.control_request({"cmd": "scale", "n": "x"})["ok"] is False
    assert "cannot scale" in k.master.control_request({"cmd": "scale", "n": "-9"})["error"]
    assert k.master.control_request({"cmd": "nope"})["error"] == "unknown command 'nope'"
    assert k.master.control_request({"cmd": "pid"}) == {"ok": True, "pid": k.master.pid}
    status = k.master.control_request({"cmd": "status"})
    assert status["phase"] == "running" and status["target"] == 4
    assert k.master.control_request({"cmd": "stop"})["ok"] is True
    assert k.master.phase is Phase.STOPPING
    # refused while stopping, as the table says: nothing changes
    k.master.control_request({"cmd": "scale", "n": "1"})
    assert k.master.pool.target == 4


def test_hup_burst_during_reload_is_one_more_generation(kit):
    k = kit()
    k.all_ready()
    k.signal(signal.SIGHUP)
    gen = k.master.pool.generation
    k.signal(signal.SIGHUP)
    k.signal(signal.SIGHUP)
    assert k.master.pool.generation == gen  # deferred, once
    k.all_ready(generation=gen)
    for key in [w.key for w in k.master.pool.workers() if w.state is SlotState.STOPPING]:
        k.launcher.exit(key)
    k.step()
    assert k.master.pool.generation == gen + 1
    assert k.master.phase is Phase.RELOADING


def test_reload_whose_workers_cannot_boot_is_abandoned(kit):
    k = kit()
    k.all_ready()
    old = k.keys()
    k.signal(signal.SIGHUP)
    new = k.keys(generation=k.master.pool.generation)
    k.launcher.say(new[0], "boot-failed ImportError: nope")
    k.step()
    assert k.master.phase is Phase.RUNNING
    assert [w.key for w in k.master.pool.current()] == old  # the previous workers serve on
    assert k.notify_socket.has("RELOADING=1") == 2 and k.notify_socket.has("READY=1") == 2
    assert "reload failed" in k.master.status_text()
    assert k.launcher.generations == ["begin", "abandon"]  # a mold: back to the previous one


def test_a_completed_reload_commits_the_launchers_generation(kit):
    k = kit()
    k.all_ready()
    k.signal(signal.SIGHUP)
    assert k.launcher.generations == ["begin"]
    k.all_ready(generation=k.master.pool.generation)
    for key in [w.pid for w in k.master.pool.workers() if w.state is SlotState.STOPPING]:
        k.launcher.exit(key)
    k.step()
    assert k.master.phase is Phase.RUNNING
    assert k.launcher.generations == ["begin", "commit"]  # the previous mold may go


def test_boot_failure_before_ready_stops_the_master_with_1(kit):
    k = kit()
    k.launcher.say(k.keys()[0], "boot-failed RuntimeError: no")
    k.step()
    assert k.master.phase is Phase.STOPPING and "failed to boot" in k.master.failure
    for key in k.keys():
        k.launcher.exit(key, 1)
    k.step()
    assert k.master.exit_code == 1


def test_usr2_before_ready_is_refused(kit, caplog):
    k = kit()
    with caplog.at_level(logging.WARNING, logger="svcengine.master"):
        k.signal(signal.SIGUSR2)
    assert k.master.upgrader is None
    assert "not ready yet" in caplog.text


def test_winch_pauses_and_hup_starts_again(kit, monkeypatch):
    from svcengine.master import changes

    monkeypatch.setattr(changes, "_has_terminal", lambda: False)  # stand-in: no tty here
    k = kit()
    k.all_ready()
    k.signal(signal.SIGWINCH)
    assert k.master.phase is Phase.PAUSED
    for key in k.keys():
        k.launcher.exit(key)
    k.step()
    assert k.keys() == []  # paused: nothing restarted
    k.signal(signal.SIGHUP)
    assert k.master.phase is Phase.RELOADING and len(k.keys()) == 2


class FakeUpgrader:
    """Stands in for upgrade.Upgrader (which forks a new master): the master's side of it."""

    def __init__(self) -> None:
        self.holds_exit = True
        self.stopped: list[bool] = []
        self.current = None

    def stop_new_master(self, quick: bool) -> None:
        self.stopped.append(quick)

    def owns(self, pid: int) -> bool:
        return False

    def fds(self) -> list[int]:
        return []


def test_a_stop_during_an_upgrade_stops_the_new_master_and_waits_for_it(kit):
    k = kit()
    k.all_ready()
    up = FakeUpgrader()
    k.master.upgrader = up  # type: ignore[assignment]
    k.signal(signal.SIGTERM)
    assert up.stopped == [False]
    for key in k.keys():
        k.launcher.exit(key)
    k.step()
    assert k.master.exit_code is None  # the new master it started is still stopping
    up.holds_exit = False
    k.step()
    assert k.master.exit_code == 0


def test_refused_reload_still_ends_with_reloading_and_ready(kit):
    """A Type=notify-reload unit's `systemctl reload` waits for RELOADING=1 then READY=1."""
    k = kit()
    k.all_ready()

    def broken():
        raise ValueError("workers: not a number")

    k.master.reload_config = broken
    k.signal(signal.SIGHUP)
    assert k.master.phase is Phase.RUNNING and k.master.pool.generation == 0
    assert k.notify_socket.has("RELOADING=1") == 1 and k.notify_socket.has("READY=1") == 2
    assert k.master.status_text().startswith("reload failed: workers: not a number")


def test_reload_while_stopping_is_refused_by_the_table(kit):
    k = kit()
    k.all_ready()
    k.signal(signal.SIGTERM)
    k.signal(signal.SIGHUP)
    assert k.master.phase is Phase.STOPPING and k.master.pool.generation == 0


def test_a_serverengine_hup_while_stopping_does_not_turn_the_stop_into_a_quick_one(kit):
    """ServerEngine's HUP restarts workers at once (QUIT); once a graceful stop has begun
    it must not reach the workers being stopped gracefully."""
    k = kit(signal_map="serverengine")
    k.all_ready()
    k.signal(signal.SIGTERM)
    assert k.master.phase is Phase.STOPPING
    k.signal(signal.SIGHUP)
    for key in k.keys():
        assert k.launcher.signalled(key) == [signal.SIGTERM], k.launcher.signalled(key)


def test_a_reload_whose_new_workers_never_get_ready_is_abandoned_after_reload_timeout(kit):
    """A new generation that hangs (never ready, never dead: e.g. a mold whose import
    blocks) used to keep the master RELOADING for ever; reload_timeout abandons it."""
    k = kit(reload_timeout=20.0)
    k.all_ready()
    old = k.keys()
    k.signal(signal.SIGHUP)
    assert k.master.phase is Phase.RELOADING
    k.clock.advance(19.0)
    k.step()
    assert k.master.phase is Phase.RELOADING
    k.clock.advance(1.5)
    k.step()
    assert k.master.phase is Phase.RUNNING
    assert [w.key for w in k.master.pool.current()] == old  # the previous workers serve on
    assert "not ready within 20s (reload_timeout)" in k.master.status_text()
    assert k.launcher.generations == ["begin", "abandon"]


@pytest.mark.parametrize("seconds", [float("nan"), float("inf"), -1.0, 1e12])
def test_user_timers_out_of_bounds_are_refused_where_they_are_set(kit, seconds):
    """server.every()/after() from a hook: a NaN, infinite, negative or huge delay used to
    reach select() as its timeout and end the master; now the hook's own call raises."""
    k = kit()
    with pytest.raises(ValueError, match="seconds"):
        k.master.after(seconds, lambda: None)
    with pytest.raises(ValueError, match="seconds"):
        k.master.every(seconds, lambda: None)
    with pytest.raises(ValueError, match="seconds"):
        k.master.every(0.0, lambda: None)  # a repeating timer of 0 s would spin the loop
    k.all_ready()
    assert k.master.phase is Phase.RUNNING
