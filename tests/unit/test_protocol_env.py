"""protocol/env.py: the contracts that cross an exec (USR2, spawn workers) round-trip.

The writer and the reader may be different svcengine versions (an old master execs the new
code on disk), so these pin the names and shapes, not only that both sides agree today.
"""

from __future__ import annotations

import pytest

from svcengine.protocol import env


def test_upgrade_env_round_trips_to_the_new_master() -> None:
    names = ["127.0.0.1:8000", "unix:/run/a:b.sock", "[::1]:9000"]
    written = env.upgrade_env(names, old_pid=4242, new_pid=777, channel_fd=6)
    assert written == {
        "SVCENGINE_UPGRADE_FROM": "4242",
        "SVCENGINE_UPGRADE_FD": "6",
        "LISTEN_FDS": "3",
        "LISTEN_PID": "777",
        "LISTEN_FDNAMES": "svc0:svc1:svc2",
        "SVCENGINE_LISTEN_ADDRS": '["127.0.0.1:8000", "unix:/run/a:b.sock", "[::1]:9000"]',
    }
    seen = dict(written, OTHER="kept")
    assert env.adopted(seen, pid=777) == [(3, names[0]), (4, names[1]), (5, names[2])]
    assert env.upgraded_from(seen) == 4242
    assert env.upgrade_fd(seen) == 6
    assert seen == {"OTHER": "kept"}, "a reader pops what it read: workers must not see it"


def test_no_sockets_no_listen_variables() -> None:
    written = env.upgrade_env([], old_pid=10, new_pid=11, channel_fd=3)
    assert written == {"SVCENGINE_UPGRADE_FROM": "10", "SVCENGINE_UPGRADE_FD": "3"}
    assert env.adopted(dict(written), pid=11) is None


def test_systemd_socket_activation_without_our_names() -> None:
    seen = {"LISTEN_PID": "5", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "web"}
    assert env.adopted(dict(seen), pid=6) is None, "passed to another process"
    assert env.adopted(seen, pid=5) == [(3, "web"), (4, "fd4")]
    assert seen == {}


@pytest.mark.parametrize("value", [None, "", "x1", "-3"])
def test_not_an_upgrade(value: str | None) -> None:
    seen = {} if value is None else {"SVCENGINE_UPGRADE_FROM": value, "SVCENGINE_UPGRADE_FD": value}
    assert env.upgraded_from(seen) is None
    assert env.upgrade_fd(seen) is None


SPEC = {
    "worker_id": 2,
    "master_pid": 100,
    "status_fd": 7,
    "life_fd": 8,
    "beat_fd": 9,
    "beat_index": 2,
    "beat_capacity": 8,
    "sockets": [3, 4],
    "config": {"workers": 2, "listen": ["127.0.0.1:0"]},
    "sys_path": ["/srv/app"],
    "source": "/etc/x.toml",
}


def test_spawn_spec_round_trips_with_its_version() -> None:
    value = env.encode_spawn(SPEC)
    assert '"v": 1' in value
    assert env.decode_spawn(value) == SPEC


def test_spawn_spec_from_before_the_version_field_is_version_1() -> None:
    import json

    assert env.decode_spawn(json.dumps(SPEC)) == SPEC  # an old master, new spawned.py


def test_spawn_spec_from_a_newer_version_is_refused_clearly() -> None:
    import json

    with pytest.raises(ValueError, match="spec version 2, this svcengine reads 1"):
        env.decode_spawn(json.dumps({"v": 2, **SPEC}))


def test_the_names_do_not_change() -> None:
    """They cross versions: renaming one breaks every upgrade from or to this release."""
    assert (env.UPGRADE_FROM, env.UPGRADE_FD, env.LISTEN_ADDRS, env.SPAWN) == (
        "SVCENGINE_UPGRADE_FROM",
        "SVCENGINE_UPGRADE_FD",
        "SVCENGINE_LISTEN_ADDRS",
        "SVCENGINE_SPAWN",
    )
