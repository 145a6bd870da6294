"""signal.signal() and signal.pthread_sigmask() without their enum conversions.

The standard library's wrappers turn every signal number into a `signal.Signals` member
and back, in Python. In a freshly forked worker, whose every first touch of an object
copies a page, its handful of calls cost ~0.65 ms and ~220 kB of private memory
(measured: bench/floor.py's method, docs/benchmarks.md): the C functions underneath
take and give plain ints. Used where a new child sets itself up; elsewhere the
wrappers' enums are worth having.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

_c: Any = importlib.import_module("_signal")  # the C half of `signal`, in every CPython

Handler = Callable[[int, FrameType | None], Any] | int


def set_handler(signum: int, handler: Handler) -> None:
    """signal.signal(); SIG_DFL and SIG_IGN as the plain ints the C function knows."""
    _c.signal(signum, int(handler) if isinstance(handler, int) else handler)


def set_mask(how: int, signums: Iterable[int]) -> set[int]:
    """pthread_sigmask(); the previous mask, as ints."""
    old: set[int] = _c.pthread_sigmask(how, signums)
    return old
