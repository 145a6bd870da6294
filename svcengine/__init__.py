"""svcengine: a pool of Python workers run as a real Unix service."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Config", "ConfigError", "Hooks", "Server", "Worker", "create", "__version__"]

# The public names are imported on first use: `svcengine ctl` and a spawned worker
# need only part of the package, and `import svcengine.cli` should not pay for the rest.
_LAZY = {
    "Config": "config",
    "ConfigError": "config",
    "Hooks": "hooks",
    "Server": "server",
    "create": "server",
    "Worker": "worker",
}

if TYPE_CHECKING:
    from .config import Config, ConfigError
    from .hooks import Hooks
    from .server import Server, create
    from .worker import Worker


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
