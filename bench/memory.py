"""more.py's memory figures: master and worker RSS/PSS of 4 idle HTTP workers per peer
(plus two svcengine context variants), and bench/pss.py's preload off/on table.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from common import APPS, BENCH, EXAMPLES, REPO, VPY, clean_env, log
from peers import Gunicorn, Peer, ServerEngine, Svcengine, Unicorn
from procs import Inbox, children, free_port, memory_of

if TYPE_CHECKING:
    from more import More


def mem_svcengine(b: More, variant: str = "http") -> dict[str, float]:
    """variant: "http" (examples/http_worker.py as is), "http_preload" (the same with
    `preload = true`), "idle" (bench/apps/idle.py: no HTTP code at all)."""
    svc = Svcengine()
    d = b.newdir(f"svc-mem-{variant}")
    if variant == "idle":
        settings: dict[str, object] = {"worker": "idle:IdleWorker", "workers": 4}
        settings["python_path"] = [str(APPS)]
    else:
        settings = {"worker": "http_worker:HttpWorker", "workers": 4}
        settings["listen"] = [f"127.0.0.1:{free_port()}"]
        settings["python_path"] = [str(EXAMPLES)]
        if variant == "http_preload":
            settings["preload"] = True
    cfg = svc.config(d / "svcengine.toml", **settings)
    argv = svc.argv(
        "--foreground", "--config", cfg, "--name", "bench-mem", "--log", d / "svcengine.log"
    )
    return measured(b, d, argv, {}, "NOTIFY_SOCKET", "svcengine READY=1", ready_notified, svc)


def mem_peer(b: More, peer: Peer) -> dict[str, float]:
    """A peer's 4 HTTP workers on a loopback port, measured once their 4 markers came."""
    d = b.newdir(f"{peer.tag}-mem")
    argv, env = peer.argv_env(d, 4, free_port())
    return measured(b, d, argv, env, "SVCBENCH_MARKER", f"{peer.name} 4 workers", four_ready, peer)


def ready_notified(inbox: Inbox, master: int) -> bool:
    return inbox.has_note("READY=1")


def four_ready(inbox: Inbox, master: int) -> bool:
    return len(inbox.ready_of(master)) >= 4


def measured(
    b: More,
    d: Path,
    argv: list[str],
    env: dict[str, str],
    inbox_var: str,
    what: str,
    ready: Callable[[Inbox, int], bool],
    peer: Peer,
) -> dict[str, float]:
    """Start ``argv`` with an inbox in ``$inbox_var``, wait until ``ready``, measure, end it."""
    inbox = Inbox(str(d / ("n.sock" if inbox_var == "NOTIFY_SOCKET" else "m.sock")))
    p = None
    try:
        with open(d / "output.log", "wb") as out:
            p = b.t.popen(
                argv,
                cwd=d,
                env=clean_env(**env, **{inbox_var: inbox.path}),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        pid = p.pid
        inbox.wait(lambda: ready(inbox, pid), 60, what, p)
        return measure(b, pid, 4, peer)
    finally:
        if p is not None:
            b.t.end_tree(p.pid)
        inbox.close()


def measure(b: More, master: int, n: int, peer: Peer) -> dict[str, float]:
    """The master's workers, and the rest of its pool (a mold) counted with the master."""
    time.sleep(b.args.settle * 2)
    kids = children(master)
    b.t.seen.update(kids)
    workers = [p for p in kids if peer.is_worker(p)]
    if len(workers) != n:
        b.note(f"memory: master {master} has {len(workers)} workers, expected {n}")
    m = memory_of(master, workers, [p for p in kids if p not in workers])
    m["master_pss"] += m["helpers_pss"]  # the pool's fixed cost: master (+ mold)
    with contextlib.suppress(OSError):
        m["master_threads"] = len(os.listdir(f"/proc/{master}/task"))
    return m


def fmt_mem(m: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in m.items())


def memory(b: More) -> None:
    """The figure: each peer, then the two svcengine variants for context."""
    res = {}
    for peer, fn in (
        ("svcengine", lambda: mem_svcengine(b)),
        ("gunicorn", lambda: mem_peer(b, Gunicorn())),
        ("svcengine preload", lambda: mem_svcengine(b, "http_preload")),
        ("svcengine idle", lambda: mem_svcengine(b, "idle")),
        *(
            (
                ("serverengine", lambda: mem_peer(b, ServerEngine())),
                ("unicorn", lambda: mem_peer(b, Unicorn())),
            )
            if b.ruby_ok
            else ()
        ),
    ):
        try:
            res[peer] = fn()
            log(f"memory {peer}: {fmt_mem(res[peer])}")
        except Exception as e:
            b.error(f"memory {peer}: {type(e).__name__}: {e}")
    b.samples["memory"] = res
    variants = {k: v for k, v in res.items() if k.startswith("svcengine ")}
    res = {k: v for k, v in res.items() if not k.startswith("svcengine ")}
    for key, title in (
        ("master_rss", "memory, 4 idle HTTP workers: master RSS"),
        ("master_pss", "memory, 4 idle HTTP workers: master PSS (svcengine: + its mold)"),
        ("worker_pss", "memory, 4 idle HTTP workers: PSS per worker, mean"),
        ("worker_rss", "memory, 4 idle HTTP workers: RSS per worker, mean (context)"),
        ("total_pss", "memory, 4 idle HTTP workers: total PSS, master + workers"),
    ):
        for peer, m in res.items():
            b.put(f"mem_{key}", title, "MiB", peer, m[key])
    # Context: examples/http_worker.py imports http.server (and email, html, ...) in
    # each worker after the fork; gunicorn's own HTTP code is imported by its master
    # before it forks. Same gunicorn instance in the gunicorn column.
    for variant, what in (
        (
            "svcengine preload",
            "svcengine with `preload = true` (http.server imported "
            "before the fork, as gunicorn's HTTP code is)",
        ),
        (
            "svcengine idle",
            "svcengine running bench/apps/idle.py (no HTTP code; no listening socket)",
        ),
    ):
        if variant not in variants:
            continue
        for key, what_key in (
            ("worker_pss", "PSS per worker, mean"),
            ("total_pss", "total PSS"),
        ):
            k = f"mem_{key}_{variant.split()[1]}"
            b.put(
                k,
                f"memory, 4 idle workers: {what_key}, {what} (context)",
                "MiB",
                "svcengine",
                variants[variant][key],
            )
            if "gunicorn" in res:
                b.put(k, "", "MiB", "gunicorn", res["gunicorn"][key])


def preload(b: More) -> None:
    """bench/pss.py as it is (svcengine only): preload off vs on."""
    d = b.newdir("pss")
    with open(d / "output.log", "w") as out:
        p = b.t.popen(
            [str(VPY), str(BENCH / "pss.py"), "--workers", "4"],
            cwd=REPO,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=out,
            text=True,
        )
        stdout, _ = p.communicate(timeout=180)
    if p.returncode != 0:
        raise RuntimeError(f"bench/pss.py exited {p.returncode}: {b.tail(d)}")
    b.samples["pss_py"] = {"stdout": stdout}
    b.pss_table = [ln for ln in stdout.splitlines() if ln.startswith("|")]
    vals = {}
    for ln in b.pss_table[2:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        vals[cells[0]] = {"off": float(cells[1]), "on": float(cells[2])}
    b.samples["pss_py"]["values"] = vals
    log(f"bench/pss.py: {vals}")
