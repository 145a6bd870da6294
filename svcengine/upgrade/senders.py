"""Signals read with their sender's pid, during the upgrade window: a stop from the new master
is Unicorn's before_fork recipe, a stop from anyone else stops both masters."""

from __future__ import annotations

import logging
import os
import selectors
import signal
from collections.abc import Callable

from ..unix import linux as _linux

log = logging.getLogger("svcengine.upgrade")


class SignalSenders:
    """Some signals read with their sender's pid: blocked, and read from a signalfd
    in the master's loop (set_wakeup_fd tells only the number)."""

    def __init__(self, selector: selectors.BaseSelector, signals: set[signal.Signals], fd: int):
        self.selector = selector
        self.signals = signals
        self.fd = fd

    @classmethod
    def open(
        cls,
        selector: selectors.BaseSelector,
        signals: set[signal.Signals],
        handler: Callable[[list[tuple[signal.Signals, int]]], None],
    ) -> SignalSenders | None:
        """None where senders cannot be told (not Linux): the signals keep their plain path."""
        signal.pthread_sigmask(signal.SIG_BLOCK, signals)
        try:
            fd = _linux.signalfd(set(signals))
        except OSError as exc:
            log.warning("upgrade: cannot tell who sends signals (%s)", exc)
            fd = None
        if fd is None:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
            return None

        def on_readable(_fd: int) -> None:
            handler([(signal.Signals(n), pid) for n, pid in _linux.read_signals(fd)])

        selector.register(fd, selectors.EVENT_READ, on_readable)
        return cls(selector, signals, fd)

    def close(self) -> None:
        """Unblock: signals still pending arrive by the ordinary path now."""
        self.selector.unregister(self.fd)
        os.close(self.fd)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, self.signals)
