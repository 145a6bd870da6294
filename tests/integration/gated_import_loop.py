"""A worker module whose import blocks until the test says go (a slow `preload`).

It writes $SVC_TEST_DIR/importing, then blocks until it can read one byte from the
FIFO $SVC_TEST_DIR/go (opening it waits for a writer; reading waits for the byte).
"""

from __future__ import annotations

import os

from apps import Idle

_dir = os.environ["SVC_TEST_DIR"]
with open(os.path.join(_dir, "importing"), "w") as _f:
    _f.write(f"{os.getpid()}\n")
with open(os.path.join(_dir, "go"), "rb", buffering=0) as _fifo:
    _fifo.read(1)

Job = Idle
