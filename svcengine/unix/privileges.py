"""chuser / chgroup / chumask: what a worker becomes right after fork.

The master keeps the identity it was started with (it owns the pidfile, the
control socket and privileged listening sockets, and runs no user code but
hooks); each worker drops to the configured user before importing user code,
as Unicorn's `user` directive does. A uid/gid change clears PDEATHSIG, so the
caller re-arms it afterwards.

A master without the privilege to switch (a container's non-root user) runs its
workers as itself: a chuser/chgroup naming that same identity is a no-op, and
one naming anybody else is refused at start, not retried in a crash loop.
"""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass

from . import linux as _linux


class IdentityError(ValueError):
    """chuser/chgroup name an identity this master cannot give its workers."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def find_user(spec: str) -> pwd.struct_passwd:
    """A user by name or, as systemd's User= and gunicorn's --user, by numeric uid; the
    uid must have a passwd entry (workers get its groups, HOME and USER)."""
    try:
        return pwd.getpwnam(spec)
    except KeyError:
        pass
    if spec.isdecimal() and spec.isascii():
        try:
            return pwd.getpwuid(int(spec))
        except (KeyError, OverflowError, ValueError):
            raise LookupError(f"no user with uid {spec}") from None
    raise LookupError(f"no such user {spec!r}")


def find_group(spec: str) -> grp.struct_group:
    """A group by name or numeric gid, which must have a group entry."""
    try:
        return grp.getgrnam(spec)
    except KeyError:
        pass
    if spec.isdecimal() and spec.isascii():
        try:
            return grp.getgrgid(int(spec))
        except (KeyError, OverflowError, ValueError):
            raise LookupError(f"no group with gid {spec}") from None
    raise LookupError(f"no such group {spec!r}")


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    user: str | None

    @classmethod
    def resolve(cls, chuser: str | None, chgroup: str | None) -> Identity | None:
        """The identity to switch workers to; None when there is nothing to switch.

        Raises LookupError (with a one-line message) for an unknown user or group, and
        IdentityError when a switch is needed that this process may not make.
        """
        if chuser is None and chgroup is None:
            return None
        user = find_user(chuser) if chuser else None
        uid = user.pw_uid if user else os.getuid()
        if chgroup:
            gid = find_group(chgroup).gr_gid
        else:
            gid = user.pw_gid if user else os.getgid()
        if _linux.can_change_ids():
            return cls(uid, gid, user.pw_name if user else None)
        me = os.geteuid()
        if uid != me:
            raise IdentityError(
                "chuser",
                f"cannot run workers as {chuser!r} (uid {uid}): the master runs as uid {me}"
                " without the privilege to switch users (start it as root or as that user)",
            )
        if chgroup and gid != os.getegid():
            raise IdentityError(
                "chgroup",
                f"cannot run workers in group {chgroup!r} (gid {gid}): the master runs as"
                f" gid {os.getegid()} without the privilege to switch groups",
            )
        return None  # already that user: initgroups() would only fail with EPERM

    def apply(self) -> None:
        """Switch this process for good: supplementary groups, gid, then uid."""
        if self.user:
            os.initgroups(self.user, self.gid)
        else:
            os.setgroups([self.gid])
        os.setgid(self.gid)
        os.setuid(self.uid)
        if self.user:
            entry = pwd.getpwuid(self.uid)
            os.environ.update(HOME=entry.pw_dir, USER=entry.pw_name, LOGNAME=entry.pw_name)
