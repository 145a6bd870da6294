"""Runs INSIDE the test box (Debian's python3, stdlib only): a bounded HTTP client load.

python3 boxload.py HOST:PORT CLIENTS SECONDS WARM

CLIENTS threads, a new connection per request, for SECONDS. Prints `warm ok=N` (flushed) as
soon as WARM requests have succeeded, so a test can act mid-load on that event, and at the end
`ok=N failed=M` followed by one JSON line: {"ok", "failed", "errors" (the first 20),
"pids" (the worker pids that answered)}.
"""

import http.client
import json
import sys
import threading
import time


def main(target, clients, seconds, warm):
    host, port = target.rsplit(":", 1)
    until = time.monotonic() + seconds
    lock = threading.Lock()
    state = {"ok": 0, "failed": 0, "warm": False}
    errors = []
    pids = set()

    def client():
        while time.monotonic() < until:
            t0 = time.monotonic()
            try:
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
                conn.request("GET", "/")
                resp = conn.getresponse()
                body = resp.read().decode(errors="replace")
                conn.close()
                error = None if resp.status == 200 else f"HTTP {resp.status}"
            except (OSError, http.client.HTTPException) as exc:
                error = f"{type(exc).__name__}: {exc}"
            with lock:
                if error is None:
                    state["ok"] += 1
                    pids.add(body.rsplit("pid ", 1)[-1].rstrip(")\n"))
                    if not state["warm"] and state["ok"] >= warm:
                        state["warm"] = True
                        print(f"warm ok={state['ok']}", flush=True)
                else:
                    state["failed"] += 1
                    if len(errors) < 20:
                        errors.append(f"{time.monotonic() - t0:.3f}s {error}")

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"ok={state['ok']} failed={state['failed']}", flush=True)
    for e in errors:
        print(f"  {e}", flush=True)
    result = {"ok": state["ok"], "failed": state["failed"], "errors": errors}
    print(json.dumps({**result, "pids": sorted(pids)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]))
