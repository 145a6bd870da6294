"""The mold's warm-up (child/warm.py) runs the logging path without a line reaching any
handler's stream, gives every stream back, and leaves no signal handler behind."""

from __future__ import annotations

import io
import logging
import signal
from collections.abc import Iterator

import pytest

from svcengine import Worker
from svcengine.child import DUMP_SIGNAL
from svcengine.child.warm import warm


class Quiet(Worker):
    def run(self) -> None:
        pass


@pytest.fixture
def root_stream() -> Iterator[tuple[logging.StreamHandler[io.StringIO], io.StringIO]]:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    root.handlers = [handler]
    root.setLevel(logging.DEBUG)
    try:
        yield handler, out
    finally:
        root.handlers = saved_handlers
        root.setLevel(saved_level)


def test_warm_writes_no_line_and_gives_the_streams_back(root_stream):
    handler, out = root_stream
    before = signal.getsignal(DUMP_SIGNAL)
    warm(Quiet)
    assert out.getvalue() == ""
    assert handler.stream is out
    assert signal.getsignal(DUMP_SIGNAL) == before
    logging.getLogger("svcengine.worker.Quiet").info("after")
    assert out.getvalue().strip() == "after"  # the handler works as before


def test_warm_skips_a_logger_whose_lines_go_elsewhere(root_stream):
    _, out = root_stream
    own = io.StringIO()
    logger = logging.getLogger("svcengine.worker")
    logger.addHandler(logging.StreamHandler(own))
    try:
        warm(Quiet)
    finally:
        logger.handlers.clear()
    assert own.getvalue() == "" and out.getvalue() == ""
