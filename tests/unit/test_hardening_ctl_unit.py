"""Pidfile and control-socket identity checks on real files (issue 12, items 11 and 12)."""

from __future__ import annotations

import os
import pwd

import pytest

from svcengine.cli import client
from svcengine.unix import pidfile

NOBODY = pwd.getpwnam("nobody")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (to plant a file as another user)")
def test_a_planted_temp_file_never_becomes_the_pidfile(tmp_path):
    """In a world-writable directory another user can create the temp file first; the
    pidfile must still be ours and the planted file left alone."""
    os.chmod(tmp_path, 0o1777)
    path = tmp_path / "app.pid"
    planted = tmp_path / f"app.pid.{os.getpid()}.tmp"  # the name the old code always used
    planted.write_text("")
    os.chown(planted, NOBODY.pw_uid, NOBODY.pw_gid)
    pf = pidfile.Pidfile(str(path))
    pf.acquire()
    try:
        st = os.stat(path)
        assert (st.st_uid, path.read_text()) == (os.geteuid(), f"{os.getpid()}\n")
        assert planted.read_text() == "" and os.stat(planted).st_uid == NOBODY.pw_uid
    finally:
        pf.release()
    assert not path.exists()


@pytest.mark.parametrize("answered", [-1, 0, 1, 4321, "1234", True, 1234.0])
def test_the_answered_pid_must_be_the_servers_own(answered):
    """-1 is what made kill(-1) possible: every process the caller may signal."""
    with pytest.raises(client.Untrusted, match="refusing"):
        client.trusted_pid("/x.ctl", client.Peer(pid=1234, uid=os.geteuid()), answered, set())


def test_a_server_the_kernel_cannot_name_is_refused():
    for pid in (0, -1):
        with pytest.raises(client.Untrusted, match="cannot tell who serves"):
            client.trusted_pid("/x.ctl", client.Peer(pid=pid, uid=0), pid, set())


def test_an_answer_without_a_pid_gets_the_kernels_pid():
    """An older master's `scale`/`dump` answers carry no pid: SO_PEERCRED's is used."""
    peer = client.Peer(pid=1234, uid=os.geteuid())
    assert client.trusted_pid("/x.ctl", peer, None, set()) == 1234


def test_the_servers_uid_must_be_root_ours_or_the_services():
    me = os.geteuid()
    peer = client.Peer(pid=4321, uid=me + 1000)
    with pytest.raises(client.Untrusted, match=f"uid {me + 1000}"):
        client.trusted_pid("/x.ctl", peer, 4321, {me})
    assert client.trusted_pid("/x.ctl", peer, 4321, {me, me + 1000}) == 4321
    assert client.trusted_pid("/x.ctl", client.Peer(pid=4321, uid=me), 4321, set()) == 4321
