"""chuser / chgroup / chumask: what a worker becomes right after fork.

The master keeps the identity it was started with (it owns the pidfile, the
control socket and privileged listening sockets, and runs no user code but
hooks); each worker drops to the configured user before importing user code,
as Unicorn's `user` directive does. A uid/gid change clears PDEATHSIG, so the
caller re-arms it afterwards.
"""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass


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
        """Raises LookupError (with a one-line message) for an unknown user or group."""
        if chuser is None and chgroup is None:
            return None
        user = find_user(chuser) if chuser else None
        uid = user.pw_uid if user else os.getuid()
        if chgroup:
            gid = find_group(chgroup).gr_gid
        else:
            gid = user.pw_gid if user else os.getgid()
        return cls(uid, gid, user.pw_name if user else None)

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
