"""The `box` fixture: a real systemd booted with tests/systemd/box.sh, once per Debian release
(boxlib.RELEASES: Debian 12 with systemd 252, Debian 13 with systemd 257), with this checkout's
wheel, the unit files, the examples and the test workers installed in it. Every test that uses
it runs in each release; pytest finishes one release's box before it boots the next.

Needs root. Skips (with the reason) where systemd-nspawn cannot work. Set SVCENGINE_BOX_KEEP=1
to leave the box running after the session (inspect it with `tests/systemd/box.sh exec ...`).
"""

from __future__ import annotations

import os
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
