"""Logging set-up shared by the master and its workers.

Everything goes to file descriptor 2: stderr in the foreground, or the log
file dup'ed onto fds 1 and 2 so that a worker's print() and a crashing
interpreter's traceback land in the same place as logging output. USR1 reopens
the path and dups it again, which is what logrotate's rename+create needs.
Under journald (JOURNAL_STREAM names our stderr), lines carry `<N>` priority
prefixes and no timestamp: journald adds its own.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import sys

_label = "master"
_saved_stderr: int | None = None  # the stderr we started with, for start-up errors

_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def set_label(label: str) -> None:
    """Name this process in every line it logs: 'master' or 'worker[3]'."""
    global _label
    _label = label


class _Context(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # a thread worker logs under its thread's name, the rest under the process's label
        name = record.threadName or ""
        record.label = name if name.startswith("worker[") else _label
        record.priority = _PRIORITY.get(record.levelno, 6)
        return True


def under_journald() -> bool:
    """True when stderr is the journal stream systemd gave us."""
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not dev or not ino:
        return False
    try:
        st = os.fstat(2)
    except OSError:
        return False
    return f"{st.st_dev}:{st.st_ino}" == value


def formatter(journal: bool) -> logging.Formatter:
    if journal:
        return logging.Formatter("<%(priority)d>%(label)s[%(process)d]: %(message)s")
    return logging.Formatter(
        "%(asctime)s %(levelname)s [%(process)d] %(label)s: %(message)s",
    )


_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK


def _open_log(path: str) -> None:
    """Open `path` onto fds 1 and 2: a regular file only, never through a symlink.

    A root master writes here, and whoever can write the log directory could swap
    the file for a symlink to any file (nginx, CVE-2016-1247); O_NONBLOCK keeps a
    FIFO put in its place from blocking the open. On refusal fds 1 and 2 are untouched.
    """
    try:
        fd = os.open(path, _FLAGS, 0o640)
    except OSError as exc:
        raise _refusal(path) or exc from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _refusal(path) or OSError(errno.EINVAL, NOT_REGULAR, path)
        os.set_blocking(fd, True)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    finally:
        os.close(fd)


NOT_REGULAR = "is not a regular file (leave `log` unset to log to stderr)"


def _refusal(path: str) -> OSError | None:
    """The clear reason an open was refused, when `path` is not a plain file."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return None
    if stat.S_ISLNK(mode):
        return OSError(
            errno.ELOOP, "is a symbolic link; refused: a log file must be a regular file", path
        )
    if not stat.S_ISREG(mode):
        return OSError(errno.EINVAL, NOT_REGULAR, path)
    return None


def _is_file(fd: int, path: str) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def setup(level: str = "info", path: str | None = None) -> logging.Logger:
    """Configure the root logger to write to fd 2 (and fd 2 to `path`, if set)."""
    global _saved_stderr
    if path:
        sys.stdout.flush()
        sys.stderr.flush()
        if _saved_stderr is None and not _is_file(2, path):
            # fd 2 is a terminal or a unit's stream: keep it for start-up errors. (After an
            # upgrade it already is our log file, and keeping it would pin a rotated file.)
            _saved_stderr = os.dup(2)
            os.set_inheritable(_saved_stderr, False)
        try:
            _open_log(path)
        except OSError:
            forget_saved_stderr()  # fd 2 is still where start-up errors go
            raise
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_svcengine", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._svcengine = True  # type: ignore[attr-defined]
    handler.addFilter(_Context())
    handler.setFormatter(formatter(journal=not path and under_journald()))
    root.addHandler(handler)
    root.setLevel(level.upper())
    return logging.getLogger("svcengine")


def set_level(level: str) -> None:
    logging.getLogger().setLevel(level.upper())


def reopen(path: str | None) -> None:
    """Point fds 1 and 2 at a fresh open of `path` (after logrotate renamed it)."""
    if not path:
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    _open_log(path)


def chown_log(uid: int, gid: int) -> None:
    """Give the open log file (fd 2) to the workers' user, so they can reopen it.

    Through the descriptor, never by path: the path may have been swapped for a
    symlink since it was opened.
    """
    os.fchown(2, uid, gid)


def _configured() -> bool:
    return any(getattr(h, "_svcengine", False) for h in logging.getLogger().handlers)


def tell_operator(message: str) -> None:
    """A start-up error: to the log, and to the terminal or unit we started from, once: when
    the log is that stderr (a container's or a unit's) the log line is enough, and with no
    handler of ours set up yet logging's last resort would reach stderr on its own as well."""
    if _configured():
        logging.getLogger("svcengine").error("%s", message)
        if _saved_stderr is None:
            return
    if _saved_stderr is not None:
        try:
            os.write(_saved_stderr, f"svcengine: {message}\n".encode())
        except OSError:
            pass
    else:
        print(f"svcengine: {message}", file=sys.stderr)


def forget_saved_stderr() -> None:
    """In a worker: the master's saved stderr is not ours to keep open."""
    global _saved_stderr
    if _saved_stderr is not None:
        try:
            os.close(_saved_stderr)
        except OSError:
            pass
        _saved_stderr = None
