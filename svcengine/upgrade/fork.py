"""Start the new master: a double fork, then exec with the sockets at fds 3.. (socket activation).

The new master is a plain fork of the old one's main thread with everything reset before
exec: no PDEATHSIG (fork clears it), no life pipe (CLOEXEC), no blocked or ignored signals.
It must outlive its parent.
"""

from __future__ import annotations

import fcntl
import os
import signal
import sys
import traceback

from ..protocol import env as protoenv
from ..unix import linux as _linux
from ..unix.sockets import Listener


def command_line(configured: list[str] | None) -> list[str]:
    """What the new master runs: the configured command, or ours again."""
    if configured:
        return list(configured)
    return [sys.executable, *sys.orig_argv[1:]]


def spawn_new_master(
    argv: list[str], listeners: list[Listener], old_pid: int, cwd: str, channel: int
) -> int:
    """Double-fork; the grandchild execs argv with the sockets at fds 3.. (socket activation).

    The double fork makes the new master a child of init (systemd) from the start:
    systemd 252 marks a MAINPID= that is not its own child as "alien" and then
    never waits for it on stop, so `systemctl stop` would skip the graceful part.
    A subreaper master would adopt the orphaned new master itself, so it stops
    being one until the middle process has exited.
    """
    reaper = _linux.is_child_subreaper()
    if reaper:
        _linux.set_child_subreaper(False)
    try:
        return _double_fork(argv, listeners, old_pid, cwd, channel)
    finally:
        if reaper:
            _linux.set_child_subreaper(True)


def _double_fork(
    argv: list[str], listeners: list[Listener], old_pid: int, cwd: str, channel: int
) -> int:
    r, w = _linux.pipe()
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, set(signal.valid_signals()))
    try:
        middle = os.fork()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        os.close(r)
        os.close(w)
        raise
    if middle == 0:
        try:
            os.close(r)
            pid = os.fork()
            if pid == 0:
                os.close(w)
                _exec_new_master(argv, listeners, old_pid, cwd, channel)
            os.write(w, str(pid).encode())
        finally:
            os._exit(0)
    signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    os.close(w)
    os.waitpid(middle, 0)
    data = os.read(r, 32)
    os.close(r)
    if not data.isdigit():
        raise OSError("the new master could not be forked")
    return int(data)


def _exec_new_master(
    argv: list[str], listeners: list[Listener], old_pid: int, cwd: str, channel: int
) -> None:
    try:
        signal.set_wakeup_fd(-1)
        for signum in signal.valid_signals():
            if signum not in (signal.SIGKILL, signal.SIGSTOP):
                try:
                    signal.signal(signum, signal.SIG_DFL)
                except (OSError, ValueError):
                    pass
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        # park the sockets above any fd we will overwrite, then lay them out at 3..
        # (the hand-over channel goes right after them, and is not a listening socket)
        start = 3 + len(listeners) + 64
        fds = [s.fileno() for s in listeners] + [channel]
        parked = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, start) for fd in fds]
        for i, fd in enumerate(parked):
            os.dup2(fd, 3 + i, inheritable=True)
        env = dict(os.environ)
        for key in (protoenv.LISTEN_FDS, protoenv.LISTEN_PID, protoenv.LISTEN_FDNAMES):
            env.pop(key, None)  # systemd's, for us: the new master gets ours, or none
        names = [s.name for s in listeners]
        env.update(protoenv.upgrade_env(names, old_pid, os.getpid(), 3 + len(listeners)))
        if "WATCHDOG_USEC" in env:
            env["WATCHDOG_PID"] = str(os.getpid())  # the watchdog follows the new main pid
        os.chdir(cwd)
        os.execve(argv[0], argv, env)
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(127)
