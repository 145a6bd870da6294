"""run.py's HTTP-example figures (`--only http`): every peer serving hello-world HTTP on a loopback
port, svcengine running examples/http_worker.py with its defaults (peers.Svcengine.argv_env
with a port; no preload).

- memory of 4 idle workers (/proc/PID/smaps_rollup): each worker's USS (Private_Clean +
  Private_Dirty) and PSS, the master's PSS;
- respawn: SIGKILL a worker → the replacement serving, i.e. the answer to a request that only
  the replacement can take (``Holds`` keeps every other worker busy reading a request);
- start of --big and --huge workers: exec → every worker up, and the total PSS there.

Serving is seen from outside, the same way for every peer: each answer names the pid that wrote
it (svcengine's example says "(pid N)" in its body, the peers' apps send an X-Pid header).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import statistics
import time
from functools import partial
from typing import Any

from collector import Instance
from common import MS, log
from figures import Bench, pct
from peers import Peer
from procs import MIB, accept_queue, descendants, free_port, memory_of

REQUEST_LINE = b"GET / HTTP/1.0\r\n"
REQUEST = REQUEST_LINE + b"Host: bench\r\n\r\n"
ANSWER_PID = re.compile(rb"^x-pid: (\d+)|\(pid (\d+)\)", re.I | re.M)
HTTP = "HTTP example (defaults)"


def read_all(s: socket.socket) -> bytes:
    chunks = []
    while chunk := s.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def ask(port: int, timeout: float = 30.0) -> tuple[int, int]:
    """One request on a new connection: (CLOCK_MONOTONIC ns once the whole answer is in, the pid
    that answered)."""
    with socket.create_connection(("127.0.0.1", port), timeout) as s:
        s.sendall(REQUEST)
        data = read_all(s)
    t = time.monotonic_ns()
    m = ANSWER_PID.search(data)
    if not data.startswith(b"HTTP/1.") or m is None:
        raise RuntimeError(f"port {port}: an answer without a pid: {data[:200]!r}")
    return t, int(m.group(1) or m.group(2))


class Holds:
    """One connection per worker, each sending only a request line: every worker accepts one and
    blocks reading the rest (a worker serves one connection at a time), so a connection made
    next waits in the listen queue for a worker that is not held, e.g. a replacement."""

    def __init__(self, port: int, n: int, timeout: float = 10.0) -> None:
        self.socks: list[socket.socket] = []
        try:
            for _ in range(n):
                self.socks.append(socket.create_connection(("127.0.0.1", port), timeout))
                self.socks[-1].sendall(REQUEST_LINE)
            # a loopback connect() returns with the connection queued: an empty queue means
            # n workers each took one
            deadline = time.monotonic() + timeout
            while (queued := accept_queue(port)) and time.monotonic() < deadline:
                time.sleep(0.0005)
            if queued:
                raise RuntimeError(f"{queued} of {n} held connections queued after {timeout}s")
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """End each request: the held workers answer and go back to accepting."""
        for s in self.socks:
            try:
                s.sendall(b"\r\n")
                read_all(s)
            except OSError:
                pass  # the killed worker's connection
            finally:
                s.close()
        self.socks = []


def pool(inst: Instance) -> tuple[list[int], list[int]]:
    """The master's live descendants: (workers, the others, e.g. a mold)."""
    procs = descendants(inst.pid)
    workers = [p for p in procs if inst.peer.is_worker(p)]
    return workers, [p for p in procs if p not in workers]


def measure(b: Bench, inst: Instance, n: int) -> dict[str, float]:
    """MiB (procs.memory_of) after --settle s idle; a mold or another helper is counted apart."""
    time.sleep(b.args.settle)
    workers, helpers = pool(inst)
    if len(workers) != n:
        b.note(f"{inst.peer.label}: {len(workers)} workers found, {n} expected")
    if helpers:
        b.note(f"{inst.peer.label}: {len(helpers)} processes of the pool are not workers")
    return memory_of(inst.pid, workers, helpers)


def http_pool(b: Bench, peer: Peer) -> None:
    """--workers idle HTTP workers: their memory, then --kills respawns timed to serving."""
    a = b.args
    port = free_port()
    inst = Instance(b, peer, a.workers, port)
    try:
        t_up = inst.wait_all_ready(a.workers, 60.0)
        mem = measure(b, inst, a.workers)
        ask(port)  # it serves
        samples = respawns(b, inst, port, dict.fromkeys(pool(inst)[0], t_up))
    finally:
        inst.finish()
    b.keep("http_memory", peer.label, [mem])
    b.keep("http_respawn", peer.label, samples)
    pool_of = f"{HTTP}, {a.workers} idle workers"
    for key, what in (
        ("worker_uss", "private memory (USS: Private_Clean + Private_Dirty) per worker, mean"),
        ("worker_pss", "PSS per worker, mean"),
        ("master_pss", "master PSS (and any process of the pool that is not a worker)"),
    ):
        value = mem[key] + (mem["helpers_pss"] if key == "master_pss" else 0.0)
        b.put(f"http_mem_{key}", f"{pool_of}: {what}", "KiB", peer.name, value * MIB)
    xs = [s["serving_ms"] for s in samples]
    for q, qn in ((0.5, "median"), (0.95, "p95")):
        b.put(
            f"http_respawn_serving_{qn}",
            f"{HTTP}: respawn, SIGKILL worker → replacement serving (answers a request the "
            f"other workers are held from), {qn} of {len(xs)}",
            "ms",
            peer.name,
            pct(xs, q),
        )
    forks = [s["fork_ms"] for s in samples if s["fork_ms"] is not None]
    b.put(
        "http_respawn_fork_median",
        f"{HTTP}: respawn, SIGKILL worker → replacement forked, median of {len(forks)} (context)",
        "ms",
        peer.name,
        statistics.median(forks) if forks else None,
    )
    log(
        f"http {peer.label}: worker USS {mem['worker_uss'] * MIB:.0f} KiB, "
        f"PSS {mem['worker_pss'] * MIB:.0f} KiB; respawn → serving median {pct(xs, 0.5):.1f} ms"
    )


def respawns(b: Bench, inst: Instance, port: int, alive: dict[int, int]) -> list[dict[str, Any]]:
    """--kills times: the oldest worker (alive: pid -> ns it was up), once it has lived
    --min-life s, is killed while the others are held; the next request is the replacement's."""
    a, col = b.args, b.col
    samples: list[dict[str, Any]] = []
    for _ in range(a.kills):
        victim = min(alive, key=alive.__getitem__)
        wait = alive[victim] + a.min_life * 1e9 - time.monotonic_ns()
        if wait > 0:
            time.sleep(wait / 1e9)
        holds = Holds(port, len(alive))
        try:
            t_kill = time.monotonic_ns()
            os.kill(victim, signal.SIGKILL)
            t_answer, pid = ask(port)
        finally:
            holds.release()
        if pid in alive:
            raise RuntimeError(f"{inst.peer.label}: old worker {pid} answered: the holds failed")
        col.wait_for(partial(col.forked, pid), 2.0)
        col.wait_for(partial(col.all_gone, [victim]), 2.0)
        p = col.proc(pid)
        samples.append(
            {
                "victim": victim,
                "new": pid,
                "fork_ms": (p.fork_ns - t_kill) / MS if p else None,
                "serving_ms": (t_answer - t_kill) / MS,
            }
        )
        del alive[victim]
        alive[pid] = t_answer
        inst.reap_orphans()
    return samples


def http_start(b: Bench, peer: Peer, n: int, trials: int) -> None:
    """exec → all n HTTP workers up (the last app-ready marker; svcengine: READY=1), then the
    total PSS after --settle s."""
    starts, totals = [], []
    for _ in range(trials):
        port = free_port()
        inst = Instance(b, peer, n, port)
        try:
            t_up = inst.wait_all_ready(n, 120.0)
            starts.append((t_up - inst.exec_ns()) / MS)
            totals.append(measure(b, inst, n)["total_pss"])
            ask(port)  # it serves
        finally:
            inst.finish()
    b.keep(f"http_start_{n}", peer.label, starts)
    b.keep(f"http_total_pss_{n}", peer.label, totals)
    b.put(
        f"http_start_{n}",
        f"{HTTP}: start, exec → all {n} workers up (svcengine: READY=1; the peers: the last "
        f"app-ready marker), median of {trials}",
        "ms",
        peer.name,
        statistics.median(starts),
    )
    b.put(
        f"http_total_pss_{n}",
        f"{HTTP}: total PSS, master + {n} idle workers (+ any other process of the pool), "
        f"median of {trials}",
        "MiB",
        peer.name,
        statistics.median(totals),
    )
    log(
        f"http start {peer.label} x{n}: median {statistics.median(starts):.0f} ms, "
        f"total PSS {statistics.median(totals):.1f} MiB"
    )
