"""The one boot sequence every worker type runs, from "the class" to run()'s end.

A forked or spawned process (spawn.boot), a thread (threads.py) and the embedded
worker (embedded.py) each set up what is theirs (signals, pipes, the process
title) and then share these steps: import and construct the class, bind its
stop()/reload() to the runtime (a stop that comes before that is replayed),
after_fork, the stop that came first, READY, run().
"""

from __future__ import annotations

import importlib
import logging
import sys
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..worker import Worker

if TYPE_CHECKING:
    from . import Runtime

log = logging.getLogger("svcengine.master")


def import_worker(spec: str, python_path: list[str]) -> type[Worker]:
    """'package.module:Class' -> the class, with python_path searched first."""
    for entry in reversed(python_path):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    module_name, _, attr = spec.partition(":")
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, Worker)):
        raise TypeError(f"{spec} is not a svcengine.Worker subclass")
    return obj


def construct(
    runtime: Runtime, worker_class: type[Worker] | None, after_fork: Callable[[Worker], object]
) -> Worker:
    """Import (unless given) and construct the worker; bind it; run after_fork. Raises
    whatever the user's code raises: the caller reports it as a boot failure."""
    cfg = runtime.config
    cls = worker_class or import_worker(cfg.worker, cfg.python_path)
    worker = cls(runtime.worker_id, cfg, runtime)
    runtime.bind(worker)
    after_fork(worker)
    return worker


def boot_error(exc: BaseException) -> str:
    """The one-line reason a boot failed, as the master shows it."""
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def exit_code(exc: SystemExit) -> int:
    """sys.exit()'s argument as a process exit status."""
    return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)


def serve(runtime: Runtime, worker: Worker) -> int:
    """A stop that came during the boot, READY (unless the worker says it itself), run().
    0, or 1 if run() raised; SystemExit goes to the caller, which owns the exit."""
    if runtime.stopping:
        worker.stop()
    if worker.ready_on_run:
        runtime.ready()
    try:
        worker.run()
    except Exception:
        log.exception("worker %d: run() raised", runtime.worker_id)
        return 1
    return 0
