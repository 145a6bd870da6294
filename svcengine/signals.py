"""Signals become bytes on a pipe; the master loop reads them and acts.

Handlers do nothing at all (no lock, no logging, no allocation that matters):
`signal.set_wakeup_fd` writes the signal number into a non-blocking pipe that
the loop's selector watches. Which command a signal means is a table, so the
presets for users migrating from ServerEngine or Unicorn are data, not code.
"""

from __future__ import annotations

import enum
import os
import signal
from collections.abc import Iterable

from .unix import csignal
from .unix import linux as _linux


class Command(enum.Enum):
    GRACEFUL_STOP = "graceful stop"
    QUICK_STOP = "quick stop"
    RELOAD = "reload config and replace workers"
    RESTART_GRACEFUL = "replace workers gracefully"
    RESTART_IMMEDIATE = "restart workers now"
    REOPEN_LOGS = "reopen logs"
    UPGRADE = "upgrade (re-exec)"
    STOP_WORKERS = "stop workers, keep master"
    INCREMENT = "one worker more"  # a preset's name for SCALE +1 (master/commands.py)
    DECREMENT = "one worker fewer"  # SCALE -1
    SCALE = "set the worker count"  # the control socket's `scale N`; TTIN/TTOU mean +1/-1
    DUMP = "dump worker stacks"
    CHILD = "reap children"
    IGNORE = "nothing"


S = signal.Signals
C = Command

_COMMON = {S.SIGCHLD: C.CHILD, S.SIGCONT: C.IGNORE, S.SIGPIPE: C.IGNORE}

PRESETS: dict[str, dict[signal.Signals, Command]] = {
    # systemctl stop sends TERM, so TERM is graceful
    "svcengine": {
        **_COMMON,
        S.SIGTERM: C.GRACEFUL_STOP,
        S.SIGINT: C.QUICK_STOP,
        S.SIGQUIT: C.QUICK_STOP,
        S.SIGHUP: C.RELOAD,
        S.SIGUSR1: C.REOPEN_LOGS,
        S.SIGUSR2: C.UPGRADE,
        S.SIGWINCH: C.STOP_WORKERS,
        S.SIGTTIN: C.INCREMENT,
        S.SIGTTOU: C.DECREMENT,
    },
    # ServerEngine's supervisor table; its CONT dump stays off (systemd owns CONT)
    "serverengine": {
        **_COMMON,
        S.SIGTERM: C.GRACEFUL_STOP,
        S.SIGQUIT: C.QUICK_STOP,
        S.SIGINT: C.QUICK_STOP,
        S.SIGUSR1: C.RESTART_GRACEFUL,
        S.SIGHUP: C.RESTART_IMMEDIATE,
        S.SIGUSR2: C.RELOAD,
        S.SIGWINCH: C.STOP_WORKERS,
        S.SIGTTIN: C.INCREMENT,
        S.SIGTTOU: C.DECREMENT,
    },
    # Unicorn's master: TERM/INT quick, QUIT graceful
    "unicorn": {
        **_COMMON,
        S.SIGTERM: C.QUICK_STOP,
        S.SIGINT: C.QUICK_STOP,
        S.SIGQUIT: C.GRACEFUL_STOP,
        S.SIGHUP: C.RELOAD,
        S.SIGUSR1: C.REOPEN_LOGS,
        S.SIGUSR2: C.UPGRADE,
        S.SIGWINCH: C.STOP_WORKERS,
        S.SIGTTIN: C.INCREMENT,
        S.SIGTTOU: C.DECREMENT,
    },
}


# The control socket's named commands (`svcengine ctl`): one meaning under every preset,
# carried out by the same Command a signal is turned into.
NAMED: dict[str, Command] = {
    "stop": C.GRACEFUL_STOP,
    "quit": C.QUICK_STOP,
    "reload": C.RELOAD,
    "reopen-logs": C.REOPEN_LOGS,
    "dump": C.DUMP,
    "upgrade": C.UPGRADE,
    "pause": C.STOP_WORKERS,
}


def hold_until_handled(preset: dict[signal.Signals, Command]) -> set[signal.Signals]:
    """Block, from the very start, the signals whose default action would kill a master
    that cannot act on them yet (HUP, USR1, USR2, WINCH, TTIN...): the pidfile makes the
    master visible long before its loop runs (a `preload` import can take seconds).
    SignalPipe unblocks them once its handlers are in place, and they are acted on then.
    Stop signals keep their default action: a master that serves nothing yet may die."""
    held = {s for s, c in preset.items() if c not in (C.GRACEFUL_STOP, C.QUICK_STOP, C.IGNORE)}
    signal.pthread_sigmask(signal.SIG_BLOCK, held)
    return held


def _noop(signum: int, frame: object) -> None:
    """Deliberately empty: the wakeup fd already carries the signal number."""


class SignalPipe:
    """The self-pipe: install no-op handlers and route their numbers to a pipe."""

    def __init__(self, signums: Iterable[int]) -> None:
        self.signums = sorted(set(signums))
        self.rfd, self.wfd = _linux.pipe(os.O_NONBLOCK | os.O_CLOEXEC)
        self._old_fd = signal.set_wakeup_fd(self.wfd, warn_on_full_buffer=False)
        for signum in self.signums:
            signal.signal(signum, _noop)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, self.signums)  # held since start-up

    def read(self) -> list[signal.Signals]:
        """Every signal number queued so far, in arrival order."""
        out: list[signal.Signals] = []
        while True:
            try:
                data = os.read(self.rfd, 4096)
            except BlockingIOError:
                break
            if not data:
                break
            for b in data:
                try:
                    out.append(signal.Signals(b))
                except ValueError:
                    continue
        return out

    def close(self) -> None:
        """Restore default dispositions; used in a freshly forked child."""
        signal.set_wakeup_fd(-1)
        for signum in self.signums:
            csignal.set_handler(signum, signal.SIG_DFL)
        for fd in (self.rfd, self.wfd):
            try:
                os.close(fd)
            except OSError:
                pass
