"""The systemd protocols on the host: a real NOTIFY_SOCKET, real inherited sockets.

systemd itself is exercised in tests/systemd/ (a real systemd 252 in a box);
these tests pin down the wire: which datagrams, when, and what workers see.
"""

from __future__ import annotations

import signal
import socket
import time
import urllib.request

from svcengine.unix.systemd import Notifier


def test_watchdog_pings_while_healthy(service):
    svc = service(workers=2, start=False)
    svc.start(env={"WATCHDOG_USEC": "200000"})
    svc.wait_ready()
    t0 = time.monotonic()
    for _ in range(3):
        svc.notify.wait_key("WATCHDOG", 2, "1")
    assert time.monotonic() - t0 < 2
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


def test_watchdog_pid_for_another_process_means_no_pings(service):
    svc = service(workers=1, start=False)
    svc.start(env={"WATCHDOG_USEC": "100000", "WATCHDOG_PID": "1"})
    svc.wait_ready()
    svc.kill(signal.SIGTERM)
    svc.wait_exit()
    svc.notify.wait_key("STOPPING", 5, "1")
    assert not [m for m in svc.notify.messages if "WATCHDOG" in m]


def test_a_pool_that_cannot_be_kept_up_stops_the_pings(service):
    svc = service(
        worker="apps:ExitsAtOnce",
        workers=1,
        config="worker_restart_backoff_min = 0.05\nworker_restart_backoff_max = 0.1\n",
        start=False,
    )
    svc.start(env={"WATCHDOG_USEC": "200000", "SVC_TEST_EXIT": "0"})
    svc.wait_log(r"not pinging the watchdog: worker 0 keeps crashing", since_mark=False)
    while svc.notify._receive(0) is not None:  # what was sent before this point
        pass
    # from here on, every watchdog tick is skipped: three skipped ticks, no ping between
    seen = len(svc.notify.messages)
    for _ in range(3):
        svc.mark()
        svc.wait_log(r"not pinging the watchdog")
    while svc.notify._receive(0) is not None:
        pass
    assert not [m for m in svc.notify.messages[seen:] if "WATCHDOG" in m]
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


def test_reload_sends_reloading_with_monotonic_usec_then_ready(service):
    svc = service(workers=1)
    svc.wait_ready()
    svc.kill(signal.SIGHUP)
    msg = svc.notify.wait_key("RELOADING", 5, "1")
    now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert 0 < now_usec - int(msg["MONOTONIC_USEC"]) < 5_000_000
    svc.notify.wait_key("READY", 10, "1")
    svc.kill(signal.SIGTERM)
    svc.notify.wait_key("STOPPING", 5, "1")
    assert svc.wait_exit() == 0


def test_workers_do_not_inherit_notify_socket(service):
    svc = service(workers=1)
    svc.wait_ready()
    svc.command(0, "env")
    svc.wait_log(r"worker 0 NOTIFY_SOCKET=unset")
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


def test_notify_workers_keeps_it(service):
    svc = service(workers=1, config="notify_workers = true\n")
    svc.wait_ready()
    svc.command(0, "env")
    svc.wait_log(rf"worker 0 NOTIFY_SOCKET={svc.notify.path}")
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


def test_socket_activation_is_used_instead_of_listen(service):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    svc = service(
        worker="http_worker:HttpWorker",
        workers=2,
        config='listen = ["127.0.0.1:1"]\n',  # would fail to bind: must not be used
        start=False,
    )
    svc.pass_fds = (listener.fileno(),)
    svc.start()
    listener.close()  # only the service holds it now
    svc.wait_ready()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
        assert r.read().startswith(b"hello from worker")
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


def test_journald_priority_prefixes(service):
    svc = service(workers=1, log_to_file=False, start=False)
    svc.journal_stream = True
    svc.start()
    svc.wait_ready()
    svc.command(0, "warn")
    line = svc.wait_log(r"^<4>worker\[0\]\[\d+\]: warn-marker$")
    assert line
    lines = svc.log_text().splitlines()
    assert any(line.startswith("<6>master[") for line in lines)
    # no timestamps: journald adds its own; every line starts with a priority
    assert all(line[:3] in ("<6>", "<7>", "<4>") for line in lines if line), lines
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


def test_notifier_sends_utf8_and_never_blocks(tmp_path):
    path = str(tmp_path / "n.sock")
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(path)
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.send("STATUS=réglé — 日本")
    assert sink.recv(100).decode() == "STATUS=réglé — 日本"
    t0 = time.monotonic()
    sent = sum(n.send(f"STATUS={i}") for i in range(500))  # nobody reads: must not block
    assert time.monotonic() - t0 < 1.0
    assert 0 < sent < 500
    n.close()
    sink.close()


def test_notifier_without_socket_is_a_no_op():
    n = Notifier({})
    assert not n.enabled and not n.send("READY=1")


def test_a_start_in_progress_extends_the_start_timeout(service):
    # workers started 0.2 s apart become ready in different loop turns (one turn's
    # updates are coalesced), so the start visibly makes progress before READY=1
    svc = service(workers=3, config="start_worker_delay = 0.2\n")
    svc.wait_ready()
    before_ready = svc.notify.messages[
        : next(i for i, m in enumerate(svc.notify.messages) if m.get("READY") == "1")
    ]
    extends = [m for m in before_ready if "EXTEND_TIMEOUT_USEC" in m]
    assert len(extends) == 2 and extends[0]["EXTEND_TIMEOUT_USEC"] == "30000000"
    after_ready = svc.notify.messages[len(before_ready) :]
    assert not [m for m in after_ready if "EXTEND_TIMEOUT_USEC" in m]
    svc.kill(signal.SIGTERM)
    assert svc.wait_exit() == 0


def test_ready_survives_a_notify_queue_that_is_full(service):
    """systemd reads its socket late: the kernel holds net.unix.max_dgram_qlen datagrams
    (10 by default, 512 once systemd booted the machine), the rest would be lost. STATUS=
    may be coalesced, READY=1 must arrive anyway."""
    svc = service(workers=8, start=False)
    # Fill the queue the way a busy systemd would leave it. One sender runs out of its own
    # send buffer before a 512-deep queue is full: take fresh senders until even the first
    # datagram of one is refused, which only a full queue does.
    fillers: list[socket.socket] = []
    while len(fillers) < 100:
        filler = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        filler.setblocking(False)
        fillers.append(filler)
        sent = 0
        try:
            while True:
                filler.sendto(b"FILLER=1", svc.notify.path)
                sent += 1
        except BlockingIOError:
            pass
        if sent == 0:
            break
    for filler in fillers:
        filler.close()
    assert sent == 0, "the notify queue never filled up"
    svc.start()
    svc.wait_log(r"ready: 8/8 workers ready", timeout=30, since_mark=False)  # nothing read yet
    # logged just after "ready:" (the master sends READY=1 after logging it): wait, not assert
    svc.wait_log(r"systemd is not reading notifications; queued: READY=1", since_mark=False)
    msg = svc.notify.wait_key("READY", 10, "1")
    assert msg["STATUS"] == "8/8 workers ready; 0 restarts"
    svc.kill(signal.SIGTERM)
    svc.notify.wait_key("STOPPING", 10, "1")
    assert svc.wait_exit() == 0
