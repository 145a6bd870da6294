"""What the master needs from the server that made it, as a Protocol: master/ never
imports server.py (server imports master), so no import points up."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..config import Config
    from ..hooks import Hooks
    from ..unix.pidfile import Pidfile
    from ..worker import Worker


class Server(Protocol):
    """What the master uses of server.Server (named here, so nothing points up at it)."""

    config: Config
    hooks: Hooks
    worker_class: type[Worker] | None

    def master_fds(self) -> list[int]: ...
    def take_over(self) -> None: ...
    def announce_ready(self) -> None: ...
    def chown_log(self) -> None: ...

    # what upgrade.py reaches through master.server (until the upgrade owns them)
    upgrading_from: int | None
    start_cwd: str
    pidfile: Pidfile | None

    def handed_over(self) -> None: ...
