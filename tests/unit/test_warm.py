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
    handler._svcengine = True  # type: ignore[attr-defined]  # as unix/log.py marks its own
    root.handlers = [handler]
    root.setLevel(logging.DEBUG)
    try:
        yield handler, out
    finally:
        root.handlers = saved_handlers
        root.setLevel(saved_level)


def test_warm_writes_no_line_and_gives_the_streams_back(root_stream, monkeypatch):
    handler, out = root_stream
    monkeypatch.setattr(logging.getLogger(), "handlers", [handler])  # not pytest's capture
    before = signal.getsignal(DUMP_SIGNAL)
    warm(Quiet)
    assert out.getvalue() == ""
    assert handler.stream is out
    assert signal.getsignal(DUMP_SIGNAL) == before
    logging.getLogger("svcengine.worker.Quiet").info("after")
    assert out.getvalue().strip() == "after"  # the handler works as before


def test_warm_skips_a_logger_whose_lines_go_elsewhere(root_stream, monkeypatch):
    handler, out = root_stream
    monkeypatch.setattr(logging.getLogger(), "handlers", [handler])  # not pytest's capture
    own = io.StringIO()
    logger = logging.getLogger("svcengine.worker")
    logger.addHandler(logging.StreamHandler(own))
    try:
        warm(Quiet)
    finally:
        logger.handlers.clear()
    assert own.getvalue() == "" and out.getvalue() == ""


class Collecting(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_warm_logs_nothing_when_the_app_added_a_root_handler(root_stream):
    """A handler the app added to the root (syslog, a network sink) would receive a
    rehearsal record whatever stream svcengine's handler has: then no rehearsal at all."""
    handler, out = root_stream
    theirs = Collecting()
    logging.getLogger().handlers = [handler, theirs]
    warm(Quiet)
    assert theirs.records == [] and out.getvalue() == ""


def test_warm_rehearses_through_svcengines_own_handler(root_stream, monkeypatch):
    handler, out = root_stream
    seen: list[object] = []
    monkeypatch.setattr(handler, "stream", out)
    original = handler.format
    monkeypatch.setattr(handler, "format", lambda r: seen.append(r) or original(r))
    monkeypatch.setattr(logging.getLogger(), "handlers", [handler])  # not pytest's capture
    warm(Quiet)
    assert len(seen) >= 10 and out.getvalue() == ""  # formatted into the sink, not the log
