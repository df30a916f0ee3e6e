"""The home is checked (issue 9): the governed agent cannot hang, redirect or edit the gate's
files. Real homes from ``init_home``; real FIFOs, links, modes and owners.

Every refusal asserts the error type, ENVIRONMENT_UNTRUSTED and a message naming the file;
every load that a FIFO could block runs in a thread that must finish within a second.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from interlock.bootstrap import init_home
from interlock.errors import (
    ConfigError,
    KeyFileError,
    PolicyError,
    UntrustedHomeFile,
    UntrustedKeyFile,
    UntrustedPolicyFile,
)
from interlock.gate import Gate
from interlock.home import CONFIG_NAME, Config, Home
from interlock.policy.bundle import MANIFEST_FILE, load_bundle
from interlock.trust.attestation import measure, trust_current
from interlock.trust.files import MAX_CONFIG_BYTES
from tests.unit.trust.test_files import finishes, refused, root_only


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One initialised home, copied for each test (init_home signs and opens a gate: slow)."""
    return init_home(tmp_path_factory.mktemp("pristine") / "h", origin="interlock.test/h").path


@pytest.fixture
def home(pristine: Path, tmp_path: Path) -> Path:
    h = tmp_path / "h"
    shutil.copytree(pristine, h, symlinks=True)  # copies modes too
    return h


def load_bundle_of(home: Path) -> object:
    h = Home.load(home)
    return load_bundle(h.policy_dir, h.trusted_policy_keys())


def test_a_fresh_home_loads_and_a_gate_opens_on_it(home: Path) -> None:
    assert (home / CONFIG_NAME).stat().st_mode & 0o777 == 0o600
    h = Home.load(home)
    for name in ("log", "policy", "biscuit-root", "node"):
        h.private_key(name)
    assert load_bundle(h.policy_dir, h.trusted_policy_keys()).version == 1
    measure(home / CONFIG_NAME, None)
    Gate.open(home).close()  # nothing of the home is refused, nothing blocks
    Home.load(home)  # and what the gate wrote (ledger, anchor) passes the checks


def test_the_anchor_is_read_back(home: Path) -> None:
    anchor = home / "checkpoint"
    anchor.unlink(missing_ok=True)
    fd = os.open(anchor, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # as the gate writes it
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("interlock.test/h\n1\nAAAA\n")
    assert Home.load(home).read_anchor() == "interlock.test/h\n1\nAAAA\n"


def test_a_home_made_under_a_loose_umask_still_loads(tmp_path: Path) -> None:
    old = os.umask(0o002)  # group-writable by default: what the checks refuse
    try:
        h = init_home(tmp_path / "h")
    finally:
        os.umask(old)
    loaded = Home.load(h.path)
    loaded.private_key("log")
    load_bundle(loaded.policy_dir, loaded.trusted_policy_keys())


def test_a_fifo_for_the_configuration_is_refused_without_hanging(home: Path) -> None:
    cfg = home / CONFIG_NAME
    cfg.unlink()
    os.mkfifo(cfg, 0o600)
    exc = refused(finishes(lambda: Home.load(home)), cfg, "FIFO")
    assert isinstance(exc, ConfigError)
    refused(finishes(lambda: measure(cfg, None)), cfg, "FIFO")
    refused(finishes(lambda: trust_current(cfg)), cfg, "FIFO")


def test_a_fifo_for_a_key_is_refused_without_hanging(home: Path) -> None:
    key = home / "keys" / "log.key"
    key.unlink()
    os.mkfifo(key, 0o600)
    h = Home.load(home)
    exc = refused(finishes(lambda: h.private_key("log")), key, "FIFO")
    assert isinstance(exc, UntrustedKeyFile)
    assert isinstance(exc, KeyFileError)  # load_private_key's contract holds


def test_a_fifo_for_the_policy_manifest_is_refused_without_hanging(home: Path) -> None:
    manifest = home / "policy" / MANIFEST_FILE
    manifest.unlink()
    os.mkfifo(manifest, 0o600)
    exc = refused(finishes(lambda: load_bundle_of(home)), manifest, "FIFO")
    assert isinstance(exc, UntrustedPolicyFile)
    assert isinstance(exc, PolicyError)  # so a gate opens and denies POLICY_UNAVAILABLE


def test_a_gate_with_a_fifo_for_its_manifest_opens_and_denies(home: Path) -> None:
    manifest = home / "policy" / MANIFEST_FILE
    manifest.unlink()
    os.mkfifo(manifest, 0o600)
    opened: list[Gate] = []
    exc = finishes(lambda: opened.append(Gate.open(home)), seconds=10)
    assert exc is None
    try:
        problem = opened[0].snapshot.policy_problem
        assert problem is not None
        assert str(manifest) in problem
    finally:
        opened[0].close()


def test_a_fifo_for_the_checkpoint_anchor_is_refused_without_hanging(home: Path) -> None:
    anchor = home / "checkpoint"
    anchor.unlink(missing_ok=True)
    os.mkfifo(anchor, 0o600)
    refused(finishes(lambda: Home.load(home)), anchor, "FIFO")
    h = Home(path=home, config=_config(home))  # as a running gate holds it
    refused(finishes(h.read_anchor), anchor, "FIFO")


def _config(home: Path) -> Config:
    return Config.from_toml((home / CONFIG_NAME).read_text())


def test_a_missing_anchor_is_none(home: Path) -> None:
    (home / "checkpoint").unlink(missing_ok=True)
    assert Home.load(home).read_anchor() is None


def test_a_world_writable_home_is_refused(home: Path) -> None:
    home.chmod(0o777)
    exc = refused(finishes(lambda: Home.load(home)), home, "writable by group or others")
    assert f"chmod go-w {home}" in exc.message


def test_a_world_writable_keys_folder_is_refused(home: Path) -> None:
    (home / "keys").chmod(0o777)
    refused(finishes(lambda: Home.load(home)), home / "keys", "chmod go-w")


@pytest.mark.parametrize("mode", [0o666, 0o620])
def test_a_configuration_writable_by_others_or_group_is_refused(home: Path, mode: int) -> None:
    cfg = home / CONFIG_NAME
    cfg.chmod(mode)
    refused(finishes(lambda: Home.load(home)), cfg, f"chmod go-w {cfg}")


def test_a_key_linked_into_a_world_writable_folder_is_refused(home: Path) -> None:
    public = Path(tempfile.mkdtemp())
    try:
        public.chmod(0o1777)
        key = home / "keys" / "log.key"
        shutil.move(key, public / "log.key")
        key.symlink_to(public / "log.key")
        h = Home.load(home)
        exc = refused(finishes(lambda: h.private_key("log")), key, "symbolic link")
        assert isinstance(exc, UntrustedKeyFile)
    finally:
        shutil.rmtree(public)


def test_a_linked_policy_folder_pointing_out_of_the_home_is_refused(
    home: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside-policy"
    shutil.move(home / "policy", outside)
    (home / "policy").symlink_to(outside, target_is_directory=True)
    refused(finishes(lambda: Home.load(home)), home / "policy", "symbolic link")
    h = Home(path=home, config=_config(home))
    exc = refused(
        finishes(lambda: load_bundle(h.policy_dir, h.trusted_policy_keys())),
        home / "policy",
        "symbolic link",
    )
    assert isinstance(exc, UntrustedPolicyFile)


def test_a_group_writable_policy_file_is_refused(home: Path) -> None:
    pol = next((home / "policy").glob("*.cedar"))
    pol.chmod(0o664)
    exc = refused(finishes(lambda: load_bundle_of(home)), pol, "chmod go-w")
    assert isinstance(exc, UntrustedPolicyFile)


def test_a_binary_configuration_is_a_clear_error(home: Path) -> None:
    cfg = home / CONFIG_NAME
    cfg.write_bytes(b"\xff\xfe\x00garbage")
    exc = refused(finishes(lambda: Home.load(home)), cfg, "not UTF-8")
    assert isinstance(exc.__cause__, UnicodeDecodeError)
    refused(finishes(lambda: measure(cfg, None)), cfg, "not UTF-8")
    refused(finishes(lambda: trust_current(cfg)), cfg, "not UTF-8")


def test_an_oversized_configuration_is_refused(home: Path) -> None:
    cfg = home / CONFIG_NAME
    with cfg.open("a") as fh:
        fh.write("#" * MAX_CONFIG_BYTES + "\n")
    refused(finishes(lambda: Home.load(home)), cfg, "more than")


def test_a_ledger_readable_by_others_is_refused(home: Path) -> None:
    db = home / "ledger.db"
    db.chmod(0o644)
    refused(finishes(lambda: Home.load(home)), db, f"chmod 600 {db}")


@root_only
def test_a_configuration_owned_by_another_user_is_refused(home: Path) -> None:
    cfg = home / CONFIG_NAME
    os.chown(cfg, 65534, 65534)
    refused(finishes(lambda: Home.load(home)), cfg, "uid 65534")


@root_only
def test_a_key_owned_by_another_user_is_refused(home: Path) -> None:
    key = home / "keys" / "node.key"
    os.chown(key, 65534, 65534)
    h = Home.load(home)
    exc = refused(finishes(lambda: h.private_key("node")), key, "uid 65534")
    assert isinstance(exc, UntrustedHomeFile)
