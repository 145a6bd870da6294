"""The `[amqp]` table of the TOML config, checked key by key without importing pika.

The master checks it when it loads a config (start and every HUP), so a typo
is a one-line error naming `amqp.KEY` and the file, and a HUP with a bad table
keeps the old workers consuming.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError


@dataclass(frozen=True)
class Settings:
    """What a Consumer needs; defaults are the safe ones (manual acks, bounded prefetch)."""

    url: str
    queue: str
    prefetch: int = 10
    threads: int = 1
    declare: bool = True
    dead_letter_exchange: str | None = None
    retry_limit: int = 3
    heartbeat: int = 30
    connect_timeout: float = 10.0
    reconnect_backoff_min: float = 0.5
    reconnect_backoff_max: float = 30.0

    @property
    def safe_url(self) -> str:
        return mask_url(self.url)


_TYPES: dict[str, tuple[type, ...]] = {
    "url": (str,),
    "queue": (str,),
    "prefetch": (int,),
    "threads": (int,),
    "declare": (bool,),
    "dead_letter_exchange": (str,),
    "retry_limit": (int,),
    "heartbeat": (int,),
    "connect_timeout": (int, float),
    "reconnect_backoff_min": (int, float),
    "reconnect_backoff_max": (int, float),
}
_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def mask_url(url: str) -> str:
    """The URL with its password replaced: what may be logged."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def parse(table: dict[str, Any], source: str | None) -> Settings:
    """Settings from the `[amqp]` table; ConfigError names `amqp.KEY` and the file."""
    for key, value in table.items():
        kinds = _TYPES.get(key)
        if kinds is None:
            raise ConfigError(f"unknown key (known: {', '.join(_TYPES)})", f"amqp.{key}", source)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            want = " or ".join(dict.fromkeys(_NAMES[k] for k in kinds))
            raise ConfigError(f"expected {want}, got {type(value).__name__}", f"amqp.{key}", source)
    for key in ("url", "queue"):
        if not table.get(key):
            raise ConfigError("required by the amqp Consumer", f"amqp.{key}", source)
    url = table["url"]
    scheme = urllib.parse.urlsplit(url).scheme if "://" in url else ""
    if scheme not in ("amqp", "amqps"):
        # never echo the value: it may hold a password
        raise ConfigError("expected amqp://user:password@host:port/vhost", "amqp.url", source)
    values: dict[str, Any] = {
        k: float(v) if _TYPES[k] == (int, float) else v for k, v in table.items()
    }
    s = Settings(**values)
    for key in ("prefetch", "threads"):
        if getattr(s, key) < 1:
            raise ConfigError("must be >= 1", f"amqp.{key}", source)
    if s.prefetch < s.threads:
        raise ConfigError(f"must be >= amqp.threads ({s.threads})", "amqp.prefetch", source)
    if s.prefetch > 65535:
        raise ConfigError("must be <= 65535 (AMQP's limit)", "amqp.prefetch", source)
    for key in ("retry_limit", "heartbeat"):
        if getattr(s, key) < 0:
            raise ConfigError("must be >= 0", f"amqp.{key}", source)
    for key in ("connect_timeout", "reconnect_backoff_min", "reconnect_backoff_max"):
        if getattr(s, key) <= 0:
            raise ConfigError("must be > 0", f"amqp.{key}", source)
    if s.reconnect_backoff_max < s.reconnect_backoff_min:
        raise ConfigError(
            "must be >= amqp.reconnect_backoff_min", "amqp.reconnect_backoff_max", source
        )
    return s
