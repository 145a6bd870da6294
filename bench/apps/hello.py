"""Gunicorn's peer app: hello-world WSGI; X-Pid names the worker that answered (run.py's
HTTP respawn figure waits for an answer from the replacement)."""

import os


def app(environ, start_response):
    body = b"Hello, world!\n"
    headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
    start_response("200 OK", [*headers, ("X-Pid", str(os.getpid()))])
    return [body]
