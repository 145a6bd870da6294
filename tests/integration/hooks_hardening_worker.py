"""Hooks for test_hardening_worker.py: a process in the master's own process group."""

from __future__ import annotations

import subprocess

from apps_hardening_worker import write_pid_file


def when_ready(server: object) -> None:
    """A sentinel in the master's process group: signalling that group would kill it."""
    sentinel = subprocess.Popen(["sleep", "3600"])
    write_pid_file("sentinel.pid", sentinel.pid)
