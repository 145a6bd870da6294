"""Typed configuration: one dataclass, loaded from TOML, checked key by key.

Every error names the key and the file, because an operator reading a failed
`systemctl start` has nothing else to go on. Loading does no I/O beyond reading
the file, so a HUP can try a new config without touching the running one.
"""

from __future__ import annotations

import dataclasses
import grp
import os
import pwd
import types
import typing
from dataclasses import dataclass, field
from typing import Any

EX_CONFIG = 78

WORKER_TYPES = ("process", "spawn", "thread", "embedded")
SIGNAL_MAPS = ("svcengine", "serverengine", "unicorn")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class ConfigError(Exception):
    """A configuration problem; the CLI turns it into exit status 78."""

    def __init__(self, message: str, key: str | None = None, source: str | None = None):
        self.key = key
        self.source = source
        where = []
        if key:
            where.append(f"key '{key}'")
        if source:
            where.append(f"in {source}")
        super().__init__(f"{' '.join(where)}: {message}" if where else message)


@dataclass
class Config:
    """Every option, with ServerEngine's name wherever ServerEngine has one."""

    worker: str = "svcengine.demo:Demo"
    workers: int = 1
    worker_type: str = "process"
    name: str = ""
    listen: list[str] = field(default_factory=list)
    python_path: list[str] = field(default_factory=list)
    hooks: str | None = None

    log: str | None = None
    log_level: str = "info"
    pid_path: str | None = None
    control_socket: str | None = None
    daemonize: bool = False
    chuser: str | None = None
    chgroup: str | None = None
    chumask: int | None = None
    daemon_process_name: str | None = None
    worker_process_name: str | None = None
    signal_map: str = "svcengine"

    start_worker_delay: float = 0.0
    start_worker_delay_rand: float = 0.2
    worker_graceful_kill_timeout: float = 30.0
    worker_immediate_kill_timeout: float = 5.0
    worker_heartbeat_interval: float = 1.0
    worker_heartbeat_timeout: float | None = None
    unrecoverable_exit_codes: list[int] = field(default_factory=list)
    worker_pdeathsig: bool = True
    worker_min_uptime: float = 1.0
    worker_restart_backoff_min: float = 0.1
    worker_restart_backoff_max: float = 30.0
    notify_workers: bool = False
    preload: bool = False
    subreaper: bool = False
    upgrade_timeout: float = 60.0
    upgrade_command: list[str] | None = None
    # the `[amqp]` table, for svcengine.amqp.Consumer workers (checked by its settings module)
    amqp: dict[str, Any] = field(default_factory=dict)

    # where this config came from; not a key
    source: str | None = field(default=None, compare=False)

    def validate(self) -> Config:
        """Check values whose type is right but whose meaning is not."""
        src = self.source
        if self.workers < 0:
            raise ConfigError("must be >= 0", "workers", src)
        if ":" not in self.worker or self.worker.startswith(":") or self.worker.endswith(":"):
            raise ConfigError(f"expected 'module:Class', got {self.worker!r}", "worker", src)
        if self.worker_type not in WORKER_TYPES:
            raise ConfigError(f"expected one of {WORKER_TYPES}", "worker_type", src)
        if self.signal_map not in SIGNAL_MAPS:
            raise ConfigError(f"expected one of {SIGNAL_MAPS}", "signal_map", src)
        if self.log_level.lower() not in LOG_LEVELS:
            raise ConfigError(f"expected one of {LOG_LEVELS}", "log_level", src)
        for key in (
            "start_worker_delay",
            "start_worker_delay_rand",
            "worker_graceful_kill_timeout",
            "worker_immediate_kill_timeout",
            "worker_min_uptime",
            "worker_restart_backoff_min",
            "worker_restart_backoff_max",
            "upgrade_timeout",
        ):
            if getattr(self, key) < 0:
                raise ConfigError("must be >= 0", key, src)
        if self.chumask is not None and not 0 <= self.chumask <= 0o777:
            raise ConfigError("expected a mode such as 0o022", "chumask", src)
        if self.chuser is not None:
            try:
                pwd.getpwnam(self.chuser)
            except KeyError:
                raise ConfigError(f"no such user {self.chuser!r}", "chuser", src) from None
        if self.chgroup is not None:
            try:
                grp.getgrnam(self.chgroup)
            except KeyError:
                raise ConfigError(f"no such group {self.chgroup!r}", "chgroup", src) from None
        if self.worker_heartbeat_interval <= 0:
            raise ConfigError("must be > 0", "worker_heartbeat_interval", src)
        if self.worker_heartbeat_timeout is not None and self.worker_heartbeat_timeout <= 0:
            raise ConfigError("must be > 0", "worker_heartbeat_timeout", src)
        if self.amqp:
            from .amqp import settings as amqp_settings  # no pika import: only the checks

            amqp_settings.parse(self.amqp, src)
        for code in self.unrecoverable_exit_codes:
            if not 0 < code < 256:
                raise ConfigError(
                    f"exit code {code} out of 1..255", "unrecoverable_exit_codes", src
                )
        return self

    def absolute(self) -> Config:
        """Paths made absolute: a daemon changes its directory to /."""

        def fix(p: str | None) -> str | None:
            return os.path.abspath(p) if p else p

        return self.replace(
            log=fix(self.log),
            pid_path=fix(self.pid_path),
            control_socket=fix(self.control_socket),
            python_path=[os.path.abspath(p) for p in self.python_path],
        )

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


def option_names() -> list[str]:
    return [f.name for f in dataclasses.fields(Config) if f.name != "source"]


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is dict:
        return isinstance(value, dict)
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint) if a is not type(None))
    if origin is dict:
        return "a table"
    if origin is list:
        return f"a list of {_type_name(typing.get_args(hint)[0]).split(' ', 1)[1]}s"
    return names.get(hint, str(hint))


def from_mapping(values: dict[str, Any], source: str | None, base: Config | None = None) -> Config:
    """Build a Config from plain values, checking each key's name and type."""
    hints = typing.get_type_hints(Config)
    known = set(option_names())
    for key, value in values.items():
        if key not in known:
            raise ConfigError("unknown key", key, source)
        if not _type_ok(value, hints[key]):
            got = type(value).__name__
            raise ConfigError(f"expected {_type_name(hints[key])}, got {got}", key, source)
        if hints[key] is float and isinstance(value, int):
            values[key] = float(value)
    cfg = dataclasses.replace(base or Config(), **values, source=source)
    return cfg.validate()


def load(path: str | None, overrides: dict[str, Any] | None = None) -> Config:
    """Read a TOML file (if any) and apply command-line overrides on top."""
    values: dict[str, Any] = {}
    source = None
    if path is not None:
        import tomllib  # here, not at the top: a start without a file never parses TOML

        source = os.path.realpath(path)
        try:
            with open(path, "rb") as f:
                values = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError("no such file", None, source) from None
        except OSError as exc:
            raise ConfigError(f"cannot read: {exc.strerror}", None, source) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"not valid TOML: {exc}", None, source) from None
    cfg = from_mapping(values, source)
    if overrides:
        cfg = from_mapping(dict(overrides), "the command line", cfg)
        cfg.source = source
    return cfg
