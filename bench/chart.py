#!/usr/bin/env python3
"""Draw docs/benchmarks.png: svcengine vs Gunicorn, ServerEngine and Unicorn, grouped bars.

    .venv/bin/python bench/chart.py [--run bench/out/STAMP/results.json]
                                     [--more docs/benchmarks-more.json] [--output PNG]

Reads the results bench/run.py leaves in bench/out/<stamp>/results.json (default:
the newest one holding a svcengine start figure) and the JSON bench/more.py
writes (default: docs/benchmarks-more.json, else the newest bench/out/more-*.json).
Needs matplotlib (the project's `bench` extra: .venv/bin/pip install matplotlib).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PEERS = ("svcengine", "gunicorn")
RUBY = ("serverengine", "unicorn")  # measured when Debian's packages are installed
COLORS = {
    "svcengine": "#1f77b4",
    "gunicorn": "#ff7f0e",
    "serverengine": "#2ca02c",
    "unicorn": "#d62728",
}


# [(label, {series: (value, mark)})]
Groups = list[tuple[str, dict[str, tuple[float | None, str]]]]


def parse(v: object) -> tuple[float | None, str]:
    """run.py keeps formatted strings: '143', '>14750' (capped), 'n/a', '—'."""
    if v is None:
        return None, ""
    if isinstance(v, int | float):
        return float(v), ""
    s = str(v).strip()
    mark = s[0] if s[:1] in "<>" else ""
    try:
        return float(s.lstrip("<>")), mark
    except ValueError:
        return None, ""


def newest_run_results() -> Path | None:
    for p in sorted(BENCH.glob("out/*/results.json"), reverse=True):
        try:
            figs = json.loads(p.read_text()).get("figures", {})
        except (OSError, ValueError):
            continue
        if any(k.startswith("start_") and parse(v.get("svcengine"))[0] for k, v in figs.items()):
            return p
    return None


def default_more() -> Path | None:
    doc = REPO / "docs" / "benchmarks-more.json"
    if doc.exists():
        return doc
    found = sorted(BENCH.glob("out/more-*.json"), reverse=True)
    return found[0] if found else None


def fmt(v: float | None, mark: str = "") -> str:
    if v is None:
        return "n/a"
    if v == 0:
        return "0"
    if v >= 1000:
        s = f"{v / 1000:.1f}k" if v < 100_000 else f"{v / 1000:.0f}k"
    elif v >= 100:
        s = f"{v:.0f}"
    elif v >= 10:
        s = f"{v:.1f}"
    else:
        s = f"{v:.3g}" if v < 1 else f"{v:.1f}"
    return mark + s


def bars(
    ax: Any,
    groups: Groups,
    *,
    log: bool,
    title: str,
    ylabel: str,
    series: tuple[str, ...] = PEERS,
    colors: dict[str, str] | None = None,
) -> None:
    """groups: [(label, {series: (value, mark)})]. Zeros and n/a are annotated."""
    import numpy as np

    colors = colors or COLORS
    x = np.arange(len(groups))
    width = 0.8 / len(series)
    vals = [v for _, d in groups for v, _ in d.values() if v]
    top = max(vals) if vals else 1.0
    floor = min(vals) / 3 if (log and vals) else 0.0
    for i, name in enumerate(series):
        xs = x + (i - (len(series) - 1) / 2) * width
        ys = []
        for _, d in groups:
            v, _ = d.get(name, (None, ""))
            ys.append(v if v else (floor if log else 0.0))
        keep = [j for j, (_, d) in enumerate(groups) if name in d]  # absent: no bar, no label
        ax.bar(
            xs[keep], [ys[j] for j in keep], width * 0.95, label=name, color=colors[name], zorder=2
        )
        for xx, (_, d) in zip(xs, groups, strict=True):
            if name not in d:
                continue
            v, mark = d.get(name, (None, ""))
            y = v if v else (floor if log else 0.0)
            ax.annotate(
                fmt(v, mark),
                (xx, y),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=8,
            )
    ax.set_xticks(x, [g for g, _ in groups], fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.grid(axis="y", alpha=0.3, zorder=0)
    if log:
        ax.set_yscale("log")
        ax.set_ylim(floor / 1.5 if floor else None, top * 4)
    else:
        ax.set_ylim(0, top * 1.18 if top else 1)
    ax.legend(fontsize=8, loc="best")


def http_panels(fig: Any, gs: Any, r: Any, sizes: Any, panel: Any) -> None:
    """The 4th row: run.py's HTTP example with defaults (examples/http_worker.py for svcengine)."""
    what = "HTTP example, defaults (svcengine: examples/http_worker.py, no preload)"
    rows = (  # groups, log scale, what and unit
        (
            [
                ("respawn →\nserving\nmedian", r("http_respawn_serving_median")),
                ("respawn →\nserving\np95", r("http_respawn_serving_p95")),
                *((f"start,\n{n} workers", r(f"http_start_{n}")) for n in sizes("http_start_")),
            ],
            True,
            "respawn and start (ms, log scale",
            "ms (log)",
        ),
        (
            [
                ("worker USS\n(private),\nmean", r("http_mem_worker_uss")),
                ("worker PSS,\nmean", r("http_mem_worker_pss")),
                ("master PSS", r("http_mem_master_pss")),
            ],
            False,
            "memory, 4 idle workers (KiB",
            "KiB",
        ),
        (
            [(f"{n} workers", r(f"http_total_pss_{n}")) for n in sizes("http_total_pss_")],
            False,
            "total PSS, master + idle workers (MiB",
            "MiB",
        ),
    )
    for col, (groups, log, title, unit) in enumerate(rows):
        ax = fig.add_subplot(gs[3, col])
        panel(ax, groups, log=log, title=f"{what}:\n{title}; lower is better)", ylabel=unit)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="bench/run.py's results.json")
    ap.add_argument("--more", type=Path, help="bench/more.py's JSON")
    ap.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.png")
    args = ap.parse_args()
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("matplotlib missing: .venv/bin/pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_path = args.run.resolve() if args.run else newest_run_results()
    more_path = args.more.resolve() if args.more else default_more()
    if run_path is None and more_path is None:
        raise SystemExit("no results: run bench/run.py and/or bench/more.py first")
    figs = json.loads(run_path.read_text())["figures"] if run_path else {}
    more = json.loads(more_path.read_text()) if more_path else {}
    rows = more.get("rows", {})

    def r(key: str) -> dict[str, tuple[float | None, str]]:
        vals = figs.get(key, {})
        return {p: parse(vals.get(p)) for p in (*PEERS, *RUBY) if p in vals or p in PEERS}

    def m(key: str) -> dict[str, tuple[float | None, str]]:
        vals = rows.get(key, {}).get("values", {})
        return {p: parse(vals.get(p)) for p in (*PEERS, *RUBY) if p in vals or p in PEERS}

    def peers_in(groups: Groups) -> tuple[str, ...]:
        return (*PEERS, *(p for p in RUBY if any(p in d for _, d in groups)))

    def present(groups: Groups) -> Groups:
        return [g for g in groups if any(v is not None for v, _ in g[1].values())]

    def panel(ax: Any, groups: Groups, *, log: bool, title: str, ylabel: str) -> None:
        """Bars of the groups that have a value, one series per peer in them."""
        groups = present(groups)
        bars(ax, groups, series=peers_in(groups), log=log, title=title, ylabel=ylabel)

    http = any(k.startswith("http_") for k in figs)  # run.py's HTTP-example group: a 4th row
    fig = plt.figure(figsize=(17, 20 if http else 15))
    gs = fig.add_gridspec(4 if http else 3, 3)
    axes = [
        [fig.add_subplot(gs[0, i]) for i in range(3)],
        [fig.add_subplot(gs[1, 0]), fig.add_subplot(gs[1, 1:]), fig.add_subplot(gs[2, :2])],
    ]
    notes_ax = fig.add_subplot(gs[2, 2])
    notes_ax.set_axis_off()

    def sizes(prefix: str) -> list[int]:
        """The pool sizes run.py measured for a figure (4, 64, 256 by default)."""
        tails = (k.removeprefix(prefix) for k in figs if k.startswith(prefix))
        return sorted(int(t) for t in tails if t.isdigit())

    for ax, groups, title in (  # ms on a log scale, lower is better
        (
            axes[0][0],
            [
                ("respawn →\napp code\nmedian", r("respawn_ready_ms_median")),
                ("respawn →\napp code\np95", r("respawn_ready_ms_p95")),
                *((f"start,\n{n} workers", r(f"start_{n}")) for n in sizes("start_")),
            ],
            "Respawn and start: time until workers run app code",
        ),
        (
            axes[0][1],
            [
                *((f"graceful stop,\n{n} workers", r(f"wstop_{n}")) for n in sizes("wstop_")),
                ("orphans: SIGKILL\nmaster → last\nworker gone\n(median)", r("orphan_median")),
            ],
            "Stop: graceful stop signal / SIGKILL to master → last worker gone",
        ),
    ):
        panel(
            ax,
            groups,
            log=True,
            title=f"{title}\n(ms, log scale; lower is better)",
            ylabel="ms (log)",
        )
    panel(
        axes[0][2],
        [
            *((f"CPU ms per 10 s,\n{n} workers", r(f"idle_cpu_{n}")) for n in sizes("idle_cpu_")),
            *((f"wakeups/s,\n{n} workers", r(f"idle_wake_{n}")) for n in sizes("idle_wake_")),
        ],
        log=False,
        title="Idle master: CPU (ms per 10 s) and wakeups per second\n(lower is better)",
        ylabel="ms per 10 s / wakeups per s",
    )
    runs = sorted(k for k in rows if k.startswith("upgrade_failed_") and k[-1].isdigit())
    up_groups = []
    # one group per run while they fit, else the total alone
    for k in [*(runs if len(runs) <= 4 else []), "upgrade_failed_total"]:
        if k not in rows:
            continue
        of = rows[k].get("of", {})
        label = f"all {len(runs)} runs" if k.endswith("total") else f"run {k.rsplit('_', 1)[1]}"
        tot = "\n".join(fmt(float(of[p])) for p in (*PEERS, *RUBY) if p in of)
        up_groups.append((f"{label}, of\n{tot}", m(k)))
    up_peers = peers_in(up_groups)
    bars(
        axes[1][0],
        up_groups,
        log=False,
        title="Hot upgrade under load: failed requests\n"
        "(count; 8 clients, 4 workers; under each run:\n"
        f"requests sent, {', '.join(up_peers)} top to bottom)",
        ylabel="failed requests",
        series=up_peers,
    )
    panel(
        axes[1][1],
        [
            ("master RSS", m("mem_master_rss")),
            ("master PSS", m("mem_master_pss")),
            ("PSS per\nworker (mean)", m("mem_worker_pss")),
            ("PSS per worker,\nsvcengine with\npreload = true", m("mem_worker_pss_preload")),
            ("total PSS\n(master +\n4 workers)", m("mem_total_pss")),
            ("total PSS,\nsvcengine with\npreload = true", m("mem_total_pss_preload")),
        ],
        log=False,
        title="Memory, 4 idle hello-world HTTP workers\n"
        "(MiB, /proc/PID/smaps_rollup; lower is better)",
        ylabel="MiB",
    )
    if http:
        http_panels(fig, gs, r, sizes, panel)
    pss = more.get("samples", {}).get("pss_py", {}).get("values", {})
    if pss:
        groups = [
            (
                k.replace(" (MiB)", "").replace(", ", ",\n"),
                {"off": (v["off"], ""), "on": (v["on"], "")},
            )
            for k, v in pss.items()
        ]
        bars(
            axes[1][2],
            groups,
            log=False,
            title="svcengine `preload` (bench/pss.py, 4 workers of bench/apps/heavy.py)\n"
            "(MiB PSS; lower is better)",
            ylabel="MiB",
            series=("off", "on"),
            colors={"off": "#9ecae1", "on": "#08519c"},
        )
        axes[1][2].legend(["preload off", "preload on"], fontsize=8, loc="upper left")
    else:
        axes[1][2].set_axis_off()

    import textwrap

    src = []
    if run_path:
        src.append(f"bench/run.py figures: {run_path.relative_to(REPO)}")
    if more_path:
        src.append(
            "bench/more.py figures (upgrade, memory, preload): "
            f"{more_path.relative_to(REPO)}, {more.get('date', '?')}, "
            f"`{more.get('command', '?')}`"
        )
    mach = more.get("machine", {})
    ver = more.get("versions", {})
    if mach:
        src.append(
            f"machine: {mach.get('nproc')} CPUs ({mach.get('cpu')}), {mach.get('memory')}, "
            f"kernel {mach.get('kernel')}, {mach.get('os')}"
        )
    if ver:
        v = f"svcengine {ver.get('svcengine')}, gunicorn {ver.get('gunicorn')} (sync workers)"
        if "ruby" in ver:
            v += (
                f", ServerEngine {ver['serverengine']} and Unicorn {ver['unicorn']} "
                f"(ruby {ver['ruby']}, Debian packages)"
            )
        src.append(v)
    load = more.get("load", {})
    if load:
        src.append(
            f"CPU busy during bench/more.py: {load.get('during_pct', '?')}% over the run; "
            + ", ".join(f"{k} {v:.0f}%" for k, v in load.get("phases_pct", {}).items())
        )
    src.append(
        "Memory: examples/http_worker.py imports http.server once, in svcengine's mold (a "
        "child of the master that forks the workers; counted with the master); with "
        "preload = true in the master itself (gunicorn imports its own HTTP code in the "
        "master)."
    )
    src.append("Method and every number: docs/benchmarks.md, docs/benchmarks-more.md.")
    notes_ax.text(
        0.0,
        1.0,
        "\n\n".join(textwrap.fill(x, 62) for x in src),
        fontsize=8.5,
        va="top",
        ha="left",
        color="#333",
        transform=notes_ax.transAxes,
    )
    fig.suptitle(
        "svcengine vs Gunicorn, ServerEngine and Unicorn (the Ruby peers where installed), "
        "same machine",
        fontsize=14,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output} from {', '.join(src[:2])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
