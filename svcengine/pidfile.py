"""A Unicorn-compatible pidfile: `PID\\n`, written atomically, locked for life.

The lock (fcntl, on the file the path names) is what makes a pidfile live: a
second start finds it locked and refuses, naming the pid; a file nobody holds
is stale and replaced. Writing is temp + rename with the temp file already
locked, so there is no moment when the path names an unlocked or half-written
file. Paths are opened with O_NOFOLLOW: a symlink planted at the pidfile's path
is refused rather than followed.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import struct
from dataclasses import dataclass

log = logging.getLogger("svcengine.pidfile")

EX_RUNNING = 73  # sysexits EX_CANTCREAT: the pidfile is held by a running master


class PidfileError(Exception):
    """The pidfile cannot be used (symlink, permission, ...)."""


class AlreadyRunning(PidfileError):
    def __init__(self, path: str, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        who = f"pid {pid}" if pid else "another process"
        super().__init__(f"already running: {path} is locked by {who}")


def _parse(data: bytes) -> int | None:
    text = data.strip()
    return int(text) if text.isdigit() else None


def read_pid(path: str) -> int | None:
    """For other processes only: opening and closing the file drops our own
    POSIX locks on it, so the holder reads through its own fd (pread)."""
    try:
        with open(path, "rb") as f:
            return _parse(f.read(64))
    except OSError:
        return None


def _open_nofollow(path: str, flags: int) -> int:
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PidfileError(f"refusing pidfile {path}: it is a symbolic link") from None
        raise PidfileError(f"cannot open pidfile {path}: {exc.strerror}") from None


def _try_lock(fd: int) -> bool:
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _lock_holder(fd: int) -> int | None:
    """The pid holding a write lock on fd's file (the file may not be written yet)."""
    l_type, _, _, _, l_pid = _unpack_flock(
        fcntl.fcntl(fd, fcntl.F_GETLK, _flock_struct(fcntl.F_WRLCK))
    )
    return l_pid if l_type != fcntl.F_UNLCK and l_pid > 0 else None


def is_locked(path: str) -> int | None:
    """The pid of the live master holding `path`, or None if nobody holds it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        # F_GETLK asks without taking: a read lock probe would conflict with the writer
        lock = fcntl.fcntl(fd, fcntl.F_GETLK, _flock_struct(fcntl.F_WRLCK))
        l_type, _, _, _, l_pid = _unpack_flock(lock)
        if l_type == fcntl.F_UNLCK:
            return None
        return read_pid(path) or l_pid or -1
    finally:
        os.close(fd)


_FLOCK = struct.Struct("hhqqi")  # struct flock on Linux: type, whence, start, len, pid


def _flock_struct(l_type: int) -> bytes:
    return _FLOCK.pack(l_type, os.SEEK_SET, 0, 0, 0).ljust(64, b"\0")


def _unpack_flock(data: bytes) -> tuple[int, int, int, int, int]:
    return _FLOCK.unpack(data[: _FLOCK.size])


@dataclass
class Pidfile:
    path: str
    pid: int = 0
    fd: int = -1

    def acquire(self, pid: int | None = None) -> None:
        """Lock and write the pidfile for `pid`, or raise AlreadyRunning."""
        self.pid = pid or os.getpid()
        self.path = os.path.abspath(self.path)
        for attempt in range(1, 100):
            fd = _open_nofollow(self.path, os.O_RDWR | os.O_CREAT)
            if not _try_lock(fd):
                holder = _parse(os.pread(fd, 64, 0)) or _lock_holder(fd)
                os.close(fd)
                if holder is None and attempt < 10:
                    # a concurrent start was renaming its written file over the empty one
                    # we locked against: the path names the holder's file now, look again
                    continue
                raise AlreadyRunning(self.path, holder)
            # the path may have been replaced between open and lock: hold the right file
            try:
                same = os.stat(self.path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        else:
            raise PidfileError(f"cannot lock pidfile {self.path}: it keeps being replaced")
        stale = _parse(os.pread(fd, 64, 0))
        if stale and stale != self.pid:
            log.warning("replacing stale pidfile %s (pid %d is not running it)", self.path, stale)
        self._write_locked(fd)

    def _write_locked(self, old_fd: int) -> None:
        tmp = f"{self.path}.{self.pid}.tmp"
        fd = _open_nofollow(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, f"{self.pid}\n".encode())
            os.fsync(fd)
            os.rename(tmp, self.path)
        except BaseException:
            os.close(fd)
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        os.close(old_fd)
        self.fd = fd

    def names_us(self) -> bool:
        """Whether our path still names the file we hold (not removed, not replaced)."""
        if self.fd < 0:
            return False
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except OSError:
            return False
        mine = os.fstat(self.fd)
        return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)

    def rename(self, new_path: str) -> None:
        """Move the held pidfile (Unicorn's `.oldbin` during an upgrade).

        PidfileError, and nothing moved, when the path no longer names our file:
        renaming whatever someone put there instead would be wrong."""
        if not self.names_us():
            raise PidfileError(f"pidfile {self.path} was removed or replaced")
        try:
            os.rename(self.path, new_path)
        except OSError as exc:
            raise PidfileError(f"cannot rename pidfile {self.path}: {exc.strerror}") from None
        self.path = new_path

    def rewrite(self, path: str) -> None:
        """Write and lock a fresh pidfile at `path` for our pid, dropping the one we held
        (removed by someone): AlreadyRunning if another live master holds `path`."""
        fresh = Pidfile(path)
        fresh.acquire(self.pid)
        if self.fd >= 0:
            os.close(self.fd)
        self.path, self.fd = fresh.path, fresh.fd

    def release(self) -> None:
        """Remove the file if it still names us; drop the lock either way."""
        if self.fd < 0:
            return
        try:
            ours = os.stat(self.path, follow_symlinks=False).st_ino == os.fstat(self.fd).st_ino
        except FileNotFoundError:
            ours = False
        if ours and _parse(os.pread(self.fd, 64, 0)) == self.pid:
            try:
                os.unlink(self.path)
            except OSError as exc:
                log.warning("cannot remove pidfile %s: %s", self.path, exc.strerror)
        os.close(self.fd)
        self.fd = -1
