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


def _probe(path: str) -> tuple[int, int | None] | None:
    """(lock holder's pid, pid written in the file), or None if nobody holds the lock.
    F_GETLK asks without taking: a read lock probe would conflict with the writer. The
    holder's pid is 0 when it lives outside our pid namespace."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        lock = fcntl.fcntl(fd, fcntl.F_GETLK, _flock_struct(fcntl.F_WRLCK))
        l_type, _, _, _, l_pid = _unpack_flock(lock)
        if l_type == fcntl.F_UNLCK:
            return None
        return max(l_pid, 0), _parse(os.pread(fd, 64, 0))
    finally:
        os.close(fd)


def is_locked(path: str) -> int | None:
    """The pid of the live master holding `path` (the lock's holder, not the file's text),
    or None if nobody holds it."""
    found = _probe(path)
    if found is None:
        return None
    holder, written = found
    return holder or written or -1


def holder(path: str) -> int | None:
    """The pid to signal for `path`: its lock's holder, or None if nobody holds it. Raises
    PidfileError when the text names another pid (someone rewrote the file) or the holder
    cannot be seen from here: the pid written in a file is never trusted alone."""
    found = _probe(path)
    if found is None:
        return None
    pid, written = found
    if pid <= 0:
        raise PidfileError(f"{path} is locked by a process outside this pid namespace")
    if written is not None and written != pid:
        raise PidfileError(
            f"{path} names pid {written} but is locked by pid {pid}: refusing to trust it"
        )
    return pid


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
                locker = _lock_holder(fd) or _parse(os.pread(fd, 64, 0))
                os.close(fd)
                if locker is None and attempt < 10:
                    # a concurrent start was renaming its written file over the empty one
                    # we locked against: the path names the holder's file now, look again
                    continue
                raise AlreadyRunning(self.path, locker)
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
        tmp, fd = self._create_temp()
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

    def _create_temp(self) -> tuple[str, int]:
        """A new file of our own beside the pidfile: O_EXCL and an unguessable name, so a
        file another user planted in a shared directory is never the one we write."""
        for _ in range(8):
            tmp = f"{self.path}.{self.pid}.{os.urandom(4).hex()}.tmp"
            try:
                return tmp, _open_nofollow(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL)
            except PidfileError:
                if not os.path.lexists(tmp):
                    raise
        raise PidfileError(f"cannot create a temporary file beside {self.path}")

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
