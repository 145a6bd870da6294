"""The RabbitMQ broker the amqp tests run against, and their leak check.

One broker for the session (tests/amqp/broker.py: installed with apt-get if
missing, started on loopback with its own dirs and epmd, stopped at the end
with a check that none of its processes is left). Each test uses queues of
its own. Where the broker cannot be installed the tests skip, saying why.
"""

from __future__ import annotations

import os
import signal
import sys
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))  # the real-process harness

from broker import Broker, BrokerUnavailable, _group_members, ensure_installed  # noqa: E402
from harness import REPO, Service, children_of, wait_gone  # noqa: E402

from svcengine.unix import linux as _linux  # noqa: E402


@pytest.fixture(scope="package")
def broker(tmp_path_factory):
    try:
        import pika  # noqa: F401
    except ImportError:
        pytest.skip("pika is not installed (pip install svcengine[test])")
    try:
        ensure_installed()
    except BrokerUnavailable as exc:
        pytest.skip(f"no RabbitMQ broker: {exc}")
    b = Broker(tmp_path_factory.mktemp("rabbitmq"))
    try:
        b.start()
    except BrokerUnavailable as exc:
        b.stop()
        pytest.skip(f"the RabbitMQ broker does not start here: {exc}")
    yield b
    left = b.stop()
    assert not left, f"broker processes left behind: {left}"


def _broker_pids(b: Broker | None) -> set[int]:
    if b is None:
        return set()
    groups = [p.pid for p in (b.proc, b.epmd) if p is not None]
    return set().union(*(_group_members(g) for g in groups)) if groups else set()


@pytest.fixture(autouse=True)
def no_process_left_behind(request):
    """As in tests/integration, but the session's broker (restarted or not) is not a leak."""
    b = request.getfixturevalue("broker") if "broker" in request.fixturenames else None
    before = children_of(os.getpid())
    _linux.set_child_subreaper()
    try:
        yield
    finally:
        mine = children_of(os.getpid()) - before - _broker_pids(b)
        leftovers = wait_gone(mine, 5.0)
        for pid in leftovers:
            os.kill(pid, signal.SIGKILL)  # ours: started by this test, adopted by us
        for pid in children_of(os.getpid()) - before - _broker_pids(b):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        _linux.set_child_subreaper(False)
        assert not leftovers, f"processes left behind: {sorted(leftovers)}"


class AmqpService(Service):
    """A svcengine master running tests/amqp/amqp_apps.py consumers."""

    def __init__(self, tmp: Path, workers: int, amqp: dict[str, object], extra: str = ""):
        self.amqp = amqp
        self.extra_top = extra
        super().__init__(tmp, "amqp_apps:Recording", workers, "", [], True)

    def write_config(self, workers: int, extra: str = "") -> None:
        table = "".join(f"{k} = {_toml(v)}\n" for k, v in self.amqp.items())
        self.config_path.write_text(
            f'worker = "{self.worker}"\n'
            f"workers = {workers}\n"
            f'python_path = ["{HERE}", "{REPO}"]\n'
            f'log = "{self.log_path}"\n'
            'log_level = "debug"\n'
            "start_worker_delay_rand = 0.0\n"
            f"{getattr(self, 'extra_top', '')}{extra}\n[amqp]\n{table}"
        )

    def handled(self) -> list[list[str]]:
        return _lines(self.tmp / "handled.log")

    def started(self) -> list[list[str]]:
        return _lines(self.tmp / "started.log")


def _lines(path: Path) -> list[list[str]]:
    try:
        return [line.split() for line in path.read_text().splitlines() if line]
    except FileNotFoundError:
        return []


def _toml(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(v)


@pytest.fixture
def queue_name() -> str:
    return f"q-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def amqp_service(tmp_path, broker, queue_name):
    made: list[AmqpService] = []

    def make(workers: int = 2, start: bool = True, extra: str = "", **amqp: object):
        table = {"url": broker.url, "queue": queue_name, **amqp}
        svc = AmqpService(tmp_path, workers, table, extra)
        made.append(svc)
        if start:
            svc.start()
        return svc

    yield make
    for svc in made:
        svc.cleanup()
