"""The one command table: what every signal and every control request does.

A signal becomes a Command through the preset (signals.PRESETS), a control
request through parse_request(); both then go to the same handler through
dispatch(), and the phases a command is carried out in are written here once.
Read-only queries (`status`, `pid`) are not commands: they go to report.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..child import DUMP_SIGNAL
from ..signals import NAMED, Command
from .phase import EVERY, NOT_STOPPING, Phase

if TYPE_CHECKING:
    from .changes import Changes
    from .lifecycle import Lifecycle
    from .pool import Pool
    from .workers import Workers

log = logging.getLogger("svcengine.master")

C = Command


@dataclass(frozen=True)
class Scale:
    """SCALE's argument: `n` workers, or `n` more (fewer, if negative) when relative."""

    n: int
    relative: bool = False

    def target(self, current: int) -> int:
        return current + self.n if self.relative else self.n


Arg = Scale | None


class Host(Protocol):
    """What the table's handlers act on (the Master and the pieces it holds)."""

    lifecycle: Lifecycle
    changes: Changes
    workers: Workers
    pool: Pool

    @property
    def phase(self) -> Phase: ...
    def reap(self) -> None: ...
    def reopen_logs(self) -> None: ...
    def upgrade(self) -> None: ...


@dataclass(frozen=True)
class Entry:
    run: Callable[[Host, Arg], None]
    allowed: frozenset[Phase]


def _scale(h: Host, arg: Arg) -> None:
    how = arg if arg is not None else Scale(0, relative=True)
    h.changes.scale(how.target(h.pool.target))


def _restart_now(h: Host, _: Arg) -> None:
    h.workers.signal_all(signal.SIGQUIT, h.pool.current())


def _dump(h: Host, _: Arg) -> None:
    log.info("dumping the stacks of %d worker(s) to the log", len(h.pool.workers()))
    h.workers.signal_all(DUMP_SIGNAL)


TABLE: dict[Command, Entry] = {
    C.CHILD: Entry(lambda h, _: h.reap(), EVERY),
    C.GRACEFUL_STOP: Entry(lambda h, _: h.lifecycle.begin_stop(quick=False), EVERY),
    C.QUICK_STOP: Entry(lambda h, _: h.lifecycle.begin_stop(quick=True), EVERY),  # escalates
    C.RELOAD: Entry(lambda h, _: h.changes.reload(), NOT_STOPPING),
    C.RESTART_GRACEFUL: Entry(lambda h, _: h.changes.restart_graceful(), NOT_STOPPING),
    # as before the table: also while stopping (turns a graceful stop's TERM into QUIT)
    C.RESTART_IMMEDIATE: Entry(_restart_now, NOT_STOPPING),  # a stop under way stays graceful
    C.REOPEN_LOGS: Entry(lambda h, _: h.reopen_logs(), EVERY),
    C.SCALE: Entry(_scale, NOT_STOPPING),
    C.STOP_WORKERS: Entry(lambda h, _: h.changes.pause(), NOT_STOPPING),
    C.DUMP: Entry(_dump, EVERY),
    C.UPGRADE: Entry(lambda h, _: h.upgrade(), NOT_STOPPING),  # and only once READY
    C.IGNORE: Entry(lambda h, _: None, frozenset()),
}

# the presets' TTIN/TTOU names: one worker more or fewer
SIGNAL_ARGS: dict[Command, tuple[Command, Arg]] = {
    C.INCREMENT: (C.SCALE, Scale(+1, relative=True)),
    C.DECREMENT: (C.SCALE, Scale(-1, relative=True)),
}


def from_preset(command: Command) -> tuple[Command, Arg]:
    """A preset's command as the table knows it (INCREMENT -> SCALE +1)."""
    return SIGNAL_ARGS.get(command, (command, None))


def dispatch(host: Host, command: Command, arg: Arg = None) -> bool:
    """Carry out one command if the master's phase allows it; False if it does not."""
    command, extra = from_preset(command)
    entry = TABLE.get(command)
    if entry is None or host.phase not in entry.allowed:
        if command is not C.IGNORE:
            log.debug("%s ignored while %s", command.value, host.phase.value)
        return False
    entry.run(host, arg if arg is not None else extra)
    return True


class BadRequest(ValueError):
    """A control request naming no command, or a bad argument: the client is told why."""


def parse_request(req: dict[str, Any]) -> tuple[Command, Arg]:
    """A control request -> (Command, argument). `status` and `pid` are not commands."""
    cmd = req.get("cmd")
    command = NAMED.get(cmd) if isinstance(cmd, str) else None
    if command is not None:
        return command, None
    if cmd == "scale":
        text = str(req.get("n", ""))
        try:
            n = int(text)
        except ValueError:
            raise BadRequest(f"scale needs N, +N or -N, got {text!r}") from None
        return C.SCALE, Scale(n, relative=text[:1] in "+-")
    raise BadRequest(f"unknown command {cmd!r}")
