"""The unix/ fence: Linux-only calls are made in svcengine/unix/ and nowhere else, so a port
or a fallback has one place to go (review §2.6: pipe2, memfd, pidfd, SO_PEERCRED, prctl
were spread over six modules)."""

from __future__ import annotations

import ast
from pathlib import Path

import svcengine

PKG = Path(svcengine.__file__).parent

# module attribute -> its adapter in unix/linux.py
FENCED = {
    ("os", "pipe2"): "linux.pipe()",
    ("os", "memfd_create"): "linux.memfd()",
    ("os", "MFD_CLOEXEC"): "linux.memfd()",
    ("os", "pidfd_open"): "linux.pidfd_open()",
    ("signal", "pidfd_send_signal"): "linux.pidfd_signal()",
    ("signal", "signalfd"): "linux.signalfd()",
    ("socket", "SO_PEERCRED"): "linux.peer_credentials()",
    ("ctypes", "CDLL"): "linux.py (prctl and friends)",
}


def fenced_uses(text: str, where: str) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if (node.value.id, node.attr) in FENCED:
                out.append(f"{where}:{node.lineno}: {node.value.id}.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                if (node.module, alias.name) in FENCED:
                    out.append(f"{where}:{node.lineno}: from {node.module} import {alias.name}")
    return out


def test_linux_only_calls_live_in_unix():
    found = [
        use
        for path in sorted(PKG.rglob("*.py"))
        if path.relative_to(PKG).parts[0] != "unix"
        for use in fenced_uses(path.read_text(), str(path.relative_to(PKG)))
    ]
    assert not found, "call these through svcengine/unix/linux.py:\n" + "\n".join(found)


def test_the_fence_sees_a_call_in_either_form():
    text = "import os\nfrom socket import SO_PEERCRED\nr, w = os.pipe2(os.O_CLOEXEC)\n"
    assert sorted(fenced_uses(text, "x.py")) == [
        "x.py:2: from socket import SO_PEERCRED",
        "x.py:3: os.pipe2",
    ]
