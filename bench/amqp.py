#!/usr/bin/env python3
"""Messages per second per worker: svcengine's amqp Consumer vs a plain pika loop (and Celery).

    python bench/amqp.py [--messages 20000] [--workers 1,4] [--prefetch 10] [--runs 3]
                         [--no-celery] [--no-write]

A RabbitMQ of the bench's own (tests/amqp/broker.py: Debian's rabbitmq-server,
installed with apt-get when missing, on loopback, stopped at the end). For each
run, peer and worker count: a fresh durable queue gets N persistent messages,
the peer's W processes consume them (manual acks, the same prefetch, the same
per-message work: one write of the time to a file), and the rate is
N / (last handled - first handled) over all W processes; per worker = rate / W.
Peers run interleaved, run after run; the table shows medians.

- plain: W copies of `bench/apps/amqp_tick.py` (pika, basic_consume, ack in the callback);
- svcengine: `svcengine --foreground` with W `amqp_tick:Tick` workers (threads = 1);
- celery: `celery worker -P prefork -c W`, acks_late, prefetch multiplier = prefetch
  (when Celery is installed in .venv, or installs: `.venv/bin/pip install celery`).

Ratio = svcengine / peer (per worker). Writes docs/benchmarks-amqp.md. A measurement,
not a test. Every process started is ended by pid and checked gone.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
APPS = HERE / "apps"
VENV_PY = REPO / ".venv" / "bin" / "python"
sys.path.insert(0, str(REPO / "tests" / "amqp"))
sys.path.insert(0, str(HERE))

from broker import Broker, _group_members, ensure_installed  # noqa: E402
from common import machine  # noqa: E402


def publish(url: str, queue: str, n: int, celery: bool) -> None:
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.queue_declare(queue, durable=True)
    if celery:  # Celery's own message format, by Celery's own client
        env = dict(os.environ, SVCBENCH_URL=url, SVCBENCH_QUEUE=queue, SVCBENCH_OUT="/tmp")
        code = (
            "import amqp_celery as a\n"
            "with a.app.producer_or_acquire() as p:\n"
            f"    for _ in range({n}): a.tick.apply_async(producer=p)\n"
        )
        subprocess.run([str(VENV_PY), "-c", code], env=env, cwd=APPS, check=True)
    else:
        props = pika.BasicProperties(delivery_mode=2)
        for i in range(n):
            ch.basic_publish("", queue, b"%d" % i, props)
    while ch.queue_declare(queue, passive=True).method.message_count < n:
        time.sleep(0.2)  # the broker announces nothing
    conn.close()


def count_ticks(out: Path) -> tuple[int, int, int]:
    n, first, last = 0, None, None
    for p in out.glob("ticks-*"):
        stamps = [int(x) for x in p.read_text().split()]
        if stamps:
            n += len(stamps)
            first = min(stamps) if first is None else min(first, min(stamps))
            last = max(stamps) if last is None else max(last, max(stamps))
    return n, first or 0, last or 0


def start(peer: str, url: str, queue: str, workers: int, prefetch: int, out: Path):
    env = dict(os.environ, SVCBENCH_OUT=str(out), PYTHONPATH=f"{APPS}:{REPO}")
    env.pop("NOTIFY_SOCKET", None)
    log = open(out / "peer.log", "ab")
    common = dict(
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
        cwd=APPS,
        restore_signals=True,
    )
    if peer == "plain":
        args = [str(VENV_PY), str(APPS / "amqp_tick.py"), url, queue, str(prefetch), str(out)]
        return [subprocess.Popen(args, **common) for _ in range(workers)]
    if peer == "svcengine":
        cfg = out / "app.toml"
        cfg.write_text(
            f'worker = "amqp_tick:Tick"\nworkers = {workers}\npython_path = ["{APPS}"]\n'
            f'start_worker_delay_rand = 0.0\ncontrol_socket = "{out}/ctl.sock"\n'
            f'[amqp]\nurl = "{url}"\nqueue = "{queue}"\n'
            f"prefetch = {prefetch}\n"
        )
        args = [str(VENV_PY), "-m", "svcengine", "--foreground", "--config", str(cfg)]
        args += ["--name", "bench-amqp"]  # not the host's unnamed instance
        return [subprocess.Popen(args, **common)]
    env.update(SVCBENCH_URL=url, SVCBENCH_QUEUE=queue, SVCBENCH_PREFETCH=str(prefetch))
    args = [
        str(VENV_PY), "-m", "celery", "-A", "amqp_celery", "worker", "-P", "prefork",
        "-c", str(workers), "-Q", queue, "--without-gossip", "--without-mingle",
        "--without-heartbeat", "-l", "warning",
    ]  # fmt: skip
    return [subprocess.Popen(args, **common)]


def stop(procs: list[subprocess.Popen]) -> None:
    """TERM each process group we started; KILL after 30 s; prove every member gone."""
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
        deadline = time.monotonic() + 10
        while _group_members(p.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in _group_members(p.pid):
            os.kill(pid, signal.SIGKILL)  # ours: in the session we started


def one(broker: Broker, peer: str, workers: int, n: int, prefetch: int, tmp: Path) -> float:
    queue = f"bench-{peer}-{workers}-{time.monotonic_ns()}"
    out = Path(tempfile.mkdtemp(prefix=f"{peer}-", dir=tmp))
    publish(broker.url, queue, n, peer == "celery")
    procs = start(peer, broker.url, queue, workers, prefetch, out)
    try:
        deadline = time.monotonic() + max(120, n / 50)
        while (got := count_ticks(out))[0] < n:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                tail = (out / "peer.log").read_text(errors="replace")[-800:]
                raise RuntimeError(f"{peer}: {got[0]}/{n} handled; log: {tail}")
            time.sleep(0.2)
    finally:
        stop(procs)
    got, first, last = count_ticks(out)
    return (n - 1) / ((last - first) / 1e9)


def celery_ready(install: bool) -> str:
    """'' when Celery imports in .venv (installed if asked), else why not."""
    ok = subprocess.run([str(VENV_PY), "-c", "import celery"], capture_output=True)
    if ok.returncode == 0:
        return ""
    if install:
        r = subprocess.run(
            [str(VENV_PY), "-m", "pip", "install", "-q", "celery"], capture_output=True, text=True
        )
        if r.returncode == 0:
            return ""
        return f"pip install celery failed: {r.stderr.strip().splitlines()[-1:]}"
    return "celery not installed in .venv"


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--workers", default="1,4", help="comma list of worker counts (1,4)")
    ap.add_argument("--prefetch", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-celery", action="store_true")
    ap.add_argument("--no-install", action="store_true", help="never pip install celery")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--output", default=str(REPO / "docs" / "benchmarks-amqp.md"))
    args = ap.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    peers = ["plain", "svcengine"]
    why_no_celery = "--no-celery" if args.no_celery else celery_ready(not args.no_install)
    if not why_no_celery:
        peers.append("celery")
    ensure_installed()
    tmp = Path(tempfile.mkdtemp(prefix="svcbench-amqp-"))
    broker = Broker(tmp / "broker")
    rates: dict[tuple[str, int], list[float]] = {}
    try:
        broker.start()
        for run in range(args.runs):
            for w in counts:
                for peer in peers:
                    r = one(broker, peer, w, args.messages, args.prefetch, tmp)
                    rates.setdefault((peer, w), []).append(r)
                    print(f"run {run + 1}: {peer:9} x{w}: {r:8.0f} msg/s, {r / w:8.0f} per worker")
    finally:
        left = broker.stop()
        if left:
            print(f"broker processes left: {left}", file=sys.stderr)
    lines = table(rates, counts, peers)
    cmd = "python bench/amqp.py " + shlex.join(sys.argv[1:])
    text = report(lines, cmd, args, why_no_celery)
    print("\n".join(lines))
    if why_no_celery:
        print(f"celery: not measured ({why_no_celery})")
    if not args.no_write:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}")
    return 0


def table(rates: dict[tuple[str, int], list[float]], counts: list[int], peers: list[str]):
    head = "| workers | " + " | ".join(f"{p} msg/s per worker (min–max)" for p in peers)
    head += " | svcengine/plain" + (" | svcengine/celery |" if "celery" in peers else " |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for w in counts:
        med = {p: statistics.median(rates[(p, w)]) / w for p in peers}
        span = {p: f"{min(rates[(p, w)]) / w:.0f}–{max(rates[(p, w)]) / w:.0f}" for p in peers}
        row = f"| {w} | " + " | ".join(f"{med[p]:.0f} ({span[p]})" for p in peers)
        row += f" | {med['svcengine'] / med['plain']:.2f}"
        if "celery" in peers:
            row += f" | {med['svcengine'] / med['celery']:.2f}"
        lines.append(row + " |")
    return lines


def report(lines: list[str], cmd: str, args: argparse.Namespace, no_celery: str) -> str:
    m = machine()
    import pika

    celery = subprocess.run(
        [str(VENV_PY), "-c", "import celery; print(celery.__version__)"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return "\n".join(
        [
            "# AMQP consumer throughput: svcengine vs a plain pika loop (and Celery)",
            "",
            f"`{cmd}` — {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; {m['nproc']} CPUs "
            f"({m['cpu']}), {m['memory']}, {m['os']}, kernel {m['kernel']}; RabbitMQ "
            f"from Debian's rabbitmq-server on loopback; pika {pika.__version__}"
            + (f", celery {celery} (prefork)." if celery and not no_celery else "."),
            "",
            f"{args.messages} persistent messages per run, prefetch {args.prefetch}, manual acks, "
            "the same per-message work in every peer (one write of the time to a file); "
            f"median of {args.runs} interleaved runs (min–max in brackets). Ratio > 1: "
            "svcengine is faster. The machine is shared (2 CPUs, other test runs): the spread "
            "between runs is wider than the difference between plain and svcengine.",
            "",
            *lines,
            "",
            (f"Celery: not measured ({no_celery})." if no_celery else ""),
            "What the ratio pays for: the Consumer hands each message from the I/O thread to a "
            "handler thread and the ack back (two thread switches per message), which is what "
            "keeps heartbeats flowing while a handler runs; the plain loop acks inline and "
            "would miss heartbeats during a long handler. See bench/amqp.py.",
            "",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
