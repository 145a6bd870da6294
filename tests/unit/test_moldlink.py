"""The master's side of the mold protocol (master/moldlink.py) and the mold's reaper of
middle processes (child/moldfork.Middles), over a real SOCK_SEQPACKET socketpair; the
"mold" and its "middle processes" are this test and real forked children."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator

import pytest

from svcengine.child.moldfork import ANSWERED, Middles
from svcengine.master import moldlink


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    master, mold = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    master.setblocking(False)
    yield master, mold
    master.close()
    mold.close()


def test_answers_in_any_order_are_matched_by_worker_id(pair) -> None:
    master, mold = pair
    pipes = moldlink.order_workers(master, [(0, 10), (1, 11), (2, 12)])
    try:
        got = []
        for _ in range(3):
            data, fds, _, _ = socket.recv_fds(mold, 256, 1)
            got.append(data)
            for fd in fds:
                os.close(fd)  # the write end of that worker's status pipe
        assert got == [b"fork 0 10", b"fork 1 11", b"fork 2 12"]
        mold.send(b"pid 4002 2")
        mold.send(b"pid 4999 7")  # a worker nobody waits for: dropped
        mold.send(b"error 0 cannot fork worker 0: [Errno 11] EAGAIN")
        mold.send(b"pid 4001 1")
        answers: dict[int, moldlink.Forked] = {}
        moldlink.collect(master, set(pipes), 5.0, answers)
    finally:
        for fd in pipes.values():
            os.close(fd)
    assert answers == {
        2: moldlink.Forked(4002),
        1: moldlink.Forked(4001),
        0: moldlink.Forked(None, "cannot fork worker 0: [Errno 11] EAGAIN"),
    }


def test_a_mold_that_does_not_answer_in_time_is_a_link_error(pair) -> None:
    master, mold = pair
    mold.send(b"pid 4001 1")  # one of two
    t0 = time.monotonic()
    answers: dict[int, moldlink.Forked] = {}
    with pytest.raises(moldlink.LinkError, match="no answer"):
        moldlink.collect(master, {1, 2}, 0.2, answers)
    assert time.monotonic() - t0 < 2.0
    assert answers == {1: moldlink.Forked(4001)}, "the worker it did fork is not lost"


def test_a_closed_mold_is_a_link_error(pair) -> None:
    master, mold = pair
    mold.close()
    with pytest.raises(moldlink.LinkError, match="closed its socket"):
        moldlink.collect(master, {1}, 5.0, {})


def test_sync_skips_late_fork_answers(pair) -> None:
    master, mold = pair
    mold.send(b"error 3 the middle process 77 ended with wait status 9 before it answered")
    mold.send(b"ok")
    assert moldlink.ask(master, b"sync", 5.0) == b"ok"
    assert mold.recv(64) == b"sync"


def _middle(code: int) -> int:
    """A real child standing in for a middle process: it exits with `code` at once."""
    pid = os.fork()
    if pid == 0:
        os._exit(code)
    return pid


def test_a_middle_that_ended_without_answering_gets_an_error_for_its_worker(pair) -> None:
    master, mold = pair
    middles = Middles(mold)
    middles.add(_middle(ANSWERED), 4)  # it answered: nothing more to say
    middles.add(_middle(1), 5)  # it did not: the mold answers for it
    middles.reap_all()
    assert middles.fds() == []
    answers: dict[int, moldlink.Forked] = {}
    moldlink.collect(master, {5}, 5.0, answers)
    assert answers[5].error.startswith("the middle process "), "the master hears of worker 5"
    with pytest.raises(moldlink.LinkError):
        moldlink.collect(master, {4}, 0.2, {})  # and of worker 4 nothing: its middle answered


def test_a_middle_is_reaped_once_its_pidfd_says_it_exited(pair) -> None:
    import select

    _, mold = pair
    middles = Middles(mold)
    pid = _middle(ANSWERED)
    middles.add(pid, 1)
    readable, _, _ = select.select(middles.fds(), [], [], 5.0)
    assert readable, "the pidfd became readable when the middle exited"
    middles.exited(readable[0])
    assert middles.fds() == []
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped: nothing of it left
