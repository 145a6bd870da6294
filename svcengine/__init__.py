"""svcengine: a pool of Python workers run as a real Unix service."""

from __future__ import annotations

__version__ = "0.1.0"

from .config import Config, ConfigError  # noqa: E402
from .hooks import Hooks  # noqa: E402
from .server import Server, create  # noqa: E402
from .worker import Worker  # noqa: E402

__all__ = ["Config", "ConfigError", "Hooks", "Server", "Worker", "create", "__version__"]
