"""Gunicorn config for the bench: defaults, plus the app-ready marker.

post_worker_init runs in the worker after it has loaded the WSGI app, right
before the worker's request loop: gunicorn's "app code is running" moment.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import marker  # noqa: E402


def post_worker_init(worker):
    marker.emit("ready", worker.age)
