"""The Debian package under a real systemd, in Debian 12 (systemd 252) and Debian 13 (systemd
257): build the .deb once with packaging/build-deb.sh on this machine, `dpkg -i` it into a box of
each release, run a pool through the packaged template unit, reload, stop, and `dpkg --purge`;
then prove nothing is left behind. One package suits both releases (packaging/debian/README).

Its own boxes (BOX_NAME=svcengine-deb, or $SVCENGINE_DEB_BOX; "-trixie" appended for Debian
13), not the `box` fixture's: that one has the wheel pip-installed in /usr/local and the units
copied to /etc/systemd/system, which would shadow the package's. The boxes are offline; Debian's
python3-daemon, python3-sdnotify, python3-setproctitle and procps are in their rootfs.

Run: sudo python -m pytest -m systemd tests/systemd/test_deb.py
  SVCENGINE_DEB=path/to/svcengine_X_all.deb   test that package instead of building one
  SVCENGINE_BOX_KEEP=1                        leave the box running afterwards
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from boxlib import (
    REPO,
    TEST_LIB,
    Box,
    box_name,
    box_sh,
    is_mold,
    ours,
    releases,
    skip_reason,
    wait_none_left,
    wait_until,
)

pytestmark = pytest.mark.systemd

BOX_BASE = os.environ.get("SVCENGINE_DEB_BOX", "svcengine-deb")
PROBE = Path(__file__).resolve().parent / "inbox" / "boxprobe.py"
APP = "svcengine@app.service"
APP_DIR = "/opt/svcengine-app"  # where the administrator drops the worker module
READY = "2/2 workers ready"
TEMPLATES = ("svcengine@.service", "svcengine@.socket", "svcengine-forking@.service")
# Debian 13's debhelper installs units here, and the package does so on Debian 12 too (the same
# directory there: /lib is a link to usr/lib); Debian 13's lintian flags /lib/systemd/system
UNIT_DIR = "/usr/lib/systemd/system"
APP_MODULE = '''\
"""An application's worker, as an administrator would drop it next to the packaged engine."""

import os

import svcengine


class App(svcengine.Worker):
    def run(self):
        self.logger.info("debapp worker %d pid %d running", self.worker_id, os.getpid())
        while not self.stopping:
            self.wait(5)
        self.logger.info("debapp worker %d pid %d stopped", self.worker_id, os.getpid())
'''
APP_TOML = f'workers = 2\nworker = "debapp:App"\npython_path = ["{APP_DIR}"]\n'
# Everything an administrator may have added that the tests create: removed between tests.
ADMIN_FILES = f"/etc/svcengine {APP_DIR} /run/svcengine"
# The paths where a package's leftovers would show; searched for *svcengine* after a purge.
SEARCH = "/etc /lib /usr /run /var/lib /var/cache /var/log /srv /opt /tmp /root"


class DebBox(Box):
    """boxlib's Box, driving the package's box of one Debian suite."""

    def __init__(self, suite: str) -> None:
        super().__init__(box_name(BOX_BASE, suite), suite)

    def lines(self, script: str) -> list[str]:
        return sorted(line for line in self.sh(script).splitlines() if line)


def snapshot(dest: Path) -> Path:
    """This working tree (tracked files with their edits, untracked ones git does not ignore),
    committed into a fresh repository at dest/svcengine: what a clean clone of it would be."""
    clone = dest / "svcengine"
    clone.mkdir(parents=True)
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    present = b"\0".join(f for f in files if f and (REPO / f.decode()).exists())
    tar = subprocess.run(
        ["tar", "--null", "-T", "-", "-cf", "-"], cwd=REPO, input=present, capture_output=True
    )
    assert tar.returncode == 0, tar.stderr
    subprocess.run(["tar", "-C", str(clone), "-xf", "-"], input=tar.stdout, check=True)
    git = ["git", "-C", str(clone), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "snapshot"], check=True)
    return clone


@pytest.fixture(scope="session")
def deb_build(tmp_path_factory) -> tuple[Path, Path]:
    """(the .deb, the checkout it was built in): built once per session with
    packaging/build-deb.sh in a snapshot of this working tree that sits, like a clone in /root,
    in a directory that nobody (lintian's user) cannot enter."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("deb")
    hidden = base / "private"
    hidden.mkdir(mode=0o700)
    clone = snapshot(hidden)
    dist = base / "dist"
    t0 = time.monotonic()
    proc = subprocess.run(
        [str(clone / "packaging" / "build-deb.sh")],
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=1800,  # a fresh machine installs the build dependencies first
        stdin=subprocess.DEVNULL,
        env={**os.environ, "DIST": str(dist)},
    )
    if proc.returncode != 0:
        pytest.fail(f"build-deb.sh failed (exit {proc.returncode}):\n{proc.stderr}{proc.stdout}")
    (path,) = dist.glob("svcengine_*_all.deb")
    print(f"\nbuilt {path.name} in {time.monotonic() - t0:.1f} s:\n{proc.stderr}", file=sys.stderr)
    return path, clone


@pytest.fixture(scope="session")
def deb(request) -> Path:
    """The package: $SVCENGINE_DEB, or the one deb_build made."""
    given = os.environ.get("SVCENGINE_DEB")
    if given:
        return Path(given).resolve(strict=True)
    return request.getfixturevalue("deb_build")[0]


@pytest.fixture(scope="session", params=releases())
def debbox(request) -> Iterator[DebBox]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    b = DebBox(request.param)
    up = box_sh("up", timeout=900, name=b.name, suite=b.suite)
    if up.returncode != 0:
        box_sh("down", timeout=120, name=b.name, suite=b.suite)
        pytest.fail(f"box.sh up ({b.name}) failed (exit {up.returncode}):\n{up.stderr}")
    try:
        b.write(f"{TEST_LIB}/boxprobe.py", PROBE.read_text())
        forget(b)  # the rootfs persists between sessions: forget what an aborted one left
        assert b.run("python3", "-c", "import svcengine", check=False).returncode != 0, (
            "svcengine is importable in the box before the package is installed"
        )
        yield b
    finally:
        if os.environ.get("SVCENGINE_BOX_KEEP") != "1":
            down = box_sh("down", timeout=120, name=b.name, suite=b.suite)
            assert down.returncode == 0, f"box.sh down failed:\n{down.stderr}"
            assert "leftover" not in down.stderr, f"processes outlived the box:\n{down.stderr}"


def forget(b: DebBox) -> None:
    """Purge the package and remove what the tests add, whatever state it is in."""
    b.run("dpkg", "--purge", "svcengine", check=False, timeout=180)
    b.sh(
        f"rm -rf {ADMIN_FILES} /tmp/svcengine_*.deb; "
        "find /etc/systemd/system -name 'svcengine*' -exec rm -rf {} +; "
        "systemctl daemon-reload; systemctl reset-failed 'svcengine*' || true"
    )


@pytest.fixture
def installed(debbox: DebBox, deb: Path) -> Iterator[dict]:
    """The package installed in the box (dpkg -i, offline); afterwards purge it and remove what
    the test added, and prove that no svcengine process is left."""
    state = {
        "version": subprocess.run(
            ["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True, check=True
        ).stdout.strip(),
        "accounts": accounts(debbox),
    }
    debbox.write(f"/tmp/{deb.name}", deb.read_bytes())
    out = debbox.run("dpkg", "-i", f"/tmp/{deb.name}", timeout=180)
    state["dpkg_output"] = out.stdout.decode(errors="replace") + out.stderr.decode(errors="replace")
    debbox.run("rm", "-f", f"/tmp/{deb.name}")
    try:
        yield state
    finally:
        forget(debbox)
        wait_none_left(debbox)


def accounts(b: DebBox) -> list[str]:
    return b.lines("cut -d: -f1 /etc/passwd /etc/group")


def key(p: dict) -> tuple[int, int]:
    """A process identity that survives pid reuse."""
    return (p["pid"], p["starttime"])


def pool(b: DebBox, main_pid: int) -> list[dict]:
    return sorted(
        (p for p in b.procs() if p["ppid"] == main_pid and not is_mold(p)), key=lambda p: p["pid"]
    )


def drop_app(b: DebBox) -> None:
    """What the administrator does: an app module and /etc/svcengine/app.toml."""
    b.write(f"{APP_DIR}/debapp.py", APP_MODULE)
    b.write("/etc/svcengine/app.toml", APP_TOML)


def start_app(b: DebBox) -> tuple[dict[str, str], list[dict]]:
    cursor = b.cursor()
    b.systemctl("start", "--no-block", APP)
    props = b.wait_running(APP, READY, cursor=cursor, timeout=60)
    workers = pool(b, int(props["MainPID"]))
    assert len(workers) == 2, workers
    for w in workers:
        b.wait_journal(APP, rf"debapp worker \d pid {w['pid']} running", cursor)
    return props, workers


def package_files(b: DebBox) -> list[str]:
    """The package's files and links (not directories), as dpkg knows them."""
    return b.lines('dpkg -L svcengine | while read -r f; do [ -d "$f" ] || echo "$f"; done')


def assert_purged(b: DebBox, files: list[str], accounts_before: list[str]) -> None:
    """Nothing of the package is left: no files, units, links, processes, accounts. What purge
    deliberately keeps is what the administrator wrote: /etc/svcengine/app.toml, the app."""
    status = b.run("dpkg-query", "-W", "-f", "${db:Status-Abbrev}", "svcengine", check=False)
    assert status.returncode != 0 or not status.stdout.strip(), f"still known: {status.stdout}"
    still = b.lines(" ".join(f"[ ! -e '{f}' ] || echo '{f}';" for f in files))
    assert still == [], f"files of the package left behind: {still}"
    for unit in ("svcengine@app.service", "svcengine@web.socket", "svcengine-forking@x.service"):
        props = b.systemctl("show", "-p", "LoadState,ActiveState", unit)
        assert "LoadState=not-found" in props and "ActiveState=inactive" in props, (unit, props)
    assert b.systemctl("list-units", "--all", "--plain", "--no-legend", "svcengine*").strip() == ""
    found = b.lines(f"find {SEARCH} -xdev -name '*svcengine*' 2>/dev/null || true")
    # (app.toml and debapp.py are found by the two checks below)
    assert found == ["/etc/svcengine", APP_DIR], f"expected the administrator's only: {found}"
    assert b.lines("ls -A /etc/svcengine") == ["app.toml"]
    assert "debapp.py" in b.lines(f"ls -A {APP_DIR}")  # with the __pycache__ the service wrote
    assert not [p for p in b.procs() if ours(p)], "svcengine processes outlived the package"
    assert accounts(b) == accounts_before, "the package must not leave accounts behind"


def test_install_start_reload_stop_purge(debbox: DebBox, installed: dict):
    b = debbox
    version = installed["version"]
    assert b.out("dpkg-query", "-W", "-f", "${db:Status-Abbrev}${Version}", "svcengine") == (
        f"ii {version}"
    )

    # --- what the package installed ------------------------------------------------------------
    assert b.out("svcengine", "--version").strip() == f"svcengine {version}"
    assert b.out("readlink", "-f", "/usr/bin/svcengine").strip() == "/usr/bin/svcengine"
    module = b.out("python3", "-c", "import svcengine; print(svcengine.__file__)").strip()
    assert module == "/usr/lib/python3/dist-packages/svcengine/__init__.py", module
    for unit in TEMPLATES:
        b.run("test", "-f", f"{UNIT_DIR}/{unit}")
    fragment = b.systemctl("show", "-p", "FragmentPath", APP).strip().removeprefix("FragmentPath=")
    # systemd 252 names it by /lib (first in its search path), the same directory on merged /usr
    assert b.out("readlink", "-f", fragment).strip() == f"{UNIT_DIR}/svcengine@.service", fragment
    # the notify-reload drop-in comes with a package built with systemd >= 253 (Debian 13)
    dropin = f"{UNIT_DIR}/svcengine@.service.d/notify-reload.conf"
    has_dropin = b.run("test", "-f", dropin, check=False).returncode == 0
    unit_type = b.systemctl("show", "-p", "Type", APP).strip()
    assert unit_type == ("Type=notify-reload" if has_dropin else "Type=notify"), unit_type
    conffiles = b.out("dpkg-query", "-W", "-f", "${Conffiles}", "svcengine")
    assert "/etc/svcengine/example.toml" in conffiles, conffiles
    for path in ("/usr/share/man/man1/svcengine.1.gz", "/usr/share/doc/svcengine/copyright"):
        b.run("test", "-f", path)
    # the example config is valid as shipped (every key commented out: one demo worker)
    b.run("python3", "-c", "import svcengine.config as c; c.load('/etc/svcengine/example.toml')")

    # a template: nothing enabled or started by the installation, no account made
    assert b.systemctl("list-units", "--all", "--plain", "--no-legend", "svcengine*").strip() == ""
    assert b.lines("find /etc/systemd/system -name 'svcengine*'") == []
    assert not [p for p in b.procs() if ours(p)]
    assert accounts(b) == installed["accounts"]

    # --- start: the administrator's app, through the packaged unit -------------------------------
    drop_app(b)
    props, workers = start_app(b)
    main = int(props["MainPID"])
    assert props["NRestarts"] == "0"

    # --- reload: same master, two new workers, the old ones stopped gracefully ------------------
    cursor = b.cursor()
    b.systemctl("reload", APP)  # on systemd 252 this returns once `kill -HUP` has exited

    def reloaded():
        p = b.show(APP)
        if (p["ActiveState"], p["SubState"]) != ("active", "running") or READY not in p[
            "StatusText"
        ]:
            return None
        now = pool(b, main)
        if len(now) == 2 and not {key(w) for w in now} & {key(w) for w in workers}:
            return p, now
        return None

    props, new = wait_until("reloaded with 2 new workers", reloaded, timeout=60)
    assert int(props["MainPID"]) == main, "a reload must not replace the master"
    for w in workers:
        b.wait_journal(APP, rf"debapp worker \d pid {w['pid']} stopped", cursor, timeout=45)
    for w in new:
        b.wait_journal(APP, rf"debapp worker \d pid {w['pid']} running", cursor)

    # --- stop: graceful and complete ------------------------------------------------------------
    cursor = b.cursor()
    b.systemctl("stop", APP, timeout=90)  # returns once the unit is down
    props = b.show(APP)
    assert (props["ActiveState"], props["Result"]) == ("inactive", "success"), props
    for w in new:
        b.wait_journal(APP, rf"debapp worker \d pid {w['pid']} stopped", cursor)
    assert not [p for p in b.procs() if ours(p)], "svcengine processes outlived the stop"

    # --- purge ------------------------------------------------------------------------------------
    files = package_files(b)
    assert f"{UNIT_DIR}/svcengine@.service" in files and "/usr/bin/svcengine" in files
    out = b.run("dpkg", "--purge", "svcengine", timeout=180)
    text = out.stdout.decode(errors="replace") + out.stderr.decode(errors="replace")
    # dpkg says so itself: /etc/svcengine holds the administrator's app.toml
    assert re.search(r"directory '/etc/svcengine' not empty so not removed", text), text
    # and of nothing else (Debian 13 said so of /lib/systemd/system when the units were there)
    assert len(re.findall(r"not empty so not removed", text)) == 1, text
    assert_purged(b, files, installed["accounts"])


def test_purge_while_running_stops_and_disables_instances(debbox: DebBox, installed: dict):
    """An instance enabled and running, a socket enabled and listening: `dpkg --purge` stops
    them (prerm), removes the enablement links that now dangle (postrm), leaves nothing running."""
    b = debbox
    drop_app(b)
    b.write("/etc/svcengine/web.toml", "workers = 1\n")
    b.systemctl("enable", APP, "svcengine@web.socket")
    links = b.lines("find /etc/systemd/system -name 'svcengine*'")
    assert links == [
        "/etc/systemd/system/multi-user.target.wants/svcengine@app.service",
        "/etc/systemd/system/sockets.target.wants/svcengine@web.socket",
    ], links
    b.systemctl("start", "svcengine@web.socket")
    b.run("test", "-S", "/run/svcengine/web.sock")
    props, workers = start_app(b)

    files = package_files(b)
    b.run("rm", "/etc/svcengine/web.toml")
    b.run("dpkg", "--purge", "svcengine", timeout=180)

    for unit in (APP, "svcengine@web.socket"):
        assert b.show(unit)["ActiveState"] == "inactive", unit
    master = [p for p in b.procs() if p["pid"] == int(props["MainPID"])]
    assert not master and not [p for p in b.procs() if ours(p)], "purge left the pool running"
    assert b.lines("find /etc/systemd/system -name 'svcengine*'") == []
    left = b.sh("find /run/svcengine 2>/dev/null || true")
    assert not left, f"/run/svcengine left behind: {left}"
    assert_purged(b, files, installed["accounts"])


def test_upgrade_restarts_running_instances(debbox: DebBox, installed: dict, deb: Path):
    """Installing the package over itself (what an upgrade runs: postinst configure <old>)
    restarts a running instance, so it runs the new code; a stopped one stays stopped."""
    b = debbox
    drop_app(b)
    props, workers = start_app(b)
    old = [p for p in b.procs() if p["pid"] == int(props["MainPID"])] + workers
    b.write("/etc/svcengine/idle.toml", "workers = 1\n")

    b.write(f"/tmp/{deb.name}", deb.read_bytes())
    b.run("dpkg", "-i", f"/tmp/{deb.name}", timeout=180)
    b.run("rm", "-f", f"/tmp/{deb.name}", "/etc/svcengine/idle.toml")

    def restarted():
        p = b.show(APP)
        ok = p["ActiveState"] == "active" and READY in p["StatusText"]
        return ok and p["MainPID"] != props["MainPID"] and p

    new = wait_until("restarted by the upgrade", restarted, timeout=60)
    assert new["NRestarts"] == "0", "a restart job, not a crash and Restart="
    now = {key(p) for p in b.procs()}
    assert not [p for p in old if key(p) in now], "the old pool outlived the restart"
    assert len(pool(b, int(new["MainPID"]))) == 2
    assert b.show("svcengine@idle.service")["ActiveState"] == "inactive"


def test_build_deb_from_a_checkout_nobody_can_enter(deb_build):
    """build-deb.sh runs lintian as nobody when run as root; a checkout in a directory nobody
    cannot enter (a clone in /root) builds all the same (it failed: lintian "Can't cd to ...:
    Permission denied", exit 13). deb_build built in such a place; this proves it was one."""
    path, clone = deb_build
    nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    assert subprocess.run([*nobody, "test", "-x", str(clone.parent)]).returncode != 0
    lintian = (path.parent / "lintian.txt").read_text()
    assert not re.search(r"(?m)^[EW]: |Can't cd", lintian), lintian


def lib_layout_deb(deb: Path, tmp: Path) -> Path:
    """The package as debhelper 13.11 (Debian 12) laid it out before: units in /lib/systemd/system,
    an older version. Made from `deb` with dpkg-deb, so it differs in nothing else."""
    tree = tmp / "tree"
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
    (tree / "lib").mkdir()
    (tree / "usr" / "lib" / "systemd").rename(tree / "lib" / "systemd")
    control = tree / "DEBIAN" / "control"
    text = re.sub(r"(?m)^Version: (.*)$", r"Version: \1~old1", control.read_text())
    control.write_text(text)
    md5 = tree / "DEBIAN" / "md5sums"
    md5.write_text(md5.read_text().replace("  usr/lib/systemd/", "  lib/systemd/"))
    old = tmp / "svcengine_old_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-b", str(tree), str(old)],
        check=True,
        capture_output=True,
    )
    return old


def test_upgrade_from_units_in_lib_keeps_them(debbox: DebBox, deb: Path, tmp_path):
    """Moving the units from /lib to /usr/lib: on a merged-/usr system both paths are one file,
    and dpkg must not delete it as the old package's obsolete path during the upgrade."""
    b = debbox
    old = lib_layout_deb(deb, tmp_path)
    try:
        b.write(f"/tmp/{old.name}", old.read_bytes())
        b.run("dpkg", "-i", f"/tmp/{old.name}", timeout=180)
        assert f"/lib/systemd/system/{TEMPLATES[0]}" in package_files(b)
        b.write(f"/tmp/{deb.name}", deb.read_bytes())
        out = b.run("dpkg", "-i", f"/tmp/{deb.name}", timeout=180)
        text = out.stdout.decode(errors="replace") + out.stderr.decode(errors="replace")
        files = package_files(b)
        for unit in TEMPLATES:
            assert f"{UNIT_DIR}/{unit}" in files, files
            b.run("test", "-f", f"{UNIT_DIR}/{unit}")
            b.run("test", "-f", f"/lib/systemd/system/{unit}")  # the same file, by the /lib link
        assert "not empty so not removed" not in text, text
        drop_app(b)
        start_app(b)
    finally:
        b.run("rm", "-f", f"/tmp/{old.name}", f"/tmp/{deb.name}")
        forget(b)
        wait_none_left(b)
