"""Governance homes: creation, refusal to overwrite, configuration validation, key hygiene."""

from __future__ import annotations

from pathlib import Path

import pytest

from interlock.bootstrap import init_home
from interlock.errors import ConfigError, HomeExists, KeyFileError
from interlock.home import Config, Home, default_home
from interlock.trust import keys


def test_init_creates_keys_config_policy_and_ledger(tmp_path: Path) -> None:
    home = init_home(tmp_path / "h", origin="interlock.test/h")
    assert sorted(p.name for p in (home.path / "keys").iterdir()) == [
        "biscuit-root.key",
        "log.key",
        "node.key",
        "policy.key",
    ]
    assert (home.path / "policy" / "manifest.json").exists()
    assert (home.path / "ledger.db").exists()
    loaded = Home.load(home.path)
    assert loaded.config.origin == "interlock.test/h"
    pub = keys.public_raw(loaded.private_key("policy")).hex()
    assert loaded.config.trusted_policy_keys == (pub,)


def test_second_init_refuses_and_changes_nothing(tmp_path: Path) -> None:
    home = init_home(tmp_path / "h")
    before = (home.path / "keys" / "log.key").read_bytes()
    with pytest.raises(HomeExists):
        init_home(home.path)
    assert (home.path / "keys" / "log.key").read_bytes() == before


def test_keys_readable_by_others_are_refused(tmp_path: Path) -> None:
    home = init_home(tmp_path / "h")
    k = home.path / "keys" / "log.key"
    k.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        Home.load(home.path).private_key("log")


def test_create_key_never_overwrites(tmp_path: Path) -> None:
    keys.create_key(tmp_path / "a.key")
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        keys.create_key(tmp_path / "a.key")


def test_missing_home_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="interlock init"):
        Home.load(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("toml", "fragment"),
    [
        ('[log]\norigin = "a b"\n', "origin"),
        ("[log]\n", "origin"),
        ('[log]\norigin = "x"\ndurability = "sometimes"\n', "durability"),
        ('[log]\norigin = "x"\n[gate]\ndeadline_ms = 0\n', "deadline_ms"),
        ('[log]\norigin = "x"\n[gate]\ndeadline_ms = true\n', "deadline_ms"),
        ('[log]\norigin = "x"\n[gate]\nsurprise = 1\n', "unknown key"),
        ('[log]\norigin = "x"\n[extra]\n', "unknown section"),
        ('[log]\norigin = "x"\n[policy]\ntrusted_keys = ["zz"]\n', "not hex"),
        ("not toml [", "interlock.toml"),
    ],
)
def test_bad_configuration_is_refused_with_its_key(toml: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        Config.from_toml(toml)


def test_default_home_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTERLOCK_HOME", "/env/home")
    assert default_home("/explicit") == Path("/explicit")
    assert default_home(None) == Path("/env/home")
    monkeypatch.delenv("INTERLOCK_HOME")
    assert default_home(None) == Path(".interlock")


def test_bad_origin_is_refused_before_any_key_exists(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="origin"):
        init_home(tmp_path / "h", origin='evil" origin')
    assert not (tmp_path / "h" / "keys").exists()
    init_home(tmp_path / "h", origin="interlock.test/ok")  # and the path is still usable


def test_a_folder_holding_a_policy_is_not_taken_over(tmp_path: Path) -> None:
    (tmp_path / "h" / "policy").mkdir(parents=True)
    with pytest.raises(HomeExists):
        init_home(tmp_path / "h")
    assert not (tmp_path / "h" / "keys").exists()


def test_ledger_file_is_owner_only(tmp_path: Path) -> None:
    home = init_home(tmp_path / "h")
    assert (home.path / "ledger.db").stat().st_mode & 0o777 == 0o600
    assert home.path.stat().st_mode & 0o777 == 0o700
