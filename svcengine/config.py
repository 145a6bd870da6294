"""Typed configuration: one dataclass, loaded from TOML, checked key by key.

Every error names the key and the file, because an operator reading a failed
`systemctl start` has nothing else to go on. Loading does no I/O beyond reading
the file, so a HUP can try a new config without touching the running one.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field
from typing import Any

from . import typecheck
from .errors import ConfigError as ConfigError  # public as config.ConfigError too
from .limits import MAX_SECONDS as MAX_SECONDS  # the bounds, public here too
from .limits import MAX_WORKERS as MAX_WORKERS
from .limits import MIN_HEARTBEAT_INTERVAL as MIN_HEARTBEAT_INTERVAL
from .limits import NAME_MAX as NAME_MAX
from .limits import START_ONLY as START_ONLY
from .limits import check_name as check_name
from .limits import check_workers as check_workers
from .unix import privileges

WORKER_TYPES = ("process", "spawn", "thread", "embedded")
SIGNAL_MAPS = ("svcengine", "serverengine", "unicorn")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def start_only_changes(old: Config, new: Config) -> list[str]:
    """The START_ONLY keys whose value a reloaded config changes."""
    return [k for k in START_ONLY if getattr(old, k) != getattr(new, k)]


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
    mold: bool = True  # process workers: forked by a mold that imported the app (child/mold.py)
    subreaper: bool = False
    upgrade_timeout: float = 60.0
    start_timeout: float = 90.0  # --daemonize: the launcher gives up (and stops it) after this
    reload_timeout: float = 90.0  # a reload whose new workers are not all ready by then: abandoned
    upgrade_command: list[str] | None = None
    # the `[amqp]` table, for svcengine.amqp.Consumer workers (checked by its settings module)
    amqp: dict[str, Any] = field(default_factory=dict)

    # where this config came from; not a key
    source: str | None = field(default=None, compare=False)

    def validate(self) -> Config:
        """Check values whose type is right but whose meaning is not."""
        src = self.source
        self._check_strings()
        try:
            check_workers(self.workers)
        except ValueError as exc:
            raise ConfigError(str(exc), "workers", src) from None
        try:
            check_name(self.name)
        except ValueError as exc:
            raise ConfigError(str(exc), "name", src) from None
        if ":" not in self.worker or self.worker.startswith(":") or self.worker.endswith(":"):
            raise ConfigError(f"expected 'module:Class', got {self.worker!r}", "worker", src)
        if self.worker_type not in WORKER_TYPES:
            raise ConfigError(f"expected one of {WORKER_TYPES}", "worker_type", src)
        if self.signal_map not in SIGNAL_MAPS:
            raise ConfigError(f"expected one of {SIGNAL_MAPS}", "signal_map", src)
        if self.log_level.lower() not in LOG_LEVELS:
            raise ConfigError(f"expected one of {LOG_LEVELS}", "log_level", src)
        self._check_durations()
        if self.chumask is not None and not 0 <= self.chumask <= 0o777:
            raise ConfigError("expected a mode such as 0o022", "chumask", src)
        for key, find in (("chuser", privileges.find_user), ("chgroup", privileges.find_group)):
            value = getattr(self, key)
            if value is not None:
                try:
                    find(value)
                except LookupError as exc:
                    raise ConfigError(str(exc.args[0]), key, src) from None
        if self.listen:
            from .unix.sockets import parse_address  # sockets imports this module

            for addr in self.listen:
                try:
                    parse_address(addr)
                except ValueError as exc:
                    raise ConfigError(str(exc), "listen", src) from None
        try:
            privileges.Identity.resolve(self.chuser, self.chgroup)
        except privileges.IdentityError as exc:
            raise ConfigError(str(exc), exc.key, src) from None
        if self.amqp:
            from .amqp import settings as amqp_settings  # no pika import: only the checks

            amqp_settings.parse(self.amqp, src)
        for code in self.unrecoverable_exit_codes:
            if not 0 < code < 256:
                raise ConfigError(
                    f"exit code {code} out of 1..255", "unrecoverable_exit_codes", src
                )
        return self

    def _check_strings(self) -> None:
        """No NUL anywhere: every string may end up as a path, a user name or an argv."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            items = value if isinstance(value, list) else [value]
            if f.name != "source" and any(isinstance(v, str) and "\0" in v for v in items):
                raise ConfigError("contains a NUL character", f.name, self.source)

    def _check_durations(self) -> None:
        """Seconds are finite, >= 0 and at most MAX_SECONDS; fractions are 0..1."""
        src = self.source
        for key in (
            "start_worker_delay",
            "worker_graceful_kill_timeout",
            "worker_immediate_kill_timeout",
            "worker_min_uptime",
            "worker_restart_backoff_min",
            "worker_restart_backoff_max",
            "upgrade_timeout",
            "start_timeout",
            "reload_timeout",
            "worker_heartbeat_interval",
            "worker_heartbeat_timeout",
        ):
            value = getattr(self, key)
            if value is None:
                continue
            if not (math.isfinite(value) and 0 <= value <= MAX_SECONDS):
                raise ConfigError(
                    f"expected seconds in 0..{MAX_SECONDS:.0f}, got {value}", key, src
                )
        if not (
            math.isfinite(self.start_worker_delay_rand) and 0 <= self.start_worker_delay_rand <= 1
        ):
            raise ConfigError(
                f"expected a fraction in 0..1, got {self.start_worker_delay_rand}",
                "start_worker_delay_rand",
                src,
            )
        if self.worker_heartbeat_interval < MIN_HEARTBEAT_INTERVAL:
            raise ConfigError(
                f"must be >= {MIN_HEARTBEAT_INTERVAL}", "worker_heartbeat_interval", src
            )
        if self.worker_heartbeat_timeout is not None and self.worker_heartbeat_timeout <= 0:
            raise ConfigError("must be > 0", "worker_heartbeat_timeout", src)
        if self.worker_restart_backoff_min > self.worker_restart_backoff_max:
            raise ConfigError(
                f"{self.worker_restart_backoff_min} is more than worker_restart_backoff_max "
                f"({self.worker_restart_backoff_max})",
                "worker_restart_backoff_min",
                src,
            )

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


def from_mapping(values: dict[str, Any], source: str | None, base: Config | None = None) -> Config:
    """Build a Config from plain values, checking each key's name and type."""
    hints = typing.get_type_hints(Config)
    known = set(option_names())
    for key, value in values.items():
        if key not in known:
            raise ConfigError("unknown key", key, source)
        if not typecheck.type_ok(value, hints[key]):
            got = type(value).__name__
            raise ConfigError(f"expected {typecheck.type_name(hints[key])}, got {got}", key, source)
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
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"not valid TOML: not UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset "
                f"{exc.start})",
                None,
                source,
            ) from None
        except RecursionError:
            raise ConfigError("not valid TOML: nested too deeply", None, source) from None
        except ValueError as exc:  # e.g. an integer of more than 4300 digits
            raise ConfigError(f"not valid TOML: {exc}", None, source) from None
    cfg = from_mapping(values, source)
    if overrides:
        cfg = from_mapping(dict(overrides), "the command line", cfg)
        cfg.source = source
    return cfg
