"""Hostile and ordinary HTTP clients, for the integration tests and the soak.

`early_closing_clients` is the client that killed workers with SIGPIPE (issue 12,
item 1): it sends a whole request and hangs up before the answer, so the
worker's second write (the body after the headers) meets a closed peer. It
runs in batches, each followed by one ordinary request that must be answered:
that request is the event that says the batch was taken, so a dead worker (or a
pool in crash-loop backoff) shows up as a failed request, not a sleep.
"""

from __future__ import annotations

import http.client
import socket
from collections.abc import Callable

REQUEST = b"GET / HTTP/1.0\r\nHost: test\r\n\r\n"


def get(host: str, port: int, timeout: float = 10.0) -> str:
    """One ordinary request; its body (raises on anything but 200)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        body = resp.read().decode()
        if resp.status != 200:
            raise AssertionError(f"HTTP {resp.status}: {body!r}")
        return body
    finally:
        conn.close()


def early_close(host: str, port: int, timeout: float = 10.0) -> None:
    """Connect, send a complete request, close at once (a FIN, not a reset)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(REQUEST)


def early_closing_clients(
    host: str,
    port: int,
    n: int = 1000,
    batch: int = 50,
    after_batch: Callable[[int], None] | None = None,
    timeout: float = 10.0,
) -> int:
    """n early-closing clients, in batches each followed by one ordinary request.

    Returns how many ordinary requests were answered. `after_batch(done)` is called
    after each batch's ordinary request (a test checks there that no worker died).
    """
    answered = 0
    done = 0
    while done < n:
        for _ in range(min(batch, n - done)):
            early_close(host, port, timeout)
            done += 1
        get(host, port, timeout)
        answered += 1
        if after_batch is not None:
            after_batch(done)
    return answered
