"""The control socket's requests, answered: queries from report, commands through
the one table (commands.dispatch), exactly as a signal's."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

from .. import config
from ..signals import Command
from . import commands, report

if TYPE_CHECKING:
    from ..upgrade import Upgrader

log = logging.getLogger("svcengine.master")


class Master(commands.Host, Protocol):
    """What a request reads from the master (besides the table's Host)."""

    pid: int
    started_at: float
    upgrader: Upgrader | None

    @property
    def cfg(self) -> config.Config: ...
    @property
    def announced_ready(self) -> bool: ...
    @property
    def wakeups(self) -> int: ...
    def healthy(self) -> tuple[bool, str]: ...
    def clock(self) -> float: ...


def answer(m: Master, req: dict[str, Any]) -> dict[str, Any]:
    cmd = req.get("cmd")
    if cmd == "status":
        return {"ok": True, **snapshot(m)}
    if cmd == "pid":
        return {"ok": True, "pid": m.pid}
    try:
        command, arg = commands.parse_request(req)
    except commands.BadRequest as exc:
        return {"ok": False, "error": str(exc)}
    if isinstance(arg, commands.Scale):
        target = arg.target(m.pool.target)
        try:
            config.check_workers(target)
        except ValueError as exc:
            return {"ok": False, "error": f"cannot scale: workers {exc}"}
        commands.dispatch(m, command, commands.Scale(target))
        return {"ok": True, "workers": target}
    log.debug("control socket: %s: %s", cmd, command.value)
    commands.dispatch(m, command, arg)
    reply: dict[str, Any] = {"ok": True, "pid": m.pid, "workers": len(m.pool.workers())}
    if command is Command.UPGRADE and m.upgrader and m.upgrader.current:
        reply["upgrade"] = m.upgrader.current.as_dict()  # ctl follows its successor
    return reply


def snapshot(m: Master) -> dict[str, Any]:
    """What `ctl status` shows: report sees a StatusView, never the Master."""
    upgrade = m.upgrader.current if m.upgrader else None
    view = report.StatusView(
        pid=m.pid,
        name=m.cfg.name,
        phase=m.phase,
        pool=m.pool,
        health=m.healthy(),
        announced_ready=m.announced_ready,
        started_at=m.started_at,
        wakeups=m.wakeups,
        upgrade=upgrade.as_dict() if upgrade else None,
        mold=m.workers.launcher.describe() if m.workers.launcher else None,
    )
    return report.snapshot(view, m.clock())
