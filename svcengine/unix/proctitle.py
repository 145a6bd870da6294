"""Process titles through setproctitle, without clobbering /proc/PID/environ.

SPT_NOENV must be in the environment before setproctitle is first imported;
the first 15 bytes of a title also become the comm name ps and pgrep see.
"""

from __future__ import annotations

import os

os.environ.setdefault("SPT_NOENV", "1")

from setproctitle import setproctitle  # noqa: E402


def master_title(name: str, override: str | None) -> str:
    return override or "svcengine master" + (f" {name}" if name else "")


def worker_title(name: str, worker_id: int, override: str | None) -> str:
    return override or f"svcengine worker[{worker_id}]" + (f" {name}" if name else "")


def set_title(title: str) -> None:
    setproctitle(title)
