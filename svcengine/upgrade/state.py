"""One upgrade attempt as the old master sees it (and `svcengine ctl status` shows it)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ..timers import Timer


class UpgradeState(enum.Enum):
    RUNNING = "in progress"
    HANDED_OVER = "handed over"
    FAILED = "failed"
    STOPPED = "stopped"  # this master was stopped before the hand-over, the new one with it


@dataclass
class Upgrade:
    """The old master's view of one upgrade attempt."""

    pid: int  # 0: refused before any fork
    started_at: float
    attempt: int  # counts USR2s, so `ctl upgrade` can tell its own outcome from an older one
    state: UpgradeState = UpgradeState.RUNNING
    reason: str = ""
    timer: Timer | None = field(default=None, repr=False)
    greeted: bool = False  # the new master said hello on the channel: it hands over there
    warned: bool = False  # about Unicorn's before_fork recipe

    def as_dict(self) -> dict[str, object]:
        return {
            "pid": self.pid,
            "attempt": self.attempt,
            "state": self.state.value,
            "reason": self.reason,
        }
