"""tests/unit with each box release's own Python and Debian's python3-daemon, python3-sdnotify,
python3-setproctitle and python3-pytest (Debian 12: Python 3.11; Debian 13: Python 3.13), against
the wheel the `box` fixture installed. A few seconds per release.

SVCENGINE_BOX_INTEGRATION=1 adds tests/integration (about two minutes per release): real
processes in a machine that systemd booted (net.unix.max_dgram_qlen is 512 there, not 10).
"""

from __future__ import annotations

import os

import pytest
from boxlib import REPO, Box

pytestmark = pytest.mark.systemd

DEST = "/opt/svcengine-tests"


def test_python_tests_pass_in_the_box(box: Box):
    suites = ["tests/unit"]
    if os.environ.get("SVCENGINE_BOX_INTEGRATION") == "1":
        suites.append("tests/integration")
    for path in [*suites, "examples"]:
        if (REPO / path).is_dir():
            box.put_dir(REPO / path, f"{DEST}/{path}")
    python = box.out("python3", "--version").strip()
    proc = box.run(
        "/bin/sh",
        "-c",
        f'cd {DEST} && exec python3 -m pytest -p no:cacheprovider -q -ra "$@"',
        "sh",
        *suites,
        check=False,
        timeout=1200,
    )
    out = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
    print(f"{python} in {box.suite}: {out.strip().splitlines()[-1] if out.strip() else ''}")
    assert proc.returncode == 0, f"{python} in {box.suite}: pytest exit {proc.returncode}\n{out}"
