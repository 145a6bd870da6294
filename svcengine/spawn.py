"""Forking one worker, and the child's bootstrap up to Worker.run().

The order in the child matters: signals are blocked across fork() so a signal
meant for the new worker can never be written into the master's wakeup pipe;
PDEATHSIG is armed first and then getppid() is re-checked (a master that died
before prctl ran sends nothing); the master's own fds are closed, most of all
the write end of the life pipe, or the worker would keep its own pipe open
(ServerEngine's orphan bug).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import channel, child
from .child.boot import boot_error, construct, exit_code, serve
from .child.boot import import_worker as import_worker  # its old home: server, threads
from .config import Config
from .protocol.env import SPAWN as SPAWN_ENV
from .protocol.env import encode_spawn
from .unix import csignal, proctitle, systemd
from .unix import linux as _linux
from .unix import log as logsetup
from .unix.privileges import Identity
from .worker import Worker

log = logging.getLogger("svcengine.master")

ALL_SIGNALS = set(signal.valid_signals())


@dataclass
class ForkContext:
    """Everything a new worker needs from its master, and what it must drop."""

    master_pid: int
    config: Config
    worker_class: type[Worker] | None
    life: channel.LifePipe
    heartbeats: channel.Heartbeats
    sockets: list[Any]
    master_fds: Callable[[], list[int]]
    restore_signals: Callable[[], None]
    after_fork: Callable[[Any], None]
    identity: Identity | None = None
    after_mold_ready: Callable[[], None] = lambda: None


def fork_worker(ctx: ForkContext, worker_id: int, beat_index: int) -> tuple[int, int]:
    """Fork a worker; return (pid, read end of its status pipe)."""
    status_r, status_w = _linux.pipe()
    if ctx.config.worker_type != "spawn":
        warn_threads(f"forking worker {worker_id}")

    def body() -> int:
        os.close(status_r)
        return _child(ctx, worker_id, status_w, beat_index)

    try:
        pid = fork_child(body)
    except BaseException:
        os.close(status_r)
        os.close(status_w)
        raise
    os.close(status_w)
    os.set_blocking(status_r, False)
    return pid, status_r


def warn_threads(what: str, who: str = "the master") -> None:
    """Forking a process that runs threads copies only the forking one: name the others."""
    if threading.active_count() > 1:
        names = ", ".join(t.name for t in threading.enumerate() if t is not threading.main_thread())
        log.warning(
            "%s while %s runs other threads (%s): their locks may be held forever "
            'in the child; use worker_type = "spawn" or server.every() instead',
            what,
            who,
            names,
        )


def fork_child(body: Callable[[], int]) -> int:
    """Fork a child that leads its own process group and runs `body` to its exit status.

    Every signal is blocked across fork(): one meant for the child can never run the
    parent's handlers in it; `body` unblocks once the child's own handlers are set.
    """
    old_mask = csignal.set_mask(signal.SIG_BLOCK, ALL_SIGNALS)
    try:
        pid = os.fork()
    except BaseException:
        csignal.set_mask(signal.SIG_SETMASK, old_mask)
        raise
    if pid == 0:
        code = 1
        try:
            _own_group()
            code = body()
        except SystemExit as exc:
            code = exit_code(exc)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            child.finish(code)
    csignal.set_mask(signal.SIG_SETMASK, old_mask)
    try:
        os.setpgid(pid, pid)  # as the child does: whichever runs first, no signal finds it outside
    except OSError:
        pass  # EACCES: a spawn worker has exec'd (after its own setpgid); ESRCH: gone already
    return pid


def _own_group() -> None:
    """Lead a process group of our own, so the master can stop what we start with us."""
    try:
        os.setpgid(0, 0)
    except OSError:
        pass  # the master's setpgid() got there first


def kill_group(pid: int, signum: int) -> bool:
    """Signal a process worker's group: the worker (if alive) and whatever it started there.

    Never a group that is not a worker's own: not pid 1's (kill(-1) is every process), not
    the master's (the terminal's foreground group, or its init's). False if nobody was there.
    """
    if pid <= 1 or pid in (os.getpid(), os.getpgrp()):
        return False
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def detach(ctx: ForkContext) -> int | None:
    """A new child of the master drops what is the master's: its signal handlers, its fds,
    its privileges; arms PDEATHSIG. The life pipe's read end, or None if the master died."""
    cfg = ctx.config
    ctx.restore_signals()
    # CPython ignores SIGPIPE at start-up: a peer that hangs up is a BrokenPipeError, not
    # a death (restore_signals() just reset it to SIG_DFL with the master's handled signals)
    csignal.set_handler(signal.SIGPIPE, signal.SIG_IGN)
    if cfg.worker_pdeathsig:
        _linux.set_pdeathsig(signal.SIGKILL)
    if os.getppid() != ctx.master_pid:
        return None  # the master died before PDEATHSIG was armed
    for fd in ctx.master_fds():
        try:
            os.close(fd)
        except OSError:
            pass
    life_fd = ctx.life.child_side()
    logsetup.forget_saved_stderr()
    if ctx.identity is not None:
        ctx.identity.apply()
        if cfg.worker_pdeathsig:
            _linux.set_pdeathsig(signal.SIGKILL)  # a uid/gid change cleared it
        if os.getppid() != ctx.master_pid:
            return None
    if not cfg.notify_workers:
        systemd.scrub_environment()
    return life_fd


def _child(ctx: ForkContext, worker_id: int, status_fd: int, beat_index: int) -> int:
    life_fd = detach(ctx)
    if life_fd is None:
        return 1
    if ctx.config.worker_type == "spawn":
        _exec_spawned(ctx, worker_id, status_fd, life_fd, beat_index, set())
    os.close(ctx.heartbeats.fd)  # the mapping stays; the fd was only for spawn
    return boot_forked(ctx, life_fd, worker_id, beat_index, status_fd, ctx.worker_class)


def boot_forked(
    ctx: ForkContext,
    life_fd: int,
    worker_id: int,
    beat_index: int,
    status_fd: int,
    worker_class: type[Worker] | None,
    adopted: Callable[[], bool] = lambda: True,
) -> int:
    """boot() in a process forked from the master or from its mold (what ctx handed down)."""
    return boot(
        worker_id=worker_id,
        cfg=ctx.config,
        master_pid=ctx.master_pid,
        status_fd=status_fd,
        life_fd=life_fd,
        beat=channel.Beat(ctx.heartbeats.map, beat_index),
        sockets=[s.sock for s in ctx.sockets],
        worker_class=worker_class,
        after_fork=ctx.after_fork,
        unblock=lambda: csignal.set_mask(signal.SIG_SETMASK, ()),  # nothing blocked
        adopted=adopted,
    )


def _exec_spawned(
    ctx: ForkContext, worker_id: int, status_fd: int, life_fd: int, beat_index: int, old_mask: Any
) -> None:
    """worker_type = "spawn": a fresh interpreter, handed its fds by number."""
    cfg = ctx.config
    keep = [status_fd, life_fd, ctx.heartbeats.fd, *(s.fileno() for s in ctx.sockets)]
    for fd in keep:
        os.set_inheritable(fd, True)
    values = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "source"}
    os.environ[SPAWN_ENV] = encode_spawn(
        {
            "worker_id": worker_id,
            "master_pid": ctx.master_pid,
            "status_fd": status_fd,
            "life_fd": life_fd,
            "beat_fd": ctx.heartbeats.fd,
            "beat_index": beat_index,
            "beat_capacity": ctx.heartbeats.capacity,
            "sockets": [s.fileno() for s in ctx.sockets],
            "config": values,
            "sys_path": sys.path,
            "source": cfg.source,
        }
    )
    signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    os.execv(sys.executable, [sys.executable, "-m", "svcengine.spawned"])


def boot(
    *,
    worker_id: int,
    cfg: Config,
    master_pid: int,
    status_fd: int,
    life_fd: int,
    beat: Callable[[], None],
    sockets: list[Any],
    worker_class: type[Worker] | None,
    after_fork: Callable[[Any], None],
    unblock: Callable[[], object],
    adopted: Callable[[], bool] = lambda: True,
) -> int:
    """The worker's life from here on, in a forked or a freshly spawned process.

    `adopted` runs between construct() and READY (a mold's worker waits there to be the
    master's child): False means the master is gone and the worker must not serve."""
    logsetup.set_label(f"worker[{worker_id}]")
    proctitle.set_title(proctitle.worker_title(cfg.name, worker_id, cfg.worker_process_name))
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
        except (AttributeError, ValueError):
            pass

    runtime = child.Runtime(
        worker_id=worker_id,
        config=cfg,
        master_pid=master_pid,
        status_fd=status_fd,
        life_fd=life_fd,
        beat=beat,
        sockets=sockets,
    )
    runtime.install_signals()
    runtime.start_watcher()  # a stop before construct() binds the worker is replayed by serve()
    unblock()
    try:
        worker = construct(runtime, worker_class, after_fork)
    except BaseException as exc:
        log.error("worker %d failed to boot:\n%s", worker_id, traceback.format_exc().rstrip())
        channel.send(status_fd, channel.BOOT_FAILED, boot_error(exc))
        return 1
    if not adopted():
        return 1
    return serve(runtime, worker)
