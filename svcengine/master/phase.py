"""The master's phase and the one table of the moves between phases.

A leaf module (stdlib only) so the pool, health and report code can name a
phase without importing the lifecycle that changes it. Only Lifecycle.enter()
moves the master from one phase to another, and only along TRANSITIONS
(supervisor's states.py shape: every move written once, FROM -> TO).
"""

from __future__ import annotations

import enum


class Phase(enum.Enum):
    """The master's phase; the pool's meaning depends on it."""

    STARTING = "starting"
    RUNNING = "running"
    RELOADING = "reloading"
    PAUSED = "paused"  # WINCH: workers stopped, master kept
    STOPPING = "stopping"


P = Phase

TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    # every worker ready -> RUNNING; a HUP or WINCH may come before that (READY=1 is then
    # sent when the new generation is ready: announced_ready is a fact, not a phase)
    P.STARTING: frozenset({P.RUNNING, P.RELOADING, P.PAUSED, P.STOPPING}),
    P.RUNNING: frozenset({P.RELOADING, P.PAUSED, P.STOPPING}),
    # the new generation is ready, or the reload was abandoned -> RUNNING
    P.RELOADING: frozenset({P.RUNNING, P.PAUSED, P.STOPPING}),
    # HUP starts the workers again
    P.PAUSED: frozenset({P.RELOADING, P.PAUSED, P.STOPPING}),
    P.STOPPING: frozenset(),  # the end: the master exits once every worker is gone
}

EVERY = frozenset(Phase)
NOT_STOPPING = EVERY - {P.STOPPING}


class IllegalTransition(RuntimeError):
    """A move TRANSITIONS does not allow: a bug in the master, never bad input."""
