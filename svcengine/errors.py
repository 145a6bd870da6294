"""Exit statuses, in one place, and the start-up error that carries one.

sysexits(3) values (os.EX_*), so a script or a unit's `RestartPreventExitStatus=` can tell
a bad config from a lost race. Users see these numbers: they do not change.
"""

from __future__ import annotations

import os

EX_OTHER = 1  # anything else: a worker that never booted, an unhealthy `ctl check`
EX_UNAVAILABLE = os.EX_UNAVAILABLE  # 69: `ctl`: the service is not running or does not answer
EX_OSERR = os.EX_OSERR  # 71: cannot fork (the daemon launcher)
EX_CANTCREAT = os.EX_CANTCREAT  # 73: already running: the pidfile/control socket is held
EX_NOPERM = os.EX_NOPERM  # 77: `ctl`: not allowed to talk to the master
EX_CONFIG = os.EX_CONFIG  # 78: the config (file, flags or create() options) is wrong

EX_RUNNING = EX_CANTCREAT


class StartError(Exception):
    """A start-up failure with the exit status it should produce."""

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        super().__init__(message)


def printable(text: str) -> str:
    """One line, whatever the file held: control characters shown escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class ConfigError(Exception):
    """A configuration problem; the CLI turns it into exit status 78."""

    def __init__(self, message: str, key: str | None = None, source: str | None = None):
        self.key = key
        self.source = source
        where = []
        if key:
            where.append(f"key '{key}'")
        if source:
            where.append(f"in {source}")
        text = f"{' '.join(where)}: {message}" if where else message
        super().__init__(printable(text))
