"""The shared validators of configuration and command-line input (issue 12): what they
accept matters as much as what they refuse."""

from __future__ import annotations

import pwd

import pytest

from svcengine import config, rundir
from svcengine.unix import privileges


@pytest.mark.parametrize("name", ["", "app", "my-app", "app@2", "a:b", "a_b.c", "foo\\x2dbar"])
def test_service_names_systemd_would_accept_are_accepted(name):
    assert config.check_name(name) == name


@pytest.mark.parametrize(
    "name", ["..", ".", ".hidden", "a/b", "/abs", "../../x", "a b", "é", "x" * 65]
)
def test_names_that_are_not_one_safe_path_component_are_refused(name):
    with pytest.raises(ValueError):
        config.check_name(name)
    with pytest.raises(ValueError):
        rundir.runtime_dir(name)


def test_workers_bound_is_shared():
    assert config.check_workers(0) == 0
    assert config.check_workers(config.MAX_WORKERS) == config.MAX_WORKERS
    for n in (-1, config.MAX_WORKERS + 1, 2**63 - 1):
        with pytest.raises(ValueError):
            config.check_workers(n)


def test_numeric_ids_resolve_through_their_entries():
    nobody = pwd.getpwnam("nobody")
    assert privileges.find_user(str(nobody.pw_uid)).pw_name == "nobody"
    identity = privileges.Identity.resolve(str(nobody.pw_uid), None)
    assert identity is not None and identity.user == "nobody"  # initgroups needs the name
    with pytest.raises(LookupError, match="no such user 'no-such-user-x'"):
        privileges.Identity.resolve("no-such-user-x", None)
    with pytest.raises(LookupError, match="no group with gid"):
        privileges.find_group("4294967294")


def test_start_only_changes_names_only_those_keys():
    old = config.Config()
    new = old.replace(workers=3, signal_map="unicorn", listen=["127.0.0.1:1"], log_level="debug")
    assert config.start_only_changes(old, new) == ["signal_map", "listen"]


def test_config_errors_are_one_line_whatever_the_key():
    err = config.ConfigError("unknown key", "a\nb", "/etc/x.toml")
    assert "\n" not in str(err) and "a\\nb" in str(err)
