"""Layers that only point down: every import inside svcengine, of every kind (top-level,
deferred inside a function, and under TYPE_CHECKING), goes to the same or a lower layer, and
the whole graph is acyclic. Modules are found by walking the package, so a new one must be
given a layer here. Also the start-up import budget: what `import svcengine.cli` loads.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import svcengine

PKG = Path(svcengine.__file__).parent

# lowest first; a module belongs to the first prefix that matches its dotted name
LAYERS: list[tuple[str, ...]] = [
    ("protocol", "errors", "typecheck", "limits"),  # contracts, stdlib only
    ("unix", "amqp.settings", "config", "rundir", "hooks"),  # OS adapters; the config, its checks
    ("timers", "signals", "channel"),  # pure parts, pipes
    ("child", "worker", "spawn", "threads", "embedded", "amqp"),  # the worker side
    ("upgrade", "control", "report", "master"),  # the master
    ("server", "starting", "spawned", "demo"),  # a service: start-up, tear-down, exec entries
    ("cli", "__init__", "__main__"),  # the commands and the lazy public API
]

# Upward edges still to remove, in part A's files (the master split of issue 13); each is a
# whole object passed down (review §3). Remove a line when its edge goes: the test says so.
KNOWN_UPWARD = {
    ("worker", "child"),  # TYPE_CHECKING: Worker(runtime)
}


def modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        parts = path.relative_to(PKG).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)] = path
    return out


def layer(name: str) -> int:
    for i, prefixes in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return i
    raise AssertionError(f"svcengine.{name} has no layer: add it to LAYERS in {__file__}")


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The svcengine modules `name` imports, in any form."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name.removeprefix("svcengine.") for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1] if node.level > 1 else package
                base = [*base, *(node.module or "").split(".")] if node.module else base
            elif node.module and node.module.split(".")[0] == "svcengine":
                base = node.module.split(".")[1:]
            else:
                continue
            prefix = ".".join(p for p in base if p)
            targets = [f"{prefix}.{a.name}" if prefix else a.name for a in node.names]
            targets = [t if t in known else prefix for t in targets]
        else:
            continue
        out |= {t for t in targets if t in known and t != name}
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods) | {"__init__"}
    return {n: {t or "__init__" for t in imports(n, p, known)} for n, p in mods.items()}


def top(name: str) -> str:
    return name.split(".")[0]


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if state.get(m) == 1:
                return [*stack[stack.index(m) :], m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    return next((c for n in sorted(edges) if n not in state and (c := visit(n))), None)


def test_every_module_has_a_layer_and_imports_point_down() -> None:
    bad, seen = [], set()
    for name, targets in graph().items():
        for target in targets:
            pair = (top(name), top(target))
            if layer(target) > layer(name) and pair not in KNOWN_UPWARD:
                bad.append(f"svcengine.{name} -> svcengine.{target}")
            seen.add(pair)
    assert not bad, "imports pointing up a layer:\n" + "\n".join(sorted(bad))
    gone = sorted(p for p in KNOWN_UPWARD if p not in seen)
    assert not gone, f"no longer imported: remove from KNOWN_UPWARD: {gone}"


def test_no_import_cycle_besides_the_known_upward_edges() -> None:
    edges = {
        n: {t for t in ts if (top(n), top(t)) not in KNOWN_UPWARD} for n, ts in graph().items()
    }
    assert cycle(edges) is None


def test_no_import_cycle_at_all() -> None:
    assert cycle(graph()) is None


def test_start_up_import_budget() -> None:
    """`svcengine` (the command) must stay quick to start: what only some runs need is
    imported where it is needed (the upgrade on USR2, json for ctl or spawn workers)."""
    code = "import sys, svcengine.cli; print(' '.join(sorted(sys.modules)))"
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    never = {
        "json",
        "tomllib",
        "random",
        "daemon",
        "sdnotify",
        "svcengine.upgrade",
        "svcengine.cli.ctl",
        "svcengine.embedded",
        "svcengine.threads",
    }
    assert not loaded & never


MAX_MODULE_LINES = 300
MAX_CLASS_LINES = 250


def test_no_module_over_300_lines_and_no_class_over_250() -> None:
    """Small modules, one concern each (issue 13): a module that grows past this is split."""
    too_long = []
    for name, path in modules().items():
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            too_long.append(f"svcengine.{name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > MAX_CLASS_LINES:
                    too_long.append(f"svcengine.{name}.{node.name}: class of {size} lines")
    assert not too_long, too_long
