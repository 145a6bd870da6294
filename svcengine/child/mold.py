"""The mold: a child of the master that imports the app once and forks warm workers.

Pitchfork's design. The master never imports the worker module; the mold does, runs
the `after_mold_ready` hook, freezes its heap (gc.freeze(): a worker's collections
never write to the mold's objects, so their pages stay shared) and then forks a worker
for each request the master sends. It forks twice (child/moldfork.py): the middle
process exits at once, so the worker is re-parented to the master (a child
subreaper), which reaps it and reads its status pipe as it would a worker it forked
itself.

The orphan guarantee at every step: the mold has PDEATHSIG and the life pipe; a new
worker arms PDEATHSIG only once the master is its parent (and checks getppid() after),
and its watcher reads the life pipe from the start, which covers the gap between. The
worker boots while the middle process exits (its address space takes a while to tear
down) and waits for that only before READY: the wait is seldom still there by then.

Requests and answers are SOCK_SEQPACKET messages, one per packet:
  master -> mold   `fork WORKER_ID BEAT_INDEX` with the status pipe's write end attached;
                   many may be in flight: the answers name the worker id
  master -> mold   `sync`: answered `ok` once every worker forked before is the master's child
  mold -> master   `ready` once (or `ready IMPORT-ERROR` when the import failed: each worker
                   then imports for itself and reports its own boot failure), `ok` for
                   each sync
  middle -> master `pid N WORKER_ID` for each fork (or `error WORKER_ID TEXT`, from the
                   middle or the mold), in no set order; a late one, for a worker the
                   master no longer waits for, is dropped
"""

from __future__ import annotations

import gc
import logging
import os
import select
import socket
from collections.abc import Callable
from dataclasses import dataclass

from ..config import Config
from ..spawn import ForkContext, boot_forked, warn_threads
from ..unix import linux as _linux
from ..unix import log as logsetup
from ..unix import proctitle
from ..worker import Worker
from .boot import boot_error, import_worker
from .moldfork import Boot, Middles, Order, fork_worker
from .warm import warm

log = logging.getLogger("svcengine.master")


@dataclass
class MoldSpec:
    """What a mold keeps from the master that forked it (its generation's config)."""

    generation: int
    config: Config
    master_pid: int
    worker_class: type[Worker] | None  # preload: the master's; else imported here
    life_fd: int
    on_ready: Callable[[], object]  # the after_mold_ready hook
    boot: Boot  # a forked worker's boot (spawn.boot_forked with what the mold knows)


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
    order = Order(sock, 0, 0, -1, cls, fork)
    middles = Middles(sock)
    while True:
        readable, _, _ = select.select([sock.fileno(), spec.life_fd, *middles.fds()], [], [])
        if spec.life_fd in readable:
            return 0  # the master is gone (PDEATHSIG may have been cleared by a setuid)
        for fd in readable:
            if fd not in (sock.fileno(), spec.life_fd):
                middles.exited(fd)
        if sock.fileno() not in readable:
            continue
        try:
            data, fds, _, _ = socket.recv_fds(sock, 256, 1)
        except OSError:
            return 0
        if not data:
            return 0  # the master closed our socket: this generation is over
        if data == b"sync":
            # once every middle process is gone, every worker so far is the master's
            # child: an upgrade may then stop the master being a subreaper for a moment
            middles.reap_all()
            sock.send(b"ok")
            continue
        _answer(spec, order, data, fds, middles)


def _warm_up(cls: type[Worker]) -> None:
    try:
        cls.warm_up()
    except Exception:
        log.exception("%s.warm_up() raised; workers start cold", cls.__name__)


def _answer(spec: MoldSpec, base: Order, data: bytes, fds: list[int], middles: Middles) -> None:
    """Fork a worker for one request; the middle process answers the master. Lean on
    purpose: every page the mold writes after a fork is copied (it is shared now)."""
    worker_id = -1
    try:
        verb, wid, beat_index = data.split()
        worker_id = int(wid)
        if verb != b"fork" or len(fds) != 1:
            raise ValueError(f"bad request {data[:80]!r}")
        order = Order(base.sock, worker_id, int(beat_index), fds[0], base.cls, base.fork)
        middles.add(fork_worker(order, spec.master_pid, spec.config, spec.boot), worker_id)
    except (OSError, ValueError) as exc:
        base.sock.send(b"error %d %s" % (worker_id, str(exc).encode("utf-8", "replace")[:3000]))
    finally:
        for fd in fds:
            os.close(fd)
