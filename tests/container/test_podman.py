"""examples/container/ in a real container engine: Debian's podman (as root, with runc).

The example image is built from the checkout on a local Debian base (no registry needed). svcengine
is the container's PID 1 with the example's app.toml: it must serve, reap orphans, answer the
probe written in deployment.yaml, stop gracefully on `podman stop`, and do all of that as a
non-root user (`runAsNonRoot`) and on a read-only root filesystem given the writable directory
deployment.yaml mounts. Each test removes the containers it started and proves that none of their
processes is left on the host (the `podman` fixture).
"""

from __future__ import annotations

import json
import re
import time

import pytest
from ctrlib import REPO, Podman, wait_until

NOBODY = "65534"  # the example's user; what a runAsNonRoot pod would run as
# a Kubernetes readOnlyRootFilesystem: no tmpfs on /run either (podman adds one by default)
READ_ONLY = ("--read-only", "--read-only-tmpfs=false")
# deployment.yaml's emptyDir at /run/svcengine, as podman spells it
RUN_DIR = ("--tmpfs", "/run/svcengine:rw,mode=1777")
READY = "ready: 4/4 workers ready"
GET = "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8000/', timeout=10).status)"
# 20 children that outlive their parent: each waits for EOF on a pipe only the parent writes to
ORPHANS = """
import os
r, w = os.pipe()
for _ in range(20):
    if os.fork() == 0:
        os.close(w)
        os.read(r, 1)
        os._exit(0)
os._exit(0)
"""
ZOMBIES = """
import os
z = []
for p in os.listdir('/proc'):
    try:
        stat = open(f'/proc/{p}/stat').read()
    except OSError:
        continue
    if p.isdigit() and stat.rsplit(')', 1)[1].split()[0] == 'Z':
        z.append(p)
print(len(z))
"""
PROCS = """
import os
for p in sorted((p for p in os.listdir('/proc') if p.isdigit() and int(p) != os.getpid()), key=int):
    try:
        cmd = ' '.join(open(f'/proc/{p}/cmdline').read().replace(chr(0), ' ').split())
        st = dict(l.split(':', 1) for l in open(f'/proc/{p}/status') if ':' in l)
    except OSError:
        continue
    print(p, st['PPid'].strip(), st['Uid'].split()[0], cmd)
"""


def probe_command(kind: str) -> list[str]:
    """The exec probe of deployment.yaml (readinessProbe or livenessProbe), as written there."""
    text = (REPO / "examples" / "container" / "deployment.yaml").read_text()
    block = text[text.index(f"{kind}:") :]
    return json.loads(re.search(r"command:\s*(\[.*?\])", block).group(1))


def procs(podman: Podman, name: str) -> list[tuple[int, int, int, str]]:
    """(pid, ppid, uid, command line) of every process in the container but the lister."""
    out = podman.exec(name, "python3", "-c", PROCS).stdout
    rows = [(line + " ").split(" ", 3) for line in out.splitlines()]
    return [(int(p), int(pp), int(u), c.strip()) for p, pp, u, c in rows]


def ready(podman: Podman, name: str) -> str:
    log = podman.wait_log(name, READY, timeout=60)
    podman.remember_ns(name)
    return log


def test_pid1_serves_reaps_answers_the_probe_and_stops_gracefully(podman: Podman) -> None:
    name = podman.start(args=("--log-level", "debug"))
    ready(podman, name)
    ps = procs(podman, name)
    assert ps[0][0] == 1 and ps[0][3].startswith("svcengine master app"), ps
    workers = [p for p in ps if p[3].startswith("svcengine worker")]
    assert len(workers) == 4 and all(p[1] == 1 for p in workers), ps
    assert podman.exec(name, "python3", "-c", GET).stdout.strip() == "200"
    for kind in ("readinessProbe", "livenessProbe"):
        probe = podman.exec(name, *probe_command(kind), check=False)
        assert probe.returncode == 0, f"{kind}: {probe.stdout}{probe.stderr}"

    podman.exec(name, "python3", "-c", ORPHANS)
    wait_until(
        "20 orphans reaped by PID 1",
        lambda: podman.logs(name).count("reaped orphan pid") >= 20,
        timeout=30,
    )
    assert podman.logs(name).count("reaped orphan pid") == 20
    assert podman.exec(name, "python3", "-c", ZOMBIES).stdout.strip() == "0"

    t0 = time.monotonic()
    podman.run("stop", "-t", "30", name, timeout=60)
    took = time.monotonic() - t0
    state = podman.state(name)
    log = podman.logs(name)
    assert state["status"] == "exited" and state["exit"] == "0", (state, log[-2000:])
    assert "all workers stopped; master exits 0" in log, log[-2000:]
    assert "SIGKILL" not in log, log[-2000:]
    assert took < 10, f"podman stop took {took:.2f} s"
    print(f"\npodman stop: {took:.2f} s, exit {state['exit']}")


def test_non_root_runs_the_example_as_is(podman: Podman) -> None:
    """--user 65534 (runAsNonRoot) with app.toml's chuser = "nobody": no privilege switch needed."""
    name = podman.start("--user", NOBODY)
    log = ready(podman, name)
    assert "Traceback" not in log and "restart" not in log.replace("0 restarts", ""), log
    ps = procs(podman, name)
    assert {p[2] for p in ps} == {65534}, ps
    assert podman.exec(name, "python3", "-c", GET).stdout.strip() == "200"
    probe = podman.exec(name, *probe_command("livenessProbe"), check=False)
    assert probe.returncode == 0, probe.stdout + probe.stderr
    podman.run("stop", "-t", "30", name, timeout=60)
    assert podman.state(name)["exit"] == "0", podman.logs(name)[-2000:]


def test_non_root_cannot_become_another_user(podman: Podman, tmp_path) -> None:
    """A non-root master whose chuser names someone else stops at start: exit 78, one line."""
    conf = tmp_path / "other.toml"
    conf.write_text(
        (REPO / "examples" / "container" / "app.toml")
        .read_text()
        .replace('chuser = "nobody"', 'chuser = "daemon"')
    )
    conf.chmod(0o644)
    name = podman.start(
        "--user",
        NOBODY,
        "-v",
        f"{conf}:/etc/svcengine/other.toml:ro",
        args=("--config", "/etc/svcengine/other.toml"),
    )
    wait_until("exited", lambda: podman.state(name)["status"] == "exited", timeout=30)
    log = podman.logs(name)
    assert podman.state(name)["exit"] == "78", log
    assert "Traceback" not in log and "master started" not in log, log
    errors = [line for line in log.splitlines() if "chuser" in line]
    assert len(errors) == 1 and "/etc/svcengine/other.toml" in errors[0], log
    assert "daemon" in errors[0], log


@pytest.mark.parametrize("user", ["root", NOBODY])
def test_read_only_root_with_the_writable_run_dir(podman: Podman, user: str) -> None:
    name = podman.start("--user", user, *READ_ONLY, *RUN_DIR)
    ready(podman, name)
    assert podman.exec(name, "python3", "-c", GET).stdout.strip() == "200"
    probe = podman.exec(name, *probe_command("livenessProbe"), check=False)
    assert probe.returncode == 0, probe.stdout + probe.stderr
    podman.run("stop", "-t", "30", name, timeout=60)
    assert podman.state(name)["exit"] == "0", podman.logs(name)[-2000:]


@pytest.mark.parametrize("user", ["root", NOBODY])
def test_read_only_root_without_it_fails_at_start(podman: Podman, user: str) -> None:
    """No writable place for the control socket the probes need: say so and exit (78), rather
    than serve with a master no probe can reach (the pod would be restarted forever)."""
    name = podman.start("--user", user, *READ_ONLY)
    wait_until("exited", lambda: podman.state(name)["status"] == "exited", timeout=30)
    log = podman.logs(name)
    assert podman.state(name)["exit"] == "78", log
    errors = [line for line in log.splitlines() if "control_socket" in line]
    assert len(errors) == 1, log
    assert "/run/svcengine/app/control.sock" in errors[0], log
    assert "Read-only file system" in errors[0], log
