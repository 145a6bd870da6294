"""Work every worker would do for the first time, done once in the mold before gc.freeze().

A forked worker shares the mold's pages until it writes to one, and CPython writes to
much of what it only runs: a code object is quickened (its bytecode rewritten in place)
after a few calls, caches fill on first use (a logger's level cache, the handler's
buffers), faulthandler allocates its signal stack on its first register(). What the
mold has already done, no worker does again: those pages stay shared by all of them.
"""

from __future__ import annotations

import faulthandler
import io
import logging
import sys
from typing import Any, TypeGuard

from ..worker import Worker

REHEARSALS = 10  # > CPython 3.11's warm-up of 8 calls: the logging path is quickened here


def warm(cls: type[Worker] | None) -> None:
    """Prepare in the mold what a worker's boot and first log line would do privately."""
    from . import DUMP_SIGNAL

    # the alternate signal stack and the table of user signals stay after unregister()
    faulthandler.register(DUMP_SIGNAL, file=sys.stderr, all_threads=True)
    faulthandler.unregister(DUMP_SIGNAL)
    names = ["svcengine.worker"]
    if cls is not None:
        names.append(f"svcengine.worker.{cls.__name__}")  # Worker.__init__'s logger
    _rehearse_logging([logging.getLogger(name) for name in names])


def _rehearse_logging(loggers: list[logging.Logger]) -> None:
    """Log a few records through the root's stream handlers, into a sink: the record,
    filter, format and emit code is quickened and its lazy state made here. Holding the
    handlers' locks, so no other thread's line can go to the sink."""
    root = logging.getLogger()
    handlers = [h for h in root.handlers if _ours(h)]
    if not handlers or len(handlers) != len(root.handlers):
        return  # a handler the app added could send a rehearsal line anywhere: none at all
    sink = io.StringIO()
    streams = [h.stream for h in handlers]
    for h in handlers:
        h.acquire()
    try:
        for h in handlers:
            h.stream = sink
        for logger in loggers:
            if _own_handlers(logger):
                continue  # its lines would go somewhere we do not sink
            level = max(logging.INFO, logger.getEffectiveLevel())
            for _ in range(REHEARSALS):
                logger.log(level, "rehearsal %d", 1)
            for lv in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR):
                logger.isEnabledFor(lv)  # fills the logger's level cache
    finally:
        for h, stream in zip(handlers, streams, strict=True):
            h.stream = stream
        for h in handlers:
            h.release()


def _ours(h: logging.Handler) -> TypeGuard[logging.StreamHandler[Any]]:
    """A stream handler svcengine's log set-up made (unix/log.py): its stream can be sunk."""
    return isinstance(h, logging.StreamHandler) and bool(getattr(h, "_svcengine", False))


def _own_handlers(logger: logging.Logger) -> bool:
    """Whether `logger`'s records go elsewhere than the root's handlers alone."""
    node: logging.Logger | None = logger
    while node is not None and node is not logging.getLogger():
        if node.handlers or not node.propagate:
            return True
        node = node.parent
    return False
