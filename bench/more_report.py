"""more.py's report: the table it prints and docs/benchmarks-more.md (its JSON is written
by more.py itself).
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common import fmt_num, md_table, ratio

if TYPE_CHECKING:
    from more import More

PEER_ORDER = ("svcengine", "gunicorn", "serverengine", "unicorn")


def table(rows: dict[str, dict[str, Any]]) -> list[str]:
    extra = [p for p in PEER_ORDER[2:] if any(p in r["values"] for r in rows.values())]
    peers = ["svcengine", "gunicorn", *extra]
    head = ["figure", "unit", *peers, *(f"svcengine/{p}" for p in peers[1:])]
    out: list[list[str]] = []
    for row in rows.values():
        v = row["values"]
        cells = [row["title"], row["unit"]]
        for peer in peers:
            s = fmt_num(v[peer]) if peer in v else "—"
            if row.get("of") and peer in row["of"]:
                s += f" of {row['of'][peer]}"
            cells.append(s)
        cells += [ratio(v.get("svcengine"), v.get(p)) for p in peers[1:]]
        out.append(cells)
    return md_table(head, out)


def report(res: dict[str, Any], lines: list[str], b: More, args: argparse.Namespace) -> str:
    m, v = res["machine"], res["versions"]
    raw = Path(args.output).with_suffix(".json").name
    doc = [
        "# More benchmarks: svcengine vs Gunicorn (upgrade under load, memory), with Ruby peers",
        "",
        "Written by `bench/more.py`; the other figures are in [benchmarks.md](benchmarks.md). "
        "Every number below comes from one run of the command shown, on the machine shown; "
        f"the raw samples are in [{raw}]({raw}).",
        "",
        f"- date: {res['date']}",
        f"- command: `{res['command']}` (took {res['took_s']:.0f} s)",
        f"- machine: nproc {m['nproc']} ({m['cpu']}), {m['memory']}, kernel {m['kernel']}, "
        f"{m['os']}",
        f"- python (peers, .venv): {v['python']}; bench: {platform.python_version()}",
        f"- svcengine {v['svcengine']}, last commit to svcengine/: {v['commit']}"
        + (" (svcengine/ had uncommitted edits)" if v["dirty"] == "yes" else "")
        + f"; gunicorn {v['gunicorn']} (sync workers, defaults)"
        + (
            f"; ruby {v['ruby']}, ServerEngine {v['serverengine']} (process workers, no "
            f"supervisor), Unicorn {v['unicorn']} (Debian packages)"
            if "ruby" in v
            else ""
        ),
        f"- CPU busy (all cores, bench included): {res['load']['before_pct']:.0f}% in the 2 s "
        f"before, {res['load']['during_pct']:.0f}% over the run ("
        + ", ".join(f"{k} {v:.0f}%" for k, v in res["load"]["phases_pct"].items())
        + f"); loadavg {res['load']['loadavg_end']} at the end. This bench alone keeps "
        "the machine busy during the upgrade runs (8 client threads + 4 workers); more than "
        "that means something else was running.",
        "",
        "Ratio = svcengine / peer (below 1: svcengine fewer/smaller/faster).",
        "",
        *lines,
        "",
    ]
    if res["pss_table"]:
        doc += [
            "## `preload` (bench/pss.py, svcengine only)",
            "",
            "`bench/pss.py --workers 4`, run by this bench as it is: a worker module that imports "
            "several stdlib packages and builds a ~30 MB table at import.",
            "",
            *res["pss_table"],
            "",
        ]
    doc += ["## Ruby peers", "", res["ruby"] or "not run (`--only`)", ""]
    up = b.samples.get("upgrade", {})
    if up:
        doc += ["## Upgrade runs", ""]
        for peer, rs in up.items():
            for r in rs:
                kinds = ", ".join(f"{k} ×{n}" for k, n in r["failure_kinds"].items()) or "none"
                doc.append(
                    f"- {peer} run {r['run']}: {r['failed']} failed of {r['total']}; signal at "
                    f"{r['upgrade_at_s']:.1f} s, new workers ready at {r['upgrade_done_s']:.1f} s, "
                    f"old tree gone at {r['old_gone_s']:.1f} s; master {r['old_master']} → "
                    f"{r['new_master']}; failures: {kinds}"
                )
        doc.append("")
    doc += [
        "## How each figure is taken",
        "",
        f"- hot upgrade: 4 workers serving hello-world HTTP on 127.0.0.1 (svcengine: "
        "`examples/http_worker.py` HttpWorker with `listen`, started with `svcengine "
        "--daemonize --pid P`; gunicorn: sync workers, `bench/apps/hello.py`, `--pid P`). "
        f"{args.clients} client threads in the bench, a new connection per request "
        f"(`http.client`, 10 s timeout), for {args.load_seconds:g} s; {args.upgrade_at:g} s in: "
        "svcengine `svcengine ctl --pid P upgrade` (USR2, waits for the outcome); gunicorn USR2 "
        "to the master, wait for the new master's pid file (gunicorn 2x writes `P.2`, and renames "
        "it to `P` once promoted) and for its 4 workers' `post_worker_init` markers, then TERM to "
        "the old master. A failure is a connection error, a timeout or a non-200 status. "
        "The upgrade-time context row counts, for svcengine, the start of the `svcengine ctl` "
        "Python process too (its USR2 is sent once it has started), on a machine kept busy by "
        "the load; gunicorn's starts at the bench's own `os.kill`. "
        f"{args.runs} runs each, interleaved.",
        "- memory: a fresh instance of each with 4 HTTP workers on loopback (the upgrade "
        f"figure's apps), {args.settle * 2:g} s after all workers are ready (svcengine: READY=1 "
        "on the bench's NOTIFY_SOCKET; gunicorn: 4 markers); RSS and PSS from "
        "`/proc/PID/smaps_rollup`. PSS splits each shared page between the processes sharing "
        "it, so master + workers PSS is what the service really costs. "
        "`examples/http_worker.py` imports `http.server` (which pulls in `email`, `html`, "
        "`mimetypes`, `socketserver`) once, in svcengine's mold (a child of the master that "
        "forks every worker; its PSS is added to the master's row), while gunicorn's master "
        "has imported gunicorn's own HTTP code before forking and `bench/apps/hello.py` imports "
        "nothing; the two context rows (svcengine with `preload = true`: imported in the "
        "master, and svcengine running `bench/apps/idle.py`) separate that from svcengine's "
        "own cost.",
        *(
            [
                "- Ruby peers (Debian's packages): Unicorn runs `bench/apps/hello.ru` with "
                "`bench/apps/unicorn_conf.rb` (4 workers, `-E none`, marker from "
                "`after_worker_ready`); its upgrade is Unicorn's documented one: USR2, wait for "
                "the new master's pidfile and its 4 workers, then QUIT (Unicorn's graceful stop; "
                "its TERM is the quick one) to the old master. ServerEngine runs "
                "`bench/apps/serverengine_hello.rb`: 4 `process` workers, no supervisor process, "
                "serving hello-world HTTP/1.0 on a TCP socket the server binds before forking "
                "(marker from the first line of `run`). Memory only: ServerEngine has no hot "
                "master upgrade.",
            ]
            if "ruby" in v
            else []
        ),
        "- processes: started with `subprocess.Popen(restore_signals=True, "
        "start_new_session=True)`; the bench is a child subreaper, so daemonized and upgraded "
        "masters stay its descendants. Each instance is ended by pid (TERM, then SIGKILL by pid "
        "after 30 s) and every pid is checked gone in /proc; " + res["cleanup"] + ".",
    ]
    if b.notes or b.errors:
        doc += ["", "## Observations from this run", ""]
        doc += [f"- {n}" for n in b.notes]
        doc += [f"- ERROR: {e}" for e in b.errors]
    return "\n".join(doc) + "\n"
