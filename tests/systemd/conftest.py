"""The `box` fixture: a real systemd booted with tests/systemd/box.sh, once per Debian release
(boxlib.RELEASES: Debian 12 with systemd 252, Debian 13 with systemd 257), with this checkout's
wheel, the unit files, the examples and the test workers installed in it. Every test that uses
it runs in each release; pytest finishes one release's box before it boots the next.

Needs root. Skips (with the reason) where systemd-nspawn cannot work. Each run boots boxes named
for it (svcengine-test-PID, svcengine-deb-PID, each with -trixie for Debian 13) and removes
them after; set BOX_NAME (and
SVCENGINE_DEB_BOX) to use fixed names instead. Set SVCENGINE_BOX_KEEP=1 to leave the box running
after the session (inspect it with `BOX_NAME=... tests/systemd/box.sh exec ...`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from boxlib import (
    CONF_DIR,
    EXIT_PROBE,
    UNIT_DIR,
    Box,
    box_name,
    box_sh,
    provision,
    releases,
    skip_reason,
    wait_none_left,
)

# A box of this run's own (two root runs on one host must not share one), unless BOX_NAME /
# SVCENGINE_DEB_BOX name one; removed whole at the end of the session (see _own_boxes_removed).
_OWN_BOXES = [
    n
    for n, v in (("BOX_NAME", "svcengine-test"), ("SVCENGINE_DEB_BOX", "svcengine-deb"))
    if os.environ.setdefault(n, f"{v}-{os.getpid()}") == f"{v}-{os.getpid()}"
]


@pytest.fixture(scope="session", autouse=True)
def _own_boxes_removed() -> Iterator[None]:
    """After the session: `box.sh reset` and the state dir of each box named for this run, so
    that per-run names leave no rootfs copies behind (the cached tarball stays)."""
    yield
    box_dir = os.environ.get("BOX_DIR", "/var/lib/svcengine-testbox")
    names = [box_name(os.environ[var], suite) for var in _OWN_BOXES for suite in releases()]
    for name in names:
        if (
            os.path.isdir(os.path.join(box_dir, name))
            and os.environ.get("SVCENGINE_BOX_KEEP") != "1"
        ):
            reset = box_sh("reset", timeout=180, name=name)
            assert reset.returncode == 0, f"box.sh reset {name} failed:\n{reset.stderr}"
            shutil.rmtree(os.path.join(box_dir, name), ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(box_dir, f".{name}.lock"))


@pytest.fixture(scope="session")
def wheel_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("wheel")


@pytest.fixture(scope="session", params=releases())
def box(request, wheel_dir: Path) -> Iterator[Box]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    suite = request.param
    name = box_name(os.environ.get("BOX_NAME", "svcengine-test"), suite)
    t0 = time.monotonic()
    # first run: apt-get + debootstrap (a minute or two); later: the cached tarball, about 1 s
    up = box_sh("up", timeout=900, name=name, suite=suite)
    if up.returncode != 0:
        box_sh("down", timeout=120, name=name, suite=suite)
        pytest.fail(f"box.sh up ({name}) failed (exit {up.returncode}):\n{up.stderr}{up.stdout}")
    b = Box(name, suite)
    try:
        provision(b, wheel_dir)
        print(f"\n{suite} box ready in {time.monotonic() - t0:.1f} s", file=sys.stderr)
        yield b
    finally:
        if os.environ.get("SVCENGINE_BOX_KEEP") != "1":
            down = box_sh("down", timeout=120, name=name, suite=suite)
            assert down.returncode == 0, f"box.sh down failed:\n{down.stderr}"
            assert "leftover" not in down.stderr, f"processes outlived the box:\n{down.stderr}"


@pytest.fixture
def units(box: Box):
    """Per test: config and drop-ins to write; afterwards stop every svcengine unit, remove what
    the test wrote, and prove that no svcengine process is left in the box."""
    written: list[str] = []

    class Units:
        def config(self, name: str, text: str) -> None:
            box.write(f"{CONF_DIR}/{name}.toml", text)
            written.append(f"{CONF_DIR}/{name}.toml")

        def dropin(self, unit: str, text: str, name: str = "50-test") -> None:
            path = f"{UNIT_DIR}/{unit}.d/{name}.conf"
            box.write(path, text)
            written.append(path)
            box.systemctl("daemon-reload")

        def exit_probe(self, unit: str) -> None:
            """Log how the unit's main process ended: a unit stopped cleanly is unloaded at once,
            so `systemctl show` cannot tell afterwards. See exit_of()."""
            self.dropin(unit, EXIT_PROBE, name="60-exit-probe")

    yield Units()
    box.systemctl("stop", "svcengine*", timeout=120)
    box.systemctl("reset-failed", "svcengine*", check=False)
    if written:
        box.run("rm", "-f", *written)
        box.systemctl("daemon-reload")
    wait_none_left(box)
