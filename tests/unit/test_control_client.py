"""ctl's side of the control socket (svcengine/cli/client.py): where it looks, and what it
believes, against a real AF_UNIX server in a thread."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from svcengine import rundir
from svcengine.cli import client


def test_socket_paths_socket_first_then_pidfile_then_name(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "rt"))
    assert client.socket_paths("/s.sock", "/run/a.pid", "app") == ["/s.sock"]
    assert client.socket_paths(None, "/run/a.pid", "app") == ["/run/a.ctl"]
    assert client.socket_paths(None, None, "app") == [
        str(tmp_path / "rt" / "control.sock"),
        str(tmp_path / "app.ctl"),
    ]


def test_socket_paths_without_a_runtime_directory(monkeypatch):
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 12345)
    with pytest.raises(OSError, match="XDG_RUNTIME_DIR is not set"):
        client.socket_paths(None, None, "app")


def test_socket_paths_refuse_a_directory_others_may_write(tmp_path, monkeypatch):
    rt = tmp_path / "rt"
    rt.mkdir(mode=0o700)
    os.chmod(rt, 0o777)
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(rt))
    with pytest.raises(rundir.UnsafeDirectory, match="writable by group or others"):
        client.socket_paths(None, None, "app")


@contextmanager
def serving(path: Path, answer: dict[str, object]) -> Iterator[list[dict[str, object]]]:
    """One connection's worth of a control server: record the request, send `answer`."""
    seen: list[dict[str, object]] = []
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            seen.append(json.loads(conn.makefile("rb").readline()))
            conn.sendall(json.dumps(answer).encode() + b"\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        listener.close()
        thread.join(5)
        assert not thread.is_alive()


def test_ask_master_returns_the_answer_and_the_kernels_pid(tmp_path):
    path = tmp_path / "app.ctl"
    with serving(path, {"ok": True, "pid": os.getpid(), "workers": 2}) as seen:
        reply, pid = client.ask_master([str(path)], None, {"cmd": "status"})
    assert (seen, reply["workers"], pid) == ([{"cmd": "status"}], 2, os.getpid())


def test_ask_master_refuses_an_answer_naming_another_pid(tmp_path):
    path = tmp_path / "app.ctl"
    with serving(path, {"ok": True, "pid": 1}), pytest.raises(client.Untrusted):
        client.ask_master([str(path)], None, {"cmd": "pid"})


def test_ask_master_with_nobody_there_is_not_answering(tmp_path):
    missing = [str(tmp_path / "a.sock"), str(tmp_path / "b.sock")]
    with pytest.raises(client.NotAnswering, match="a.sock or .*b.sock") as info:
        client.ask_master(missing, None, {"cmd": "status"})
    assert info.value.where == " or ".join(missing)


def test_ask_master_says_permission_denied_when_the_master_refuses_our_uid(tmp_path):
    path = tmp_path / "app.ctl"
    answer = {"ok": False, "error": "uid 1000 is not allowed", "pid": os.getpid()}
    with serving(path, answer), pytest.raises(PermissionError, match="not allowed"):
        client.ask_master([str(path)], None, {"cmd": "status"})
