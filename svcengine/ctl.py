"""`svcengine ctl`: find a running service and steer it.

Commands travel as signals where one fits (reload, stop, quit, reopen-logs);
what needs an answer (status, dump, scale) goes over the control socket.
The service is found by its pidfile (--pid) or its name (--name), which
names its runtime directory.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import sys
import time
from typing import Any

from . import control, pidfile

EX_UNAVAILABLE = 69  # the service is not running or does not answer
EX_UNHEALTHY = 1

SIGNALLED = {
    "reload": signal.SIGHUP,
    "stop": signal.SIGTERM,
    "quit": signal.SIGQUIT,
    "reopen-logs": signal.SIGUSR1,
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="svcengine ctl", description="Steer a running svcengine.")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--pid", dest="pid_path", metavar="PATH", help="the service's pidfile")
    where.add_argument("--name", help="the service's name (finds its runtime directory)")
    p.add_argument("--socket", metavar="PATH", help="the control socket, if not the default")
    p.add_argument("--timeout", type=float, default=60.0, help="how long stop waits (s)")
    sub = p.add_subparsers(dest="command", required=True)
    st = sub.add_parser("status", help="the pool, one line per worker")
    st.add_argument("--json", action="store_true")
    st.add_argument("--check", action="store_true", help="exit 1 unless ready and healthy")
    for name in SIGNALLED:
        sub.add_parser(name)
    sub.add_parser("dump", help="every worker's Python stacks to the log")
    sub.add_parser("upgrade", help="USR2: re-exec with zero downtime; exit 1 on rollback")
    sc = sub.add_parser("scale", help="N, +N or -N workers")
    sc.add_argument("n")
    return p


def _fail(message: str, code: int = EX_UNAVAILABLE) -> int:
    print(f"svcengine ctl: {message}", file=sys.stderr)
    return code


def _socket_path(args: argparse.Namespace) -> str | None:
    return control.socket_path(args.socket, args.pid_path, args.name or "")


def _ask(args: argparse.Namespace, payload: dict[str, Any]) -> dict[str, Any]:
    path = _socket_path(args)
    if path is None:
        raise OSError("no control socket: give --pid, --name or --socket")
    try:
        return control.request(path, payload)
    except (FileNotFoundError, ConnectionRefusedError):
        raise OSError(f"not running (nothing answers at {path})") from None


def _master_pid(args: argparse.Namespace) -> int:
    if args.pid_path:
        pid = pidfile.is_locked(args.pid_path)
        if not pid or pid < 0:
            raise OSError(f"not running ({args.pid_path} is not held by a live master)")
        return pid
    return int(_ask(args, {"cmd": "pid"})["pid"])


def _wait_gone(pid: int, timeout: float) -> bool:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], timeout)
        return bool(readable)
    finally:
        os.close(fd)


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


def _upgrade(args: argparse.Namespace, old: int) -> int:
    """Send USR2 and judge by the successor: done once the new master is the master (it
    holds the pidfile, or answers at the control socket) and the old one is gone; failed
    when the old master reports its attempt failed, or the new master dies first."""
    try:
        before = (_ask(args, {"cmd": "status"}).get("upgrade") or {}).get("attempt")
    except (OSError, ValueError):
        before = None
    os.kill(old, signal.SIGUSR2)
    deadline = time.monotonic() + args.timeout
    new: int | None = None  # the successor, once the old master names it
    old_gone = False
    while time.monotonic() < deadline:
        if not old_gone:
            old_gone = _wait_gone(old, 0.1)
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
        if new is not None and _wait_gone(new, 0.1):
            return _fail(f"the old master {old} and the new one {new} both exited", 1)
        if new is None:
            time.sleep(0.1)  # no successor known to wait on: look at the pidfile again
    return _fail(f"no outcome within {args.timeout:.0f}s", 1)


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "status":
            st = _ask(args, {"cmd": "status"})
            print(json.dumps(st, indent=2) if args.json else format_status(st))
            if args.check and not st.get("healthy"):
                return EX_UNHEALTHY
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
        pid = _master_pid(args)
        if args.command == "upgrade":
            return _upgrade(args, pid)
        os.kill(pid, SIGNALLED[args.command])
        if args.command in ("stop", "quit"):
            t0 = time.monotonic()
            if not _wait_gone(pid, args.timeout):
                return _fail(f"pid {pid} still running after {args.timeout:.0f}s", 1)
            print(f"{args.command}: master {pid} exited after {time.monotonic() - t0:.2f}s")
        else:
            print(f"{args.command}: sent {SIGNALLED[args.command].name} to master {pid}")
        return 0
    except PermissionError as exc:
        return _fail(f"permission denied: {exc}", 77)
    except OSError as exc:
        return _fail(str(exc))
