"""A worker whose module is sizeable: stdlib packages plus a large table built at import.

Stands in for an application that loads code and data before serving; used by
bench/pss.py to show what `preload = true` (import in the master + gc.freeze)
saves per worker.
"""

import asyncio  # noqa: F401
import decimal  # noqa: F401
import email.mime.multipart  # noqa: F401
import http.server  # noqa: F401
import json  # noqa: F401
import sqlite3  # noqa: F401
import unittest  # noqa: F401
import xml.etree.ElementTree  # noqa: F401

import svcengine

# ~30 MB of small objects: the part copy-on-write sharing is about
TABLE = {f"key-{i}": (i, str(i) * 3, [i, i + 1]) for i in range(150_000)}


class Heavy(svcengine.Worker):
    def run(self) -> None:
        while not self.stopping:
            self.wait(3600)
