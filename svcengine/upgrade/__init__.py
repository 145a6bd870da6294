"""Zero-downtime upgrade (USR2), both sides, in one package.

- upgrader.py: the old master's side (Upgrader): start the new master, then hand over or
  roll back; it talks to the master only through host.UpgradeHost.
- fork.py: the double fork and exec of the new master, with the sockets at fds 3..
- handover.py: the channel between the two masters and the new master's side (Successor).
- oldbin.py: Unicorn's `<pidfile>.oldbin` moves.
- host.py: the narrow Protocols the master and the server meet here.

The environment names that cross the exec are in protocol/env.py. Loaded only on USR2 (old
side) or in a new master an upgrade started: `import svcengine.upgrade` is never on the
start-up path of a plain master.
"""

from __future__ import annotations

from .handover import Successor
from .state import Upgrade, UpgradeState
from .upgrader import Upgrader

__all__ = ["Successor", "Upgrade", "UpgradeState", "Upgrader"]
