"""A worker module whose import blocks until the test says go (a slow `preload`).

It writes `importing` to $SVC_TEST_DIR/importing, then blocks opening the FIFO
$SVC_TEST_DIR/go until the test opens it for writing.
"""

from __future__ import annotations

import os

from apps import Idle

_dir = os.environ["SVC_TEST_DIR"]
with open(os.path.join(_dir, "importing"), "w") as _f:
    _f.write(f"{os.getpid()}\n")
with open(os.path.join(_dir, "go")) as _fifo:  # blocks until a writer opens it
    _fifo.read()

Job = Idle
