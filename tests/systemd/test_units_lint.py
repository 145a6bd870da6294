"""Lint the shipped systemd units with `systemd-analyze verify`, on the host (no box, no root).

systemd-analyze exits 0 on many real errors ("Failed to parse service type, ignoring",
"Unknown key ..."), so the checker fails on any output line that names one of the checked
files, whatever the exit code. It also prints warnings about unrelated host units: those are
ignored. Templates cannot be verified as such: each is copied as an instance (`@app`).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT_DIR = Path(__file__).resolve().parents[2] / "packaging" / "systemd"
UNITS = ["svcengine@.service", "svcengine@.socket", "svcengine-forking@.service"]
INSTANCE = "app"
# Programs the units run that need not exist on the checking machine: replaced by a stub in the
# copies (systemd-analyze exits 1 on a missing ExecStart binary). Any other path is checked as is.
STUBBED = ("/usr/bin/svcengine", "/bin/kill")

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze not installed (Debian: apt-get install systemd)",
)


def verify_units(sources: dict[str, str], workdir: Path) -> tuple[int, list[str], str]:
    """Verify unit texts {file name: text}; returns (exit code, problem lines, whole output).

    Template names get instantiated as @app. A problem is any output line naming one of the
    files; a non-zero exit code is a problem too (the caller sees the output).
    """
    unit_dir = workdir / "units"
    stub_dir = workdir / "stub"
    unit_dir.mkdir()
    stub_dir.mkdir()
    for prog in STUBBED:
        stub = stub_dir / Path(prog).name
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
    paths = []
    for name, text in sources.items():
        for prog in STUBBED:
            text = re.sub(
                rf"(?m)^(Exec\w+=[-@:+!]*){re.escape(prog)}(?=\s|$)",
                rf"\g<1>{stub_dir / Path(prog).name}",
                text,
            )
        path = unit_dir / name.replace("@.", f"@{INSTANCE}.")
        path.write_text(text)
        paths.append(path)
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SYSTEMD_LOG_COLOR": "0", "LANG": "C"},
    )
    output = proc.stdout + proc.stderr
    names = [p.name for p in paths] + [str(unit_dir)]
    problems = [line for line in output.splitlines() if any(n in line for n in names)]
    return proc.returncode, problems, output


def read_unit(name: str) -> dict[str, dict[str, list[str]]]:
    """Parse a unit file into {section: {key: [values]}} (continuation lines not used here)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in (UNIT_DIR / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{name}: key outside a section: {raw!r}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def seconds(value: str) -> float:
    units = {"": 1, "s": 1, "sec": 1, "ms": 0.001, "min": 60, "m": 60}
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value)
    assert m and m.group(2) in units, f"unsupported time span {value!r}"
    return float(m.group(1)) * units[m.group(2)]


def test_shipped_units_verify_clean(tmp_path):
    rc, problems, output = verify_units({n: (UNIT_DIR / n).read_text() for n in UNITS}, tmp_path)
    assert problems == [], output
    assert rc == 0, output


@pytest.mark.parametrize(
    "bad_line, expected",
    [
        ("Type=notfy", "Failed to parse service type"),
        ("KillMode=sometimes", "kill mode"),
        ("WatchdogSecs=10", "Unknown key"),
        ("ExecStart=/usr/bin/no-such-svcengine --foreground", "is not executable"),
    ],
)
def test_checker_reports_a_broken_unit(tmp_path, bad_line, expected):
    """The checker must not be a rubber stamp: each deliberate mistake is reported."""
    good = (UNIT_DIR / "svcengine@.service").read_text()
    key = bad_line.split("=", 1)[0]
    if key in ("Type", "KillMode", "ExecStart"):
        broken = re.sub(rf"(?m)^{key}=.*$", bad_line, good, count=1)
    else:
        broken = good.replace("[Service]\n", f"[Service]\n{bad_line}\n", 1)
    assert broken != good
    rc, problems, output = verify_units({"svcengine@.service": broken}, tmp_path)
    assert any(expected in line for line in problems), output
    assert all("svcengine@app.service" in line for line in problems), problems


def test_notify_unit_settings():
    s = read_unit("svcengine@.service")["Service"]
    assert s["Type"] == ["notify"]
    assert s["NotifyAccess"] == ["all"], "USR2 upgrades: the new master sends MAINPID="
    exec_start = s["ExecStart"][0].split()
    assert exec_start[0] == "/usr/bin/svcengine"
    assert "--foreground" in exec_start
    assert exec_start[exec_start.index("--name") + 1] == "%i"
    assert exec_start[exec_start.index("--config") + 1] == "/etc/svcengine/%i.toml"
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["KillMode"] == ["mixed"]
    assert s["Restart"] == ["on-failure"]
    assert "78" in s["RestartPreventExitStatus"][0].split()
    assert seconds(s["WatchdogSec"][0]) > 0
    # the workers' graceful stop takes up to 30 s (worker_graceful_kill_timeout)
    assert seconds(s["TimeoutStopSec"][0]) > 30
    assert s["RuntimeDirectory"][0].startswith("svcengine/")


def test_socket_unit_settings():
    s = read_unit("svcengine@.socket")["Socket"]
    assert s.get("Accept", ["no"]) == ["no"], "one service for all connections"
    assert s["ListenStream"][0].startswith("/run/svcengine/%i")
    assert s["FileDescriptorName"]
    # with no Service=, svcengine@X.socket activates svcengine@X.service
    assert "Service" not in s


def test_forking_unit_settings():
    s = read_unit("svcengine-forking@.service")["Service"]
    assert s["Type"] == ["forking"]
    exec_start = s["ExecStart"][0].split()
    assert "--daemonize" in exec_start
    assert exec_start[exec_start.index("--pid") + 1] == s["PIDFile"][0]
    assert s["PIDFile"][0].startswith("/run/svcengine/")
    assert s["KillMode"] == ["mixed"]
    assert "78" in s["RestartPreventExitStatus"][0].split()
    assert seconds(s["TimeoutStopSec"][0]) > 30
    # the pidfile's directory is shared by all instances: it must survive one instance's stop
    assert s["RuntimeDirectory"] == ["svcengine"]
    assert s["RuntimeDirectoryPreserve"] == ["yes"]


HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "full",
    "ProtectHome": "read-only",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectControlGroups": "yes",
    "RestrictNamespaces": "yes",
    "SystemCallFilter": "@system-service",
    "SystemCallErrorNumber": "EPERM",
}


@pytest.mark.parametrize("name", ["svcengine@.service", "svcengine-forking@.service"])
def test_services_are_sandboxed(name):
    s = read_unit(name)["Service"]
    for key, value in HARDENING.items():
        assert s.get(key) == [value], (name, key, s.get(key))
    caps = set(s["CapabilityBoundingSet"][0].split())
    # what chuser/chgroup, the log handed to workers, and ports < 1024 need; nothing more
    assert caps == {
        "CAP_SETUID",
        "CAP_SETGID",
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_KILL",
        "CAP_NET_BIND_SERVICE",
    }
    assert "User" not in s and "DynamicUser" not in s, "the master needs root for chuser"


@pytest.mark.parametrize("name", ["svcengine@.service", "svcengine-forking@.service"])
def test_services_score_ok_offline(tmp_path, name):
    """`systemd-analyze security --offline` of this host's systemd (Debian 12: 252) scores the
    unit file itself; the box tests score the loaded units in 252 and 257."""
    path = tmp_path / name.replace("@.", "@app.")
    path.write_text((UNIT_DIR / name).read_text())
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", path.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SYSTEMD_LOG_COLOR": "0", "LANG": "C"},
    )
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    if m is None and "offline" in proc.stderr:
        pytest.skip(f"this systemd-analyze has no --offline: {proc.stderr.strip()}")
    assert m, proc.stdout + proc.stderr
    assert float(m.group(1)) <= 3.0, proc.stdout


def test_notify_reload_dropin():
    """For systemd >= 253 only: Type=notify-reload, and no ExecReload= (that HUP would be a
    second reload). systemd 252 cannot parse it, so it is not part of the unit itself."""
    dropin = UNIT_DIR / "svcengine@.service.d" / "notify-reload.conf"
    lines = [
        line
        for line in dropin.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines == ["[Service]", "Type=notify-reload", "ExecReload="], lines
    assert read_unit("svcengine@.service")["Service"]["Type"] == ["notify"]
