"""The mold: a child of the master that imports the app once and forks warm workers.

Pitchfork's design. The master never imports the worker module; the mold does, runs
the `after_mold_ready` hook, freezes its heap (gc.freeze(): a worker's collections
never write to the mold's objects, so their pages stay shared) and then forks a worker
for each request the master sends. It forks twice: the middle process exits at once,
so the worker is re-parented to the master (a child subreaper), which reaps it and
reads its status pipe as it would a worker it forked itself.

The orphan guarantee at every step: the mold has PDEATHSIG and the life pipe; a new
worker arms PDEATHSIG only once the master is its parent (and checks getppid() after),
and its watcher reads the life pipe from the start, which covers the gap between. The
worker boots while the middle process exits (its address space takes a while to tear
down) and waits for that only before READY: the wait is seldom still there by then.

Requests and answers are SOCK_SEQPACKET messages, one per packet:
  master -> mold   `fork WORKER_ID BEAT_INDEX` with the status pipe's write end attached
  master -> mold   `sync`: answered `ok` once every worker forked before is the master's child
  mold -> master   `ready` once (or `ready IMPORT-ERROR` when the import failed: each worker
                   then imports for itself and reports its own boot failure), then
                   `pid N` or `error TEXT` for each fork, `ok` for each sync, in order.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import select
import signal
import socket
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from ..config import Config
from ..spawn import ForkContext, boot_forked, warn_threads
from ..unix import linux as _linux
from ..unix import log as logsetup
from ..unix import proctitle
from ..worker import Worker
from .boot import boot_error, exit_code, import_worker
from .warm import warm

log = logging.getLogger("svcengine.master")

REPARENT_TIMEOUT = 10.0  # s a new worker waits for the middle process to go


@dataclass
class MoldSpec:
    """What a mold keeps from the master that forked it (its generation's config)."""

    generation: int
    config: Config
    master_pid: int
    worker_class: type[Worker] | None  # preload: the master's; else imported here
    life_fd: int
    on_ready: Callable[[], object]  # the after_mold_ready hook
    # a forked worker's boot (spawn.boot with what the mold knows bound in); its last
    # argument is called before READY: False if the worker must not serve
    boot: Callable[[int, int, int, type[Worker] | None, Callable[[], bool]], int]


def spec_from(ctx: ForkContext, generation: int, life_fd: int) -> MoldSpec:
    """The mold's spec, with a worker's boot bound to what it inherited."""

    def boot(
        worker_id: int,
        beat_index: int,
        status_fd: int,
        cls: type[Worker] | None,
        adopted: Callable[[], bool],
    ) -> int:
        return boot_forked(ctx, life_fd, worker_id, beat_index, status_fd, cls, adopted)

    return MoldSpec(
        generation=generation,
        config=ctx.config,
        master_pid=ctx.master_pid,
        worker_class=ctx.worker_class,
        life_fd=life_fd,
        on_ready=ctx.after_mold_ready,
        boot=boot,
    )


def title(name: str, generation: int) -> str:
    return f"svcengine mold gen {generation}" + (f" {name}" if name else "")


def run(spec: MoldSpec, sock: socket.socket) -> int:
    """The mold's life: import, freeze, answer fork requests until the master goes."""
    cfg = spec.config
    logsetup.set_label(f"mold[{spec.generation}]")
    proctitle.set_title(title(cfg.name, spec.generation))
    cls = spec.worker_class
    note = ""
    if cls is None:
        try:
            cls = import_worker(cfg.worker, cfg.python_path)
        except BaseException as exc:  # noqa: BLE001 - each worker imports and reports it
            note = boot_error(exc)
            log.warning("mold could not import %s: %s (each worker will try)", cfg.worker, note)
    if cls is not None:
        spec.on_ready()
        _warm_up(cls)
    warn_threads("the mold forks workers", "the app's import left it")
    warm(cls)  # what each worker would do first, done once here: its pages stay shared
    gc.collect()
    gc.freeze()  # what exists now stays in the shared pages: no collection touches it
    # the middle process only forks and leaves: CPython's at-fork work in it is waste,
    # and skipping it is safe while no other thread can hold a lock (the app's import
    # may have started one: warned above)
    fork = _linux.fork_bare if _linux.single_threaded() else os.fork
    sock.send(b"ready" + (b" " + note.encode("utf-8", "replace")[:3000] if note else b""))
    while True:
        readable, _, _ = select.select([sock.fileno(), spec.life_fd], [], [])
        if spec.life_fd in readable:
            return 0  # the master is gone (PDEATHSIG may have been cleared by a setuid)
        try:
            data, fds, _, _ = socket.recv_fds(sock, 256, 1)
        except OSError:
            return 0
        if not data:
            return 0  # the master closed our socket: this generation is over
        if data == b"sync":
            sock.send(b"ok")  # every middle process before it has been reaped
            continue
        answer, middle = _answer(spec, _Order(sock, 0, 0, -1, cls, fork), data, fds)
        sock.send(answer)
        if middle:
            # after the answer: the master goes on while the middle process tears down.
            # Until it is reaped its worker may not be the master's child yet: a `sync`
            # (launcher.settle(), before an upgrade stops the master being a subreaper)
            # is answered only once it is.
            os.waitpid(middle, 0)


def _warm_up(cls: type[Worker]) -> None:
    try:
        cls.warm_up()
    except Exception:
        log.exception("%s.warm_up() raised; workers start cold", cls.__name__)


@dataclass
class _Order:
    """One fork request, as the mold's three processes pass it along."""

    sock: socket.socket  # the mold's end: closed in the worker
    worker_id: int
    beat_index: int
    status_fd: int
    cls: type[Worker] | None
    fork: Callable[[], int]  # how the mold forks the middle process


def _answer(spec: MoldSpec, base: _Order, data: bytes, fds: list[int]) -> tuple[bytes, int]:
    """The answer to one request, and the middle process still to reap (0: none)."""
    try:
        verb, worker_id, beat_index = data.decode().split()
        if verb != "fork" or len(fds) != 1:
            raise ValueError(f"bad request {data[:80]!r}")
        order = dataclasses.replace(
            base, worker_id=int(worker_id), beat_index=int(beat_index), status_fd=fds[0]
        )
        pid, middle = _fork_worker(spec, order)
    except (OSError, ValueError) as exc:
        return b"error " + str(exc).encode("utf-8", "replace")[:3000], 0
    finally:
        for fd in fds:
            os.close(fd)
    return b"pid %d" % pid, middle


def _fork_worker(spec: MoldSpec, order: _Order) -> tuple[int, int]:
    """Fork twice: the worker's pid (once the middle process said it), and the middle's."""
    report_r, report_w = _linux.pipe()
    try:
        middle = order.fork()
    except OSError:
        os.close(report_r)
        os.close(report_w)
        raise
    if middle == 0:
        os.close(report_r)
        _middle(spec, order, report_w)
    os.close(report_w)
    try:
        data = os.read(report_r, 32)  # one write of a few digits: atomic; EOF would wait
    finally:  # for the middle's exit, whose address-space teardown is what takes time
        os.close(report_r)
    if not data:
        os.waitpid(middle, 0)
        raise OSError(f"cannot fork worker {order.worker_id}: the middle process said nothing")
    return int(data), middle


def _middle(spec: MoldSpec, order: _Order, report_w: int) -> None:
    """The middle process: fork the worker, name it, go."""
    code = 1
    try:
        pid = os.fork()
        if pid == 0:
            os.close(report_w)
            _worker(spec, order)
        try:
            os.setpgid(pid, pid)  # before anyone knows the pid: no signal finds it outside
        except OSError:
            pass  # it did so itself first
        os.write(report_w, b"%d" % pid)
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def _worker(spec: MoldSpec, order: _Order) -> None:
    """The new worker: boot; before READY, wait to be the master's child, arm PDEATHSIG."""
    code = 1
    try:
        try:
            os.setpgid(0, 0)
        except OSError:
            pass
        order.sock.close()

        def adopted() -> bool:
            return _reparented(spec.master_pid) and _arm(spec.config, spec.master_pid)

        code = spec.boot(order.worker_id, order.beat_index, order.status_fd, order.cls, adopted)
    except SystemExit as exc:
        code = exit_code(exc)
    except BaseException:
        traceback.print_exc()
    finally:
        from . import finish

        finish(code)


def _reparented(master_pid: int) -> bool:
    """Wait until the middle process is gone: then the master (a subreaper) is our parent."""
    parent = os.getppid()
    if parent != master_pid:
        _linux.wait_exit(parent, REPARENT_TIMEOUT)  # a pidfd: no polling
    if os.getppid() != master_pid:
        log.error("worker not re-parented to the master (pid %d): exiting", master_pid)
        return False
    return True


def _arm(cfg: Config, master_pid: int) -> bool:
    """PDEATHSIG, then getppid() once more: a master that died before prctl sent nothing."""
    if cfg.worker_pdeathsig:
        _linux.set_pdeathsig(signal.SIGKILL)
    return os.getppid() == master_pid
