"""Start-up steps of the Server that need only the config: the hooks module, the control
socket, the log file's owner, re-reading the config on HUP, and the exit past lingering
threads. Kept apart so server.py reads as the order of start-up and tear-down alone."""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from . import config as configmod
from . import control as controlmod
from . import errors, rundir, spawn
from .errors import StartError
from .hooks import Hooks
from .unix import log as logsetup
from .unix.privileges import Identity
from .worker import Worker

log = logging.getLogger("svcengine")


def load_hooks(cfg: configmod.Config, hooks: Hooks) -> None:
    """python_path first, then the hooks module: a ConfigError naming `hooks` if it fails."""
    for entry in reversed(cfg.python_path):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    if cfg.hooks:
        try:
            hooks.load_module(cfg.hooks)
        except Exception as exc:
            raise configmod.ConfigError(
                f"cannot import hooks module: {exc}", "hooks", cfg.source
            ) from exc


def open_control(
    cfg: configmod.Config,
    request: Callable[[dict[str, Any]], dict[str, Any]],
    upgrading_from: int | None,
) -> controlmod.ControlServer | None:
    path = rundir.socket_path(cfg.control_socket, cfg.pid_path, cfg.name)
    if path is None:
        return None
    identity = Identity.resolve(cfg.chuser, cfg.chgroup)
    allowed = {os.geteuid()} | ({identity.uid} if identity else set())
    try:
        server = controlmod.ControlServer(
            path,
            request,
            allowed,
            replaces=upgrading_from,
            # no socket named and no pidfile: the socket lives in /run/svcengine/NAME
            runtime_dir=not cfg.control_socket and not cfg.pid_path,
        )
    except rundir.UnsafeDirectory as exc:
        if upgrading_from is None:
            raise  # at start: refuse to start, in one line
        log.error("no control socket: %s", exc)  # an upgrade: serve on without one
        return None
    except OSError as exc:
        if cfg.control_socket:
            # named in the config, e.g. for a container's probes: serving where no probe can
            # reach us would only get us restarted forever, with a less clear reason
            msg = f"cannot create {path}: {exc.strerror}"
            raise configmod.ConfigError(msg, "control_socket", cfg.source) from None
        log.warning("no control socket at %s: %s", path, exc.strerror)
        return None
    if identity is not None and os.geteuid() == 0:
        server.chown(identity.uid, identity.gid)
    return server


def chown_log(cfg: configmod.Config) -> None:
    """A root master dropping the workers' privileges: the log file is theirs to reopen."""
    identity = Identity.resolve(cfg.chuser, cfg.chgroup) if cfg.log else None
    if identity is None or os.geteuid() != 0:
        return
    try:
        logsetup.chown_log(identity.uid, identity.gid)
    except OSError as exc:
        log.warning("cannot give %s to the workers' user: %s", cfg.log, exc.strerror)


def reload_config(path: str, overrides: dict[str, Any], absolute: bool) -> configmod.Config:
    """HUP: the file again, the command line's flags still on top (and said so)."""
    cfg = configmod.load(path, overrides)
    for key, in_file, flag in overridden_by_flags(path, overrides):
        log.warning(
            "reload: %s = %r in %s is overridden by %s from the command line "
            "(flags hold across reloads; drop the flag to let the file decide)",
            key,
            in_file,
            path,
            flag,
        )
    return cfg.absolute() if absolute else cfg


_FLAGS = {"worker": "MODULE:CLASS", "pid_path": "--pid", "daemonize": "--daemonize/--foreground"}


def overridden_by_flags(path: str, overrides: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """(key, the file's value, the flag that wins) for each key that both the file and the
    command line set, to different values: a reload re-reads the file but keeps the flags, as
    Gunicorn does, and says so rather than ignoring the file's edit without a word."""
    if not overrides:
        return []
    import tomllib

    try:
        with open(path, "rb") as f:
            values = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError):
        return []  # load() has just read it; a race with an editor is not worth a message
    out = []
    for key, value in overrides.items():
        if key in values and values[key] != value:
            flag = _FLAGS.get(key, "--" + key.replace("_", "-"))
            shown = " ".join(map(str, value)) if isinstance(value, list) else str(value)
            out.append((key, values[key], f"{flag} {shown}"))
    return out


def end_despite_threads(before: set[threading.Thread], code: int) -> None:
    """Exit now if threads started during run() would keep the interpreter alive."""
    lingering = [
        t.name
        for t in threading.enumerate()
        if t.is_alive() and not t.daemon and t is not threading.current_thread() and t not in before
    ]
    if not lingering:
        return
    log.warning(
        "thread(s) still running after the master stopped: %s (not daemon threads; a hook "
        "started them?); ending the process with status %d, as the svcengine command does",
        ", ".join(lingering),
        code,
    )
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def check_before_logging(cfg: configmod.Config, hooks: Hooks) -> None:
    """The config errors a start can find only by importing (the hooks module; the
    listen addresses were checked with the rest of the config), found before the log
    file is opened: a start that fails on its config leaves nothing behind, not even an
    empty log file."""
    try:
        load_hooks(cfg, hooks)
    except configmod.ConfigError as exc:
        raise StartError(errors.EX_CONFIG, f"config error: {exc}") from None


def preload(cfg: configmod.Config) -> type[Worker]:
    """`preload`: the worker class imported once, in the master, before any fork."""
    try:
        worker_class = spawn.import_worker(cfg.worker, cfg.python_path)
    except Exception as exc:
        raise StartError(errors.EX_OTHER, f"preload: cannot import {cfg.worker}: {exc}") from exc
    gc.collect()
    gc.freeze()  # keep the preloaded objects' pages shared: no refcount-driven copies
    log.info("preloaded %s", cfg.worker)
    return worker_class
