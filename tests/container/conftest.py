"""The `podman` fixture: examples/container/Dockerfile built with Debian's podman on a local base.

Needs root (podman as root, with runc) and apt-get to install it the first time. Skips with the
reason where podman cannot run. The first run debootstraps a base image (one to two minutes) and
caches its tarball under /var/lib/svcengine-podman (tests/container/podman.sh); later runs find
the base in podman's storage and only rebuild the example image (seconds).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from ctrlib import PODMAN, PODMAN_SH, REPO, ULIMITS, Podman, skip_reason


@pytest.fixture(scope="session")
def podman_image(tmp_path_factory) -> Iterator[str]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    t0 = time.monotonic()
    base = subprocess.run(
        [str(PODMAN_SH), "base"],
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )
    if base.returncode != 0:
        pytest.fail(
            f"tests/container/podman.sh base failed (exit {base.returncode}):\n{base.stderr}"
        )
    smoke = subprocess.run(
        [*PODMAN, "run", "--rm", "--network", "none", *ULIMITS, base.stdout.strip(), "true"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if smoke.returncode != 0:
        pytest.skip(f"podman cannot run a container here: {smoke.stderr.strip()[-300:]}")
    image = f"localhost/svcengine-demo:test-{os.getpid()}"
    build = subprocess.run(
        [*PODMAN, "build", "--network", "none", "--build-arg", f"BASE={base.stdout.strip()}"]
        + ["-f", "examples/container/Dockerfile", "-t", image, "."],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if build.returncode != 0:
        pytest.fail(f"podman build failed:\n{build.stdout[-3000:]}{build.stderr[-3000:]}")
    print(f"\nimage {image} ready in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    try:
        yield image
    finally:
        subprocess.run([*PODMAN, "rmi", "-f", image], capture_output=True, timeout=120)


@pytest.fixture
def podman(podman_image: str) -> Iterator[Podman]:
    p = Podman(podman_image)
    try:
        yield p
    finally:
        p.remove_all()
