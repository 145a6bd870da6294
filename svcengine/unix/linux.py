"""The Linux-only system calls svcengine makes, decided once at import.

svcengine supports Linux only (README, pyproject's classifiers). The HAS_* flags say what
this kernel and Python offer; where a call has a fallback (prctl: the life pipe carries the
orphan guarantee alone) the function reports the feature unavailable instead of raising.
Callers never test the platform themselves, and call none of these outside svcengine/unix/
(tests/unit/test_unix_fence.py checks): pipe() and memfd() fence os.pipe2 and
os.memfd_create (Linux and BSD calls, absent on macOS) like the rest.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import struct
import sys

PR_SET_PDEATHSIG = 1
PR_GET_PDEATHSIG = 2
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
CAP_SETGID = 6
CAP_SETUID = 7

IS_LINUX = sys.platform.startswith("linux")
HAS_PIDFD = hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal")  # Linux 5.3+
HAS_MEMFD = hasattr(os, "memfd_create")
HAS_PIPE2 = hasattr(os, "pipe2")

_libc: ctypes.CDLL | None = None
if IS_LINUX:
    try:
        _libc = ctypes.CDLL("libc.so.6", use_errno=True)  # find_library() would fork ldconfig
    except OSError:
        import ctypes.util  # the fallback alone: it imports subprocess, shutil, tempfile

        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    _libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    _libc.prctl.restype = ctypes.c_int


def _prctl(option: int, arg: int) -> None:
    if _libc is None:
        raise OSError("prctl is Linux-only")
    if _libc.prctl(option, arg, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def fork_bare() -> int:
    """fork(2) itself, without CPython's at-fork work; os.fork() where there is no libc.

    os.fork() runs the interpreter's at-fork steps and every os.register_at_fork
    callback (threading's, logging's, random's reseed): ~0.5 ms on this kind of
    machine, most of it page faults on pages it writes. Only for a child that runs a
    few lines and leaves with os._exit(), forked by a process with a single thread (no
    lock, the GIL included, can be held by a thread the child lacks). glibc's own fork
    handlers run, so malloc and the thread id are right in the child.
    """
    if _libc is None:
        return os.fork()
    pid = int(_libc.fork())
    if pid < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return pid


def single_threaded() -> bool:
    """One thread in this process, counting those CPython's threading module never saw."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def set_pdeathsig(signum: int) -> bool:
    """Ask the kernel to send `signum` when the forking thread's process dies.

    Returns False where unsupported. The caller must re-check getppid()
    afterwards: a parent that died before this call sends nothing.
    """
    if _libc is None:
        return False
    _prctl(PR_SET_PDEATHSIG, signum)
    return True


def can_change_ids() -> bool:
    """Whether this process may take another uid, gid and groups (CAP_SETUID and CAP_SETGID).

    Root normally may; a non-root user, as in a container run with `--user` or
    `runAsNonRoot`, may not. Outside Linux: being root is the answer.
    """
    if not IS_LINUX:
        return os.geteuid() == 0
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    eff = int(line.split()[1], 16)
                    return bool(eff & (1 << CAP_SETUID)) and bool(eff & (1 << CAP_SETGID))
    except (OSError, ValueError, IndexError):
        pass
    return os.geteuid() == 0


def _get_int(option: int) -> int:
    """A prctl that stores its answer through an int pointer."""
    if _libc is None:
        return 0
    value = ctypes.c_int(0)
    if _libc.prctl(option, ctypes.addressof(value), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return value.value


def get_pdeathsig() -> int:
    return _get_int(PR_GET_PDEATHSIG)


def set_child_subreaper(on: bool = True) -> bool:
    """Make orphaned descendants re-parent to us instead of PID 1 (or stop doing so)."""
    if _libc is None:
        return False
    _prctl(PR_SET_CHILD_SUBREAPER, int(on))
    return True


def is_child_subreaper() -> bool:
    return _get_int(PR_GET_CHILD_SUBREAPER) == 1


def rss_bytes(pid: int) -> int | None:
    """Resident set size from /proc, or None when unreadable."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process, from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of a unix socket's peer, as the kernel recorded them (SO_PEERCRED):
    for a client, the server's as of its listen(). (-1, -1, -1) where there is no such option."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return -1, -1, -1
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, option, _UCRED.size))
    return pid, uid, gid


# --- signal senders (signalfd) and pidfds: the upgrade's hand-over -------------------------
_SIGSET_BYTES = 128  # glibc's sigset_t
_SIGINFO = struct.Struct("=IiiII")  # struct signalfd_siginfo: signo, errno, code, pid, uid
SIGINFO_SIZE = 128


def signalfd(signals: set[int]) -> int | None:
    """A non-blocking signalfd for `signals` (the caller blocks them), or None where
    unsupported: reading it tells who sent each signal, which set_wakeup_fd cannot."""
    if _libc is None:
        return None
    mask = ctypes.create_string_buffer(_SIGSET_BYTES)
    _libc.sigemptyset(mask)
    for signum in signals:
        _libc.sigaddset(mask, ctypes.c_int(signum))
    fd = _libc.signalfd(-1, mask, ctypes.c_int(os.O_NONBLOCK | os.O_CLOEXEC))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(fd)


def read_signals(fd: int) -> list[tuple[int, int]]:
    """(signal number, sender pid) for each signal waiting on a signalfd."""
    out: list[tuple[int, int]] = []
    while True:
        try:
            data = os.read(fd, SIGINFO_SIZE * 16)
        except BlockingIOError:
            return out
        if not data:
            return out
        for i in range(0, len(data) - SIGINFO_SIZE + 1, SIGINFO_SIZE):
            signo, _, _, pid, _ = _SIGINFO.unpack_from(data, i)
            out.append((signo, pid))


def pidfd_open(pid: int) -> int | None:
    """A pidfd for `pid`, or None if it is gone: signals sent through it can never
    reach another process that reused the pid (Linux 5.3+; OSError before that)."""
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return None


def wait_exit(pid: int, timeout: float) -> bool:
    """True once `pid` has exited (or was already gone); False at the timeout."""
    import select

    fd = pidfd_open(pid)
    if fd is None:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], timeout)
        return bool(readable)
    finally:
        os.close(fd)


def pipe(flags: int = os.O_CLOEXEC) -> tuple[int, int]:
    """pipe2(2): both ends get `flags` atomically (no fork between pipe and fcntl)."""
    return os.pipe2(flags)


def memfd(name: str) -> int:
    """An anonymous, close-on-exec memory file (shared with an exec'd child by fd)."""
    return os.memfd_create(name, os.MFD_CLOEXEC)


def pidfd_signal(fd: int, signum: int) -> bool:
    """Signal the process behind a pidfd; False if it has exited."""
    try:
        signal.pidfd_send_signal(fd, signum)
    except ProcessLookupError:
        return False
    return True
