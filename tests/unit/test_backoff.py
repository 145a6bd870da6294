"""A mold that keeps dying young is retried after a growing delay (master/backoff.py), and
MoldLauncher follows it: driven here on a fake clock, its _make() a stand-in that forks
nothing (a mold is a socketpair whose far end the test writes `ready` into)."""

from __future__ import annotations

import socket

import pytest
from masterkit import Clock

from svcengine import spawn
from svcengine.master import backoff
from svcengine.master.backoff import Backoff
from svcengine.master.handles import ExitStatus
from svcengine.master.loop import Loop
from svcengine.master.mold import Mold, MoldLauncher
from svcengine.timers import Timers


def test_quick_deaths_double_the_delay_up_to_the_cap():
    b = Backoff()
    delays = [b.exited("exited with status 3", lived=0.01, was_ready=False) for _ in range(8)]
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    assert backoff.MAX_DELAY == 30
    assert b.failures == 8 and b.last_exit == "exited with status 3"
    for _ in range(5000):  # no float overflow in a loop that lasts for days
        assert b.exited("x", lived=0.0, was_ready=False) == 30


def test_a_mold_that_never_got_ready_died_young_however_long_it_lived():
    b = Backoff()
    assert b.exited("killed by SIGKILL", lived=50.0, was_ready=False) == 1
    assert b.exited("killed by SIGKILL", lived=50.0, was_ready=False) == 2


def test_ready_resets_and_a_ready_mold_that_lived_is_replaced_at_once():
    b = Backoff()
    assert [b.exited("x", 0.1, False) for _ in range(3)] == [1, 2, 4]
    b.ready()
    assert b.failures == 0
    assert b.exited("killed by SIGKILL", lived=backoff.QUICK_DEATH, was_ready=True) == 0
    assert b.failures == 0 and b.last_exit == "killed by SIGKILL"  # the cause stays, for status
    assert b.exited("x", lived=0.5, was_ready=True) == 1  # ready, but it lived less than 1 s


def test_a_failed_fork_counts_as_a_quick_death():
    b = Backoff()
    assert b.failed("cannot fork: EAGAIN") == 1
    assert b.failed("cannot fork: EAGAIN") == 2
    assert b.last_exit == "cannot fork: EAGAIN"


class Launcher(MoldLauncher):
    """A MoldLauncher whose molds are socketpairs: _make() forks nothing."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(self._no_context, Loop(Timers(clock)), clock, self._ready)
        self.pids = iter(range(200001, 200100))  # never a pid this test could signal
        self.far: dict[int, socket.socket] = {}
        self.readies = 0

    def _no_context(self) -> spawn.ForkContext:
        raise AssertionError("forked")

    def _ready(self) -> None:
        self.readies += 1

    def _make(self) -> None:
        self.generation += 1
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        m = Mold(self.generation, next(self.pids), ours, self.clock())
        self.far[m.pid] = theirs
        self.current = m
        self.loop.register(ours.fileno(), lambda _fd: self._on_message(m))

    def say_ready(self) -> None:
        assert self.current is not None
        self.far[self.current.pid].send(b"ready")
        self.loop.turn(0)

    def die(self, status: ExitStatus) -> float:
        """The current mold exits: the delay before the next one is made."""
        assert self.current is not None and self.reaped(self.current.pid, status)
        assert self.current is None and self.retry.pending
        delay = self.retry.status()["retry_in"]
        assert isinstance(delay, float)
        return delay

    def close(self) -> None:
        super().close()
        for s in self.far.values():
            s.close()


@pytest.fixture
def launcher():
    made = Launcher(Clock())
    yield made
    made.close()
    made.loop.close()


def test_the_mold_launcher_backs_off_and_status_shows_the_retry(launcher):
    clock: Clock = launcher.clock
    assert not launcher.can_start() and launcher.generation == 1
    status = ExitStatus.exited(3)
    for expected in (1.0, 2.0, 4.0):
        assert launcher.die(status) == expected
        mold = launcher.describe()
        assert mold is not None and mold["pid"] is None and mold["ready"] is False
        assert mold["retry_in"] == expected and mold["last_exit"] == "exited with status 3"
        clock.advance(expected - 0.5)
        launcher.loop.turn(0)
        assert launcher.current is None  # not yet
        assert launcher.describe()["retry_in"] == 0.5  # type: ignore[index]
        clock.advance(0.5)
        launcher.loop.turn(0)
        assert launcher.current is not None  # the next mold
    assert launcher.generation == 4
    mold = launcher.describe()
    assert mold is not None and mold["retries"] == 3 and mold["retry_in"] is None
    launcher.say_ready()
    assert launcher.readies == 1 and launcher.can_start()
    assert launcher.describe()["retries"] == 0  # type: ignore[index]
    clock.advance(3600)
    assert launcher.die(ExitStatus.killed(9)) == 0  # it lived: replaced at once
    launcher.loop.turn(0)
    assert launcher.generation == 5
    assert launcher.die(ExitStatus.killed(9)) == 1  # and the next quick death starts at 1 s


def test_a_reload_during_the_backoff_makes_its_mold_at_once(launcher):
    launcher.can_start()
    for _ in range(5):
        launcher.die(ExitStatus.exited(3))
        launcher.clock.advance(60)
        launcher.loop.turn(0)
    assert launcher.die(ExitStatus.exited(3)) == 30
    launcher.begin_generation()  # HUP: the operator may have fixed the code
    assert launcher.current is not None and not launcher.retry.pending
    assert launcher.generation == 7
    assert launcher.die(ExitStatus.exited(3)) == 1  # a fresh start


def test_close_cancels_a_pending_retry(launcher):
    launcher.can_start()
    launcher.die(ExitStatus.exited(3))
    launcher.close()
    assert launcher.describe() is None
    launcher.clock.advance(10)
    launcher.loop.turn(0)
    assert launcher.current is None and launcher.loop.timers.timeout() is None
