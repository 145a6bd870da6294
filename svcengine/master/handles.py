"""The master's typed names for a worker (Key) and for how it ended (ExitStatus).

A process worker is known by its pid, a thread worker by a ThreadKey: the two are never
equal, so an orphan reaped with pid 3 is never taken for thread 3 (what the negative fake
pids of old were for). How a worker ended is an ExitStatus whether waitpid() reported it
or a thread's `exited N` line did; the public `after_worker_exit` hook still gets the
waitpid-style int it always got (ExitStatus.wait_status()).
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from typing import TypeAlias


@dataclass(frozen=True)
class ThreadKey:
    """A thread worker: the serial its launcher gave it (it has no pid of its own)."""

    serial: int

    def __str__(self) -> str:
        return f"thread {self.serial}"


Key: TypeAlias = int | ThreadKey  # a process worker's pid, or a thread worker's ThreadKey


def label(key: Key) -> str:
    """How the log names a worker: `pid 1234` or `thread 3`."""
    return str(key) if isinstance(key, ThreadKey) else f"pid {key}"


def pid_of(key: Key) -> int:
    """A process worker's pid; a launcher of processes is never handed a ThreadKey."""
    if isinstance(key, ThreadKey):
        raise TypeError(f"{key} is not a process")
    return key


@dataclass(frozen=True)
class ExitStatus:
    """A worker's end: exit(code), or killed by a signal (with or without a core)."""

    code: int | None = None
    signal: int | None = None
    core: bool = False

    @classmethod
    def exited(cls, code: int) -> ExitStatus:
        return cls(code=code & 0xFF)  # what the parent of a process sees of exit(code)

    @classmethod
    def killed(cls, signum: int, core: bool = False) -> ExitStatus:
        return cls(signal=signum, core=core)

    @classmethod
    def from_wait(cls, status: int) -> ExitStatus:
        """From waitpid()'s status (reaped with WNOHANG, never stopped or continued)."""
        if os.WIFSIGNALED(status):
            return cls.killed(os.WTERMSIG(status), os.WCOREDUMP(status))
        if os.WIFEXITED(status):
            return cls.exited(os.WEXITSTATUS(status))
        raise ValueError(f"not an exit status: {status:#x}")

    @classmethod
    def from_line(cls, text: str) -> ExitStatus:
        """From a thread's `exited N` line: N is run()'s exit code (garbage: 1, a failure)."""
        return cls.exited(int(text) if text.strip().lstrip("-").isdigit() else 1)

    def wait_status(self) -> int:
        """The same end as waitpid() reports it: what `after_worker_exit` hooks get."""
        if self.signal is not None:
            return self.signal | (0x80 if self.core else 0)
        return ((self.code or 0) & 0xFF) << 8

    def __str__(self) -> str:
        """'killed by SIGKILL (core dumped)' / 'exited with status 3', as the log says it."""
        if self.signal is not None:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = f"signal {self.signal}"
            return f"killed by {name}" + (" (core dumped)" if self.core else "")
        return f"exited with status {self.code}"
