"""`svcengine ctl`: find a running service and steer it.

Every command is a named command on the control socket, so `stop` is a graceful stop
under every `signal_map` (a signal's meaning depends on the preset; a name does not).
Only when no socket answers at all does ctl fall back to the signal the default preset
gives the command, and it says so. Nothing the socket says is taken on trust: the
server's pid and uid come from the kernel (SO_PEERCRED), a pidfile's pid from its lock.
The service is found by its pidfile (--pid), its name (--name, its runtime directory)
or the socket itself (--socket).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from typing import Any

from .. import errors
from ..config import check_name
from ..unix import linux as _linux
from ..unix import pidfile
from . import client
from .client import NotAnswering

# a command's signal under the default signal_map: used only when no control socket answers
FALLBACK = {
    "reload": signal.SIGHUP,
    "stop": signal.SIGTERM,
    "quit": signal.SIGQUIT,
    "reopen-logs": signal.SIGUSR1,
    "pause": signal.SIGWINCH,
    "upgrade": signal.SIGUSR2,
}
HELP = {
    "reload": "re-read the config, replace the workers gracefully",
    "stop": "graceful stop; waits for the master to exit",
    "quit": "quick stop; waits for the master to exit",
    "reopen-logs": "reopen the log file, in the master and every worker",
    "pause": "stop every worker, keep the master (reload starts them again)",
}


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="svcengine ctl", description="Steer a running svcengine.")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--pid", dest="pid_path", metavar="PATH", help="the service's pidfile")
    where.add_argument("--name", help="the service's name (finds its runtime directory)")
    p.add_argument("--socket", metavar="PATH", help="the control socket, if not the default")
    p.add_argument(
        "--timeout", type=_seconds, default=60.0, help="how long stop, quit, upgrade wait (s)"
    )
    sub = p.add_subparsers(dest="command", required=True)
    st = sub.add_parser("status", help="the pool, one line per worker")
    st.add_argument("--json", action="store_true")
    st.add_argument("--check", action="store_true", help="exit 1 unless ready and healthy")
    for name, text in HELP.items():
        sub.add_parser(name, help=text)
    sub.add_parser("dump", help="every worker's Python stacks to the log")
    sub.add_parser("upgrade", help="re-exec with zero downtime; exit 1 on rollback")
    sc = sub.add_parser("scale", help="N, +N or -N workers")
    sc.add_argument("n")
    return p


def _fail(message: str, code: int = errors.EX_UNAVAILABLE) -> int:
    print(f"svcengine ctl: {message}", file=sys.stderr)
    return code


def _locked_pid(args: argparse.Namespace) -> int | None:
    """The pid holding --pid's lock (None without --pid or when nobody holds it)."""
    return pidfile.holder(args.pid_path) if args.pid_path else None


def _ask_master(args: argparse.Namespace, payload: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Ask the master; return its answer and its pid, proven by the kernel."""
    paths = client.socket_paths(args.socket, args.pid_path, args.name)
    return client.ask_master(paths, args.pid_path, payload)


def _ask(args: argparse.Namespace, payload: dict[str, Any]) -> dict[str, Any]:
    reply = _ask_master(args, payload)[0]
    if payload["cmd"] in ("status", "pid") and not reply.get("ok"):
        raise OSError(str(reply.get("error") or "refused"))
    return reply


def _master_pid(args: argparse.Namespace) -> int:
    if args.pid_path:
        pid = pidfile.holder(args.pid_path)
        if not pid:
            raise OSError(f"not running ({args.pid_path} is not held by a live master)")
        return pid
    return _ask_master(args, {"cmd": "pid"})[1]


def _send(args: argparse.Namespace, command: str) -> tuple[int, dict[str, Any]]:
    """Have the master carry out `command`; return its pid and its answer ({} when it got a
    signal). With no socket to take it, or a master too old to know the name, send the
    default preset's signal instead."""
    try:
        reply, pid = _ask_master(args, {"cmd": command})
    except NotAnswering as exc:
        locked = _locked_pid(args)
        if locked is None:
            raise
        pid, why = locked, f"no control socket answers at {exc.where}"
    else:
        if reply.get("ok"):
            return pid, reply
        error = str(reply.get("error", "refused"))
        if not error.startswith("unknown command"):
            raise RuntimeError(error)
        why = f"master {pid} does not know {command!r} (an older svcengine)"
    sig = FALLBACK[command]
    os.kill(pid, sig)
    print(
        f"svcengine ctl: {why}; sent {sig.name} to master {pid}, which means "
        "what its signal_map says (docs/signals.md)",
        file=sys.stderr,
    )
    return pid, {}


def _human(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _size(n: int | None) -> str:
    return "-" if n is None else f"{n / 1048576:.1f}M"


def format_status(st: dict[str, Any]) -> str:
    head = (
        f"svcengine master pid {st['pid']}"
        + (f" ({st['name']})" if st["name"] else "")
        + f": {st['phase']}; {st['status']}; "
        + ("healthy" if st["healthy"] else f"NOT healthy: {st['health']}")
    )
    rows = [("ID", "PID", "STATE", "UPTIME", "RESTARTS", "LAST EXIT", "RSS")]
    for w in st["workers"]:
        rows.append(
            (
                str(w["id"]),
                str(w["pid"] or "-"),
                w["state"],
                _human(w["uptime"]),
                "-" if w["restarts"] is None else str(w["restarts"]),
                w["last_exit"] or "-",
                _size(w["rss"]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in rows]
    return "\n".join([head, *lines])


def _upgrade(args: argparse.Namespace) -> int:
    """Ask for an upgrade and judge by the successor: done once the new master is the master (it
    holds the pidfile, or answers at the control socket) and the old one is gone; failed
    when the old master reports its attempt failed, or the new master dies first."""
    try:
        before = (_ask(args, {"cmd": "status"}).get("upgrade") or {}).get("attempt")
    except (OSError, ValueError):
        before = None
    old, reply = _send(args, "upgrade")
    deadline = time.monotonic() + args.timeout
    up = reply.get("upgrade") or {}
    # the successor, named in the answer (the master forks it before answering) or later
    new: int | None = up.get("pid") if up.get("attempt") != before else None
    old_gone = False
    while time.monotonic() < deadline:
        if not old_gone:
            old_gone = _linux.wait_exit(old, 0.1)
        if not old_gone:
            try:
                st = _ask(args, {"cmd": "status"})
            except (OSError, ValueError):
                continue  # the socket is changing hands
            up = st.get("upgrade") or {}
            if st.get("pid") != old or up.get("attempt") == before:
                continue
            new = up.get("pid") or new
            if up.get("state") == "failed":
                return _fail(f"upgrade failed: {up.get('reason')}; master {old} serves on", 1)
            if up.get("state") == "stopped":
                return _fail(f"upgrade abandoned: master {old} was stopped, the new one too", 1)
            continue
        # the old master is gone (handed over, or left early): the successor decides
        try:
            holder: int | None = _master_pid(args)
        except (OSError, ValueError, KeyError):
            holder = None
        if holder and holder != old and new in (None, holder):
            print(f"upgrade: master {old} replaced by {holder}")
            return 0
        if new is not None and _linux.wait_exit(new, 0.1):
            return _fail(f"the old master {old} and the new one {new} both exited", 1)
        if new is None:
            time.sleep(0.1)  # no successor known to wait on: look at the pidfile again
    return _fail(f"no outcome within {args.timeout:.0f}s", 1)


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.name is not None:
        try:
            check_name(args.name)
        except ValueError as exc:
            return _fail(f"--name: {exc}", 2)
    try:
        if args.command == "status":
            st = _ask(args, {"cmd": "status"})
            print(json.dumps(st, indent=2) if args.json else format_status(st))
            if args.check and not st.get("healthy"):
                return errors.EX_OTHER
            return 0
        if args.command in ("dump", "scale"):
            payload = {"cmd": args.command}
            if args.command == "scale":
                payload["n"] = args.n
            reply = _ask(args, payload)
            if not reply.get("ok"):
                return _fail(reply.get("error", "refused"), 1)
            print(
                f"dump: {reply['workers']} worker(s) asked to dump their stacks to the log"
                if args.command == "dump"
                else f"scale: {reply['workers']} worker(s)"
            )
            return 0
        if args.command == "upgrade":
            return _upgrade(args)
        t0 = time.monotonic()
        pid, _ = _send(args, args.command)
        if args.command in ("stop", "quit"):
            if not _linux.wait_exit(pid, args.timeout):
                return _fail(f"pid {pid} still running after {args.timeout:.0f}s", 1)
            print(f"{args.command}: master {pid} exited after {time.monotonic() - t0:.2f}s")
        else:
            print(f"{args.command}: master {pid}: {HELP[args.command].split(';')[0]}")
        return 0
    except RuntimeError as exc:  # the master refused
        return _fail(str(exc), 1)
    except PermissionError as exc:
        return _fail(f"permission denied: {exc}", errors.EX_NOPERM)
    except (OSError, ValueError, pidfile.PidfileError) as exc:
        return _fail(str(exc))
