"""Runs INSIDE the test box (Debian's python3, stdlib only): what the tests cannot see from outside.

python3 boxprobe.py procs            JSON list of every process but this one
python3 boxprobe.py http TARGET      one HTTP/1.0 GET to /PATH.sock or HOST:PORT; JSON result
"""

import json
import os
import socket
import sys
import time


def procs():
    out = []
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            with open(f"/proc/{name}/cgroup") as f:
                cgroup = f.read().strip()
        except OSError:  # exited meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        out.append(
            {
                "pid": int(name),
                "comm": stat[stat.index("(") + 1 : stat.rindex(")")],
                "state": fields[0],
                "ppid": int(fields[1]),
                "starttime": int(fields[19]),
                "cmdline": cmdline,
                "cgroup": cgroup,
            }
        )
    return out


def http(target, timeout=30.0):
    t0 = time.monotonic()
    if target.startswith("/"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        address = target
    else:
        host, port = target.rsplit(":", 1)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        address = (host, int(port))
    sock.settimeout(timeout)
    chunks = []
    error = None
    try:
        sock.connect(address)
        sock.sendall(b"GET / HTTP/1.0\r\nHost: box\r\n\r\n")
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    except OSError as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        sock.close()
    return {
        "response": b"".join(chunks).decode(errors="replace"),
        "error": error,
        "seconds": round(time.monotonic() - t0, 3),
    }


if __name__ == "__main__":
    if sys.argv[1] == "procs":
        json.dump(procs(), sys.stdout)
    elif sys.argv[1] == "http":
        json.dump(http(sys.argv[2]), sys.stdout)
    else:
        sys.exit(f"unknown command {sys.argv[1]!r}")
