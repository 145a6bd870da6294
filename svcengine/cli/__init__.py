"""The `svcengine` command: arguments -> Config -> Server.run() -> exit status."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, NoReturn

from .. import __version__, errors
from .. import config as configmod
from ..server import Server


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # a wrong flag is a configuration error: 78 keeps systemd from restarting in a loop
        self.print_usage(sys.stderr)
        self.exit(errors.EX_CONFIG, f"svcengine: config error: {message}\n")


def _formatter(prog: str) -> argparse.HelpFormatter:
    """argparse's own formatter and width, without the `import shutil` (and zlib, bz2,
    lzma) it does for shutil.get_terminal_size(): it makes a formatter per add_argument."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return argparse.HelpFormatter(prog, width=(columns or 80) - 2)


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="svcengine",
        formatter_class=_formatter,
        description="Run a pool of Python workers as a Unix service. "
        "Flags override the config file's keys, on every reload too. "
        "`svcengine ctl --help` steers a running one.",
    )
    p.add_argument(
        "worker",
        nargs="?",
        metavar="MODULE:CLASS",
        help="the Worker subclass to run (default: the config's worker, or the demo)",
    )
    p.add_argument("-c", "--config", metavar="FILE", help="TOML config file")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--foreground",
        dest="daemonize",
        action="store_false",
        default=None,
        help="stay in the foreground (default)",
    )
    mode.add_argument(
        "-d",
        "--daemonize",
        dest="daemonize",
        action="store_true",
        help="detach; return only once every worker is ready",
    )
    p.add_argument("--name", help="service name, shown in process titles")
    p.add_argument("-w", "--workers", type=int, help="number of workers")
    p.add_argument(
        "--worker-type",
        dest="worker_type",
        metavar="TYPE",
        help=f"{', '.join(configmod.WORKER_TYPES)} (default: process)",
    )
    p.add_argument(
        "--signal-map",
        dest="signal_map",
        metavar="MAP",
        help=f"whose signal table the master follows: {', '.join(configmod.SIGNAL_MAPS)} "
        "(default: svcengine)",
    )
    p.add_argument(
        "--listen",
        action="append",
        metavar="ADDR",
        help="HOST:PORT or unix:PATH to listen on (repeatable)",
    )
    p.add_argument("--log", metavar="PATH", help="log file (default: stderr)")
    p.add_argument("--log-level", dest="log_level", help="debug, info, warning, error")
    p.add_argument("--pid", dest="pid_path", metavar="PATH", help="pidfile")
    p.add_argument("--version", action="version", version=f"svcengine {__version__}")
    return p


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    keys = (
        "worker",
        "workers",
        "worker_type",
        "signal_map",
        "name",
        "listen",
        "log",
        "log_level",
        "pid_path",
        "daemonize",
    )
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["ctl"]:
        from . import ctl

        return ctl.main(argv[1:])
    args = parser().parse_args(argv)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # `svcengine mymodule:Job` from its directory, as gunicorn
    overrides = overrides_from(args)
    try:
        cfg = configmod.load(args.config, overrides)
    except configmod.ConfigError as exc:
        print(f"svcengine: config error: {exc}", file=sys.stderr)
        return errors.EX_CONFIG
    return Server(None, cfg, config_path=args.config, overrides=overrides).run()


def run() -> None:
    code = main()
    # skip the interpreter's teardown (~20 ms of freeing memory): the work is done
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
