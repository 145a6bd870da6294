"""ControlServer.accept() when the system, not the process, is out of something.

EMFILE is tested for real (tests/integration/test_hardening_loop.py, a low RLIMIT_NOFILE).
ENFILE (the system's file table) and ENOMEM cannot be caused safely on a shared machine, so
here a stand-in listening socket raises them: FakeListeningSocket is the only fake.
"""

from __future__ import annotations

import errno
import selectors

import pytest

from svcengine import control
from svcengine.timers import Timers


class FakeListeningSocket:
    """Stands in for the listening socket: accept() fails with a given errno."""

    def __init__(self, real, err: int) -> None:
        self.real = real
        self.err = err

    def fileno(self) -> int:
        return self.real.fileno()

    def accept(self):
        raise OSError(self.err, "injected")

    def close(self) -> None:
        self.real.close()


@pytest.mark.parametrize("err", [errno.ENFILE, errno.ENOMEM, errno.ENOBUFS, errno.EMFILE])
def test_out_of_resources_pauses_accepting(tmp_path, err):
    clock = [0.0]
    timers = Timers(clock=lambda: clock[0])
    selector = selectors.DefaultSelector()
    server = control.ControlServer(str(tmp_path / "ctl.sock"), lambda r: {"ok": True}, set())
    try:
        server.attach(selector, timers)
        assert server.sock in [k.fileobj for k in selector.get_map().values()]
        real = server.sock
        server.sock = FakeListeningSocket(real, err)
        assert server.accept() is None
        assert not selector.get_map(), "the listening socket is left out of the selector"
        server.sock = real
        clock[0] += control.ACCEPT_PAUSE
        timers.run_due()
        assert server.sock in [k.fileobj for k in selector.get_map().values()], "resumed"
    finally:
        server.close()
        selector.close()


def test_other_accept_errors_are_not_swallowed(tmp_path):
    selector = selectors.DefaultSelector()
    server = control.ControlServer(str(tmp_path / "ctl.sock"), lambda r: {"ok": True}, set())
    try:
        server.attach(selector, Timers())
        real = server.sock
        server.sock = FakeListeningSocket(real, errno.EBADF)
        with pytest.raises(OSError):
            server.accept()  # a broken socket is a bug: the loop logs it (and serves on)
        server.sock = real
    finally:
        server.close()
        selector.close()
