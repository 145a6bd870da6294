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


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    user: str | None

    @classmethod
    def resolve(cls, chuser: str | None, chgroup: str | None) -> Identity | None:
        if chuser is None and chgroup is None:
            return None
        user = pwd.getpwnam(chuser) if chuser else None
        uid = user.pw_uid if user else os.getuid()
        if chgroup:
            gid = grp.getgrnam(chgroup).gr_gid
        else:
            gid = user.pw_gid if user else os.getgid()
        return cls(uid, gid, chuser)

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
