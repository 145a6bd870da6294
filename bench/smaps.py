#!/usr/bin/env python3
"""Where a process's private memory is: /proc/PID/smaps summed per mapping kind, biggest first.

    python bench/smaps.py PID [PID ...] [--mappings N]

Private = Private_Clean + Private_Dirty (the USS, what the process alone holds and frees when it
exits); PSS and RSS beside it. Rows: the main heap, each thread's stack (the anonymous mapping
holding the thread's stack pointer, from /proc/PID/task/TID/syscall: needs root or the same
user), glibc malloc arenas of other threads (anonymous, 64 MiB-aligned), the rest of anonymous
memory (pymalloc arenas, large mallocs, the interpreter's mmaps), each file (the executable,
each .so, others), the kernel's ([vdso], ...). ``--mappings N`` adds the N mappings holding the
most private memory. Standard library only; reads /proc, changes nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections import defaultdict
from dataclasses import dataclass, field

ARENA_ALIGN = 64 << 20  # glibc's HEAP_MAX_SIZE on 64-bit: a thread arena starts on this boundary
KEYS = ("Rss", "Pss", "Private_Clean", "Private_Dirty")


@dataclass
class Mapping:
    start: int
    end: int
    perms: str
    name: str  # path, [heap], [stack], ... or "" (anonymous)
    kib: dict[str, int] = field(default_factory=dict)

    @property
    def private(self) -> int:
        return self.kib.get("Private_Clean", 0) + self.kib.get("Private_Dirty", 0)


def read_smaps(pid: int) -> list[Mapping]:
    maps: list[Mapping] = []
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split(maxsplit=5)
            if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                lo, hi = head[0].split("-")
                name = head[5].strip() if len(head) > 5 else ""
                maps.append(Mapping(int(lo, 16), int(hi, 16), head[1], name))
            elif head[0].rstrip(":") in KEYS:
                maps[-1].kib[head[0].rstrip(":")] = int(head[1])
    return maps


def thread_sps(pid: int) -> dict[int, tuple[int, str]]:
    """Stack pointer -> (tid, thread name) of every thread blocked in a system call."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{pid}/task/{tid}/syscall") as f:
                fields = f.read().split()  # NR args(6) SP PC; "running" while on a CPU
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                comm = f.read().strip()
            out[int(fields[7], 16)] = (int(tid), comm)
    return out


def kind(m: Mapping, exe: str, sps: dict[int, tuple[int, str]]) -> str:
    """The row a mapping is summed into."""
    if m.name == "[heap]":
        return "[heap] (main malloc arena: brk)"
    if m.name == "[stack]":
        return "[stack] (main thread)"
    if m.name.startswith("["):
        return f"{m.name} (kernel)"
    if m.name:
        path = m.name.removesuffix(" (deleted)")
        if path == exe:
            return f"{path} (the executable)"
        return path
    for sp, (tid, comm) in sps.items():
        if m.start <= sp < m.end:
            return f"thread stack: tid {tid} ({comm})"
    if m.start % ARENA_ALIGN == 0 and "w" in m.perms:
        return "malloc arena of a thread (anonymous, 64 MiB-aligned)"
    if "w" not in m.perms:
        return "anonymous, not writable (guard pages, arena reserve)"
    return "anonymous (pymalloc arenas, large mallocs, other mmaps)"


def table(pid: int, top: int) -> list[str]:
    maps = read_smaps(pid)
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        exe = ""
    sps = thread_sps(pid)
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        title = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    rows: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys((*KEYS, "n"), 0))
    for m in maps:
        row = rows[kind(m, exe, sps)]
        row["n"] += 1
        for k in KEYS:
            row[k] += m.kib.get(k, 0)
    total = {k: sum(r[k] for r in rows.values()) for k in (*KEYS, "n")}
    lines = [
        f"pid {pid}: {title}",
        f"{len(sps)} threads seen in a system call, {total['n']} mappings",
        "",
        "| mappings | n | private kB | Private_Clean | Private_Dirty | PSS kB | RSS kB |",
        "|---|---|---|---|---|---|---|",
    ]
    ordered = sorted(rows, key=lambda n: -(rows[n]["Private_Clean"] + rows[n]["Private_Dirty"]))
    quiet = [n for n in ordered if rows[n]["Private_Clean"] + rows[n]["Private_Dirty"] == 0]
    lines += [cells(n, rows[n]) for n in ordered if n not in quiet]
    if quiet:
        rest = {k: sum(rows[n][k] for n in quiet) for k in (*KEYS, "n")}
        lines.append(cells(f"({len(quiet)} more rows with no private memory)", rest))
    lines.append(cells("total", total))
    if top:
        lines += ["", f"The {top} mappings holding the most private memory:", ""]
        lines += ["| address | perms | private kB | dirty | PSS | row |", "|---" * 6 + "|"]
        for m in sorted(maps, key=lambda m: -m.private)[:top]:
            size = (m.end - m.start) >> 10
            lines.append(
                f"| {m.start:x} ({size} kB) | {m.perms} | {m.private} | "
                f"{m.kib.get('Private_Dirty', 0)} | {m.kib.get('Pss', 0)} | {kind(m, exe, sps)} |"
            )
    return lines


def cells(name: str, r: dict[str, int]) -> str:
    private = r["Private_Clean"] + r["Private_Dirty"]
    return (
        f"| {name} | {r['n']} | {private} | {r['Private_Clean']} | {r['Private_Dirty']} | "
        f"{r['Pss']} | {r['Rss']} |"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pids", type=int, nargs="+", metavar="PID")
    ap.add_argument("--mappings", type=int, default=0, metavar="N", help="the N biggest mappings")
    args = ap.parse_args()
    for i, pid in enumerate(args.pids):
        try:
            print(("\n" if i else "") + "\n".join(table(pid, args.mappings)))
        except OSError as e:
            print(f"pid {pid}: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
