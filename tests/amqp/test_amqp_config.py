"""The [amqp] table: every mistake is one line naming amqp.KEY and the file (exit 78)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from svcengine.config import ConfigError, load
from svcengine.errors import EX_CONFIG

GOOD = 'url = "amqp://u:topsecret@127.0.0.1:5672/%2F"\nqueue = "jobs"\n'


def _load(tmp_path, table: str):
    path = tmp_path / "app.toml"
    path.write_text(f'worker = "m:C"\n[amqp]\n{table}')
    return load(str(path)), str(path)


def test_good_table_loads(tmp_path):
    cfg, _ = _load(tmp_path, GOOD + "prefetch = 20\nthreads = 4\nconnect_timeout = 5\n")
    assert cfg.amqp["prefetch"] == 20


@pytest.mark.parametrize(
    "table, key, says",
    [
        (GOOD + "prefetch = 'ten'\n", "amqp.prefetch", "expected an integer, got str"),
        (GOOD + "prefetch = 0\n", "amqp.prefetch", "must be >= 1"),
        (GOOD + "threads = 12\n", "amqp.prefetch", "must be >= amqp.threads (12)"),
        (GOOD + "declare = 1\n", "amqp.declare", "expected true or false"),
        (GOOD + "prefech = 3\n", "amqp.prefech", "unknown key"),
        (GOOD + "retry_limit = -1\n", "amqp.retry_limit", "must be >= 0"),
        (GOOD + "reconnect_backoff_max = 0.1\n", "amqp.reconnect_backoff_max", "must be >="),
        ('queue = "jobs"\n', "amqp.url", "required"),
        ('url = "amqp://localhost/"\n', "amqp.queue", "required"),
        ('url = "http://u:topsecret@h/"\nqueue = "q"\n', "amqp.url", "expected amqp://"),
    ],
)
def test_bad_table_names_key_and_file(tmp_path, table, key, says):
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, table)
    assert exc.value.key == key
    assert exc.value.source == str(tmp_path / "app.toml")
    assert says in str(exc.value)
    assert "topsecret" not in str(exc.value)


def test_amqp_not_a_table(tmp_path):
    path = tmp_path / "app.toml"
    path.write_text('worker = "m:C"\namqp = 3\n')
    with pytest.raises(ConfigError, match="key 'amqp'.*expected a table"):
        load(str(path))


def test_cli_exits_78_with_one_line(tmp_path):
    path = tmp_path / "app.toml"
    path.write_text(f'worker = "m:C"\n[amqp]\n{GOOD}prefetch = -3\n')
    r = subprocess.run(
        [sys.executable, "-m", "svcengine", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == EX_CONFIG
    assert f"key 'amqp.prefetch' in {path}: must be >= 1" in r.stderr
    assert "topsecret" not in r.stderr


def test_mask_url():
    from svcengine.amqp import mask_url

    assert mask_url("amqp://bob:pw@h:5673/v") == "amqp://bob:***@h:5673/v"
    assert mask_url("amqp://h/v") == "amqp://h/v"
