"""The command table and the phase transition table, checked as data."""

from __future__ import annotations

import pytest

from svcengine.master import commands
from svcengine.master.commands import BadRequest, Scale, parse_request
from svcengine.master.lifecycle import Lifecycle
from svcengine.master.phase import TRANSITIONS, IllegalTransition, Phase
from svcengine.signals import NAMED, PRESETS, Command


class _Recorder:
    def __init__(self, calls: list[tuple[str, object]], path: str) -> None:
        self._calls = calls
        self._path = path

    def __getattr__(self, name: str) -> _Recorder:
        return _Recorder(self._calls, f"{self._path}.{name}".lstrip("."))

    def __call__(self, *args, **kw) -> None:
        self._calls.append((self._path, args or kw or None))


class RecordingHost:
    """Stands in for the Master: records which handler the table called."""

    def __init__(self, phase: Phase) -> None:
        from svcengine.master.pool import Pool

        self.phase = phase
        self.pool = Pool(2)
        self.calls: list[tuple[str, object]] = []

    def __getattr__(self, name: str) -> _Recorder:
        return _Recorder(self.calls, name)


RUNS_WHILE_STOPPING = {
    Command.CHILD,
    Command.GRACEFUL_STOP,
    Command.QUICK_STOP,
    Command.REOPEN_LOGS,
    Command.DUMP,
}


def test_every_preset_and_named_command_has_an_entry():
    used = {c for preset in PRESETS.values() for c in preset.values()} | set(NAMED.values())
    for c in used:
        assert commands.from_preset(c)[0] in commands.TABLE, c


@pytest.mark.parametrize("phase", list(Phase))
@pytest.mark.parametrize("command", [c for c in Command if c is not Command.IGNORE])
def test_command_by_phase(command, phase):
    host = RecordingHost(phase)
    ran = commands.dispatch(host, command)  # type: ignore[arg-type]
    table_command = commands.from_preset(command)[0]
    expected = phase is not Phase.STOPPING or table_command in RUNS_WHILE_STOPPING
    assert ran is expected
    assert bool(host.calls) is expected


def test_ttin_ttou_are_scale_by_one():
    host = RecordingHost(Phase.RUNNING)
    commands.dispatch(host, Command.INCREMENT)  # type: ignore[arg-type]
    commands.dispatch(host, Command.DECREMENT)  # type: ignore[arg-type]
    assert host.calls == [("changes.scale", (3,)), ("changes.scale", (1,))]


@pytest.mark.parametrize(
    ("req", "parsed"),
    [
        ({"cmd": "stop"}, (Command.GRACEFUL_STOP, None)),
        ({"cmd": "quit"}, (Command.QUICK_STOP, None)),
        ({"cmd": "reload"}, (Command.RELOAD, None)),
        ({"cmd": "reopen-logs"}, (Command.REOPEN_LOGS, None)),
        ({"cmd": "dump"}, (Command.DUMP, None)),
        ({"cmd": "upgrade"}, (Command.UPGRADE, None)),
        ({"cmd": "pause"}, (Command.STOP_WORKERS, None)),
        ({"cmd": "scale", "n": "3"}, (Command.SCALE, Scale(3))),
        ({"cmd": "scale", "n": "+1"}, (Command.SCALE, Scale(1, relative=True))),
        ({"cmd": "scale", "n": "-2"}, (Command.SCALE, Scale(-2, relative=True))),
    ],
)
def test_parse_request(req, parsed):
    assert parse_request(req) == parsed


@pytest.mark.parametrize("req", [{"cmd": "scale", "n": "x"}, {"cmd": "nope"}, {"cmd": 3}, {}])
def test_parse_request_rejects(req):
    with pytest.raises(BadRequest):
        parse_request(req)


class _Notify:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def stopping(self) -> None:
        self.sent.append("STOPPING=1")

    def status(self, text: str) -> None:
        self.sent.append(f"STATUS={text}")


class _Host:
    """Stands in for the Master around a Lifecycle (only what enter() touches)."""

    def __init__(self) -> None:
        from svcengine.master.pool import Pool

        self.notify = _Notify()
        self.pool = Pool(1)


@pytest.mark.parametrize("old", list(Phase))
@pytest.mark.parametrize("new", list(Phase))
def test_transition_table(old, new):
    life = Lifecycle(_Host())  # type: ignore[arg-type]
    life.phase = old
    if new in TRANSITIONS[old]:
        life.enter(new)
        assert life.phase is new
        want = "STOPPING=1" if new is Phase.STOPPING else "STATUS="
        assert life.host.notify.sent[0].startswith(want)
    else:
        with pytest.raises(IllegalTransition):
            life.enter(new)
        assert life.phase is old


def test_stopping_is_final():
    assert TRANSITIONS[Phase.STOPPING] == frozenset()
    assert all(Phase.STOPPING in TRANSITIONS[p] for p in Phase if p is not Phase.STOPPING)
