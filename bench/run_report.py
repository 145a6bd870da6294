"""run.py's report: the table it prints, and docs/benchmarks.md (machine, command, table, method,
observations, load per phase, samples), keeping the hand-written reading below ``KEEP``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import platform
import shlex
import sys
from pathlib import Path

from common import machine, md_table, ratio
from figures import Bench, Figure

KEEP = "<!-- bench/run.py keeps what follows this line when it rewrites the file -->"
ORDER = (
    "respawn_exit",
    "respawn_fork",
    "respawn_ready",
    "orphan_",
    "orphan_nopds",
    "orphan_master",
    "start_",
    "fork1_",
    "ready1_",
    "idle_",
    "threads_",
    "wstop_",
    "stop_",
    "http_mem_worker_uss",
    "http_mem_worker_pss",
    "http_mem_master",
    "http_respawn_serving",
    "http_respawn_fork",
    "http_start_",
    "http_total_pss_",
)


def table(b: Bench, labels: list[str]) -> list[str]:
    others = [lb for lb in labels if lb != "svcengine"] if "svcengine" in labels else []
    head = ["figure", "unit", *labels, *(f"svcengine/{o}" for o in others)]
    rows = []

    def rank(f: Figure) -> int:
        hits = [(len(p), i) for i, p in enumerate(ORDER) if f.key.startswith(p)]
        return max(hits)[1] if hits else len(ORDER)  # the longest matching prefix

    for f in sorted(b.figures.values(), key=rank):
        row = [f.title, f.unit, *[f.values.get(lb, "—") for lb in labels]]
        row += [
            ratio(
                f.raw.get("svcengine"),
                f.raw.get(o),
                f.capped.get("svcengine", False),
                f.capped.get(o, False),
            )
            for o in others
        ]
        rows.append(row)
    return md_table(head, rows)


def write_doc(b: Bench, path: Path, labels: list[str], env: dict[str, str], t_total: float) -> None:
    m = machine()
    cmd = "python bench/run.py" + ("" if len(sys.argv) == 1 else " " + shlex.join(sys.argv[1:]))
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmarks: svcengine vs Gunicorn, ServerEngine and Unicorn",
        "",
        "Written by `bench/run.py` (method and options: [bench/README.md](../bench/README.md)).",
        "Every number below comes from one run of the command shown, on the machine shown.",
        "",
        f"- date: {now}",
        f"- command: `{cmd}` (took {t_total:.0f} s)",
        f"- machine: nproc {m['nproc']} ({m['cpu']}), {m['memory']}, "
        f"kernel {m['kernel']}, {m['os']}",
        f"- python (peers, .venv): {env.get('python', '?')}; bench: {platform.python_version()}",
        f"- background load: before the run {env.get('load_before', '?')}; "
        f"{env.get('load_during', '?')}",
        f"- svcengine {env.get('svcengine', 'n/a')}, "
        f"last commit to svcengine/: {env.get('commit', '?')}; "
        f"gunicorn {env.get('gunicorn', 'n/a')} (sync workers, defaults)"
        + (
            f"; ServerEngine {env['serverengine']} and Unicorn {env['unicorn']} on ruby "
            f"{env['ruby']} (Debian's packages)"
            if "ruby" in env
            else ""
        ),
        "",
        "Ratio = svcengine / peer (below 1: svcengine smaller/faster; "
        "`<` or `>` where one side hit the cap). — : not measured; n/a: no value "
        "(the Ruby peers don't send sd_notify READY=1).",
        "",
        *table(b, labels),
        "",
        "## How each figure is taken",
        "",
        "- Process fork/exec/exit times are the kernel's own (Linux proc connector, "
        "CLOCK_MONOTONIC); the bench sends signals and notes CLOCK_MONOTONIC right before.",
        '- "Running app code" is a datagram each worker sends with its CLOCK_MONOTONIC time: '
        "svcengine from the first line of `Worker.run()` (an idle worker), gunicorn from its "
        "`post_worker_init` hook (after the WSGI app is loaded, before the request loop), "
        "ServerEngine from the first line of its worker's `run` (`bench/apps/serverengine_hello.rb`"
        ": `process` workers, no supervisor process, a unix socket bound by the server before it "
        "forks), Unicorn from its `after_worker_ready` hook (`bench/apps/unicorn_conf.rb`, "
        "`hello.ru`, `-E none`, a unix socket).",
        f"- respawn: {b.args.workers} workers, killed round-robin (oldest first), each having "
        f"lived ≥ {b.args.min_life:g} s since it was ready (svcengine backs off workers that "
        "crash within ~1 s of their start; the same pacing is used for gunicorn).",
        "- orphans: SIGKILL to the master, then the kernel's exit events of its workers; a trial "
        f"whose workers outlive {b.args.orphan_cap:g} s is reported as over the cap and its "
        "workers are killed by pid. Gunicorn and ServerEngine trials run concurrently (their time "
        "is set by a timer — gunicorn's sync worker checks its parent every `timeout`/2 = 15 s — "
        "or never comes, not by CPU); svcengine and Unicorn trials run one at a time.",
        "- start: from the master's exec (kernel event) to the last worker's app-ready marker. "
        "READY=1 is when the bench's NOTIFY_SOCKET received it (gunicorn sends it before it forks "
        "any worker; svcengine once every worker is ready).",
        f"- graceful stop: same instances as start, after {b.args.settle:g} s idle: the peer's "
        "graceful stop signal (SIGTERM; SIGQUIT for Unicorn, whose TERM is a quick stop) → the "
        "kernel's exit events of the last worker and of the master.",
        f"- idle: after {b.args.settle:g} s settle, {b.args.idle_seconds:g} s of "
        "voluntary+nonvoluntary context switches summed over the master's threads "
        "(/proc/PID/task/*/status), CPU from utime+stime (/proc/PID/stat, clock ticks) and from "
        "schedstat (ns).",
        "- HTTP example (defaults): svcengine runs `svcengine --name bench --listen "
        "127.0.0.1:PORT --workers N http_worker:HttpWorker` (examples/ on PYTHONPATH; no config "
        "file: no preload), the peers their hello-world HTTP apps above on a loopback TCP port. "
        f"Memory: after {b.args.settle:g} s idle, /proc/PID/smaps_rollup of the master and of "
        "each worker: USS = Private_Clean + Private_Dirty (what the worker alone holds), PSS; "
        "a process of the pool that is not a worker (svcengine: not titled `svcengine "
        "worker[N]`, e.g. a mold) is added to the master's row and to the total. Respawn → "
        "serving: the oldest worker, once it has served "
        f"{b.args.min_life:g} s, is SIGKILLed while each other worker is held reading a request "
        "(the bench opens one connection per worker and sends only a request line, then waits "
        "for the listen queue, /proc/net/tcp, to be empty); the time is from just before the "
        "kill to the complete answer to a request sent right after it, which only the "
        "replacement can take: each answer names its pid (svcengine's body `(pid N)`, the "
        "peers' X-Pid header), and one from an old worker is an error. Start: exec → the last "
        "app-ready marker for the peers; examples/http_worker.py sends none, so for svcengine "
        "exec → READY=1 on the bench's NOTIFY_SOCKET, which its master sends once every "
        "worker has imported its module and reported ready right before run() (a later, "
        "never earlier, moment than the marker would be: the idle-worker rows above show the "
        "gap). Each start ends with one request answered.",
    ]
    if b.notes or b.errors:
        lines += ["", "## Observations from this run", ""]
        lines += [f"- {n}" for n in b.notes]
        lines += [f"- ERROR: {e}" for e in b.errors]
    lines += [
        "",
        "## Machine load per phase",
        "",
        "CPU busy over each phase, as a share of all cores: all of it, and in brackets the share "
        "the bench and the processes it started used themselves (their CPU times once reaped). "
        "Much more in the first than in the second means something else was running:",
        "",
        "; ".join(f"{k} {v:.0f}% ({o:.0f}%)" for k, (v, o) in b.phase_load.items()),
    ]
    lines += ["", "## Samples", ""]
    for fig, per in b.samples.items():
        for peer, xs in per.items():
            if fig == "respawn":
                desc = "; ".join(
                    f"{s['fork_ms']:.2f}/{s['ready_ms']:.2f}" if s["fork_ms"] is not None else "?"
                    for s in xs
                )
                lines.append(f"- respawn {peer} (fork/ready ms): {desc}")
            elif fig == "orphan":
                desc = ", ".join(f"{s['ms']:.1f}" if s["ms"] is not None else ">cap" for s in xs)
                lines.append(f"- orphans {peer} (ms): {desc}")
            elif fig == "http_respawn":
                desc = "; ".join(
                    f"{s['fork_ms'] if s['fork_ms'] is not None else float('nan'):.2f}/"
                    f"{s['serving_ms']:.2f}"
                    for s in xs
                )
                lines.append(f"- HTTP respawn {peer} (fork/serving ms): {desc}")
            elif fig == "http_memory":
                desc = ", ".join(f"{k} {v * 1024:.0f}" for k, v in xs[0].items() if k != "workers")
                lines.append(f"- HTTP memory {peer} (KiB): {desc}")
            elif fig.startswith(("start_", "fork1_", "stop_", "wstop_", "ready1_", "http_")):
                desc = ", ".join(f"{x:.1f}" if x is not None else "—" for x in xs)
                unit = "MiB" if fig.startswith("http_total_pss_") else "ms"
                lines.append(f"- {fig} {peer} ({unit}): {desc}")
    kept = ""  # a hand-written reading of the figures, below KEEP, survives a rewrite
    with contextlib.suppress(OSError):
        old = path.read_text()
        if KEEP in old:
            kept = "\n" + old[old.index(KEEP) :]
    path.write_text("\n".join(lines) + "\n" + kept)
