"""What the upgrade needs of the master and of the server: narrow Protocols, so this package
imports neither (Master and Server satisfy them as they are)."""

from __future__ import annotations

import selectors
import signal
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..config import Config
    from ..hooks import Hooks
    from ..signals import Command
    from ..timers import Timers
    from ..unix.pidfile import Pidfile
    from ..unix.sockets import Listener
    from ..unix.systemd import Notifier


class UpgradeServer(Protocol):
    """The old master's Server: hooks, the pidfile to move, where to exec from."""

    @property
    def hooks(self) -> Hooks: ...
    @property
    def pidfile(self) -> Pidfile | None: ...
    @property
    def start_cwd(self) -> str: ...
    @property
    def upgrading_from(self) -> int | None: ...  # not None: not yet taken over ourselves
    def handed_over(self) -> None: ...  # its unix socket files are the new master's now


class UpgradeHost(Protocol):
    """The old master's loop and state, as far as an upgrade reads or drives them."""

    @property
    def cfg(self) -> Config: ...
    @property
    def notify(self) -> Notifier: ...
    @property
    def pid(self) -> int: ...
    @property
    def selector(self) -> selectors.BaseSelector: ...
    @property
    def timers(self) -> Timers: ...
    @property
    def sockets(self) -> list[Listener]: ...
    @property
    def commands(self) -> dict[signal.Signals, Command]: ...
    @property
    def server(self) -> UpgradeServer: ...
    def status_text(self) -> str: ...
    def begin_stop(self, quick: bool) -> None: ...
    def settle_children(self) -> None: ...  # every worker is the master's child (a mold)
    def handle(self, command: Command, sig: signal.Signals | None = None) -> None: ...
