"""The hand-over channel's line protocol and the pidfile moves of an upgrade (no fork)."""

from __future__ import annotations

import os
import socket

import pytest

from svcengine.unix import pidfile
from svcengine.upgrade.handover import Channel


def test_channel_lines_survive_partial_reads_and_eof_is_none():
    a, b = socket.socketpair()
    ours = Channel(a)
    b.send(b"hel")
    assert ours.receive() == []
    b.send(b"lo\nhand-over\n")
    assert ours.receive() == ["hello", "hand-over"]
    assert ours.receive() == []  # nothing waiting: not EOF
    b.close()
    assert ours.receive() is None
    ours.close()


def test_rename_refuses_a_pidfile_someone_removed_and_rewrite_restores_it(tmp_path):
    path = str(tmp_path / "app.pid")
    pf = pidfile.Pidfile(path)
    pf.acquire()
    os.unlink(path)
    with pytest.raises(pidfile.PidfileError, match="removed or replaced"):
        pf.rename(path + ".oldbin")
    assert pf.path == path and not os.path.exists(path + ".oldbin")
    pf.rewrite(path)
    assert pf.names_us() and pidfile.read_pid(path) == os.getpid()
    pf.release()
    assert not os.path.exists(path)
