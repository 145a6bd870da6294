"""Unicorn's `.oldbin`: while an upgrade runs, the old master's pidfile is `<pidfile>.oldbin`,
and the new master takes `<pidfile>` once it is ready."""

from __future__ import annotations

import logging
import os

from ..unix.pidfile import Pidfile, PidfileError, is_locked

log = logging.getLogger("svcengine.upgrade")


def to_oldbin(pidfile: Pidfile | None) -> None:
    """USR2. A pidfile someone removed does not stop the upgrade."""
    if pidfile is None:
        return
    try:
        pidfile.rename(pidfile.path + ".oldbin")
    except PidfileError as exc:
        log.warning("upgrade: %s; upgrading without a pidfile", exc)


def from_oldbin(pidfile: Pidfile | None) -> None:
    """A rollback: the pidfile names this master again, even if it was removed meanwhile."""
    if pidfile is None:
        return
    path = pidfile.path.removesuffix(".oldbin")
    if path != pidfile.path:
        try:
            pidfile.rename(path)
            return
        except PidfileError as exc:
            log.warning("upgrade: %s; writing %s again", exc, path)
    elif pidfile.names_us():
        return
    try:
        pidfile.rewrite(path)
    except (PidfileError, OSError) as exc:
        log.error("cannot restore the pidfile %s: %s", path, exc)


def take_pidfile(pid_path: str | None) -> Pidfile | None:
    """The new master's first READY: the pidfile is ours (the old one holds `.oldbin`)."""
    if not pid_path:
        return None
    pidfile = Pidfile(pid_path)
    taken: Pidfile | None = pidfile
    try:
        pidfile.acquire()
    except PidfileError as exc:
        log.error("upgrade: cannot take the pidfile: %s", exc)
        taken = None
    remove_stale(os.path.abspath(pid_path) + ".oldbin")
    return taken


def remove_stale(path: str) -> None:
    """A `.oldbin` no live master holds (its master was killed mid-upgrade): a script
    sending QUIT to the pid in it would hit whatever process reuses that pid."""
    if os.path.exists(path) and not is_locked(path):
        try:
            os.unlink(path)
            log.warning("upgrade: removed %s: the old master left it behind", path)
        except OSError:
            pass
