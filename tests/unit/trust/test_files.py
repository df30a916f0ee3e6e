"""The home's file reader (issue 9): real FIFOs, links, modes and owners, no mocks.

Each refusal asserts the error type, ENVIRONMENT_UNTRUSTED and a message naming the file; every
read that could block on a FIFO runs in a thread that must finish within a second.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from interlock.errors import UntrustedHomeFile, UntrustedKeyFile
from interlock.trust.files import (
    check_home_dir,
    check_private_file,
    read_private_file,
    read_private_text,
    read_regular_file,
)

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown to another uid")


def finishes(fn: Callable[[], object], seconds: float = 1.0) -> BaseException | None:
    """Run ``fn`` in a thread; fail unless it returns or raises within ``seconds``."""
    box: dict[str, BaseException | None] = {}

    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["exc"] = exc
        else:
            box["exc"] = None

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"{fn} blocked for more than {seconds}s"
    return box["exc"]


def refused(exc: BaseException | None, path: Path, *fragments: str) -> UntrustedHomeFile:
    assert isinstance(exc, UntrustedHomeFile), repr(exc)
    assert exc.reason_code == "ENVIRONMENT_UNTRUSTED"
    assert str(path) in exc.message
    for fragment in fragments:
        assert fragment in exc.message
    return exc


def write(path: Path, data: bytes = b"x = 1\n", mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, mode)  # whatever the umask
    return path


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir(mode=0o700)
    return h


def test_a_private_file_is_read(home: Path) -> None:
    f = write(home / "sub" / "a.txt", b"hello")
    assert read_private_file(f, home=home, max_bytes=5) == b"hello"
    assert read_private_text(f, home=home, max_bytes=5) == "hello"
    check_private_file(f, home=home, secret=True)


def test_a_fifo_is_refused_without_blocking(home: Path) -> None:
    fifo = home / "interlock.toml"
    os.mkfifo(fifo, 0o600)
    refused(finishes(lambda: read_private_file(fifo, home=home, max_bytes=10)), fifo, "FIFO")
    refused(finishes(lambda: check_private_file(fifo, home=home)), fifo, "FIFO")


def test_a_fifo_is_refused_by_the_plain_reader_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    exc = finishes(lambda: read_regular_file(fifo, max_bytes=10))
    assert isinstance(exc, OSError)
    assert "not a regular file" in str(exc)


def test_a_link_as_the_file_is_refused(home: Path, tmp_path: Path) -> None:
    target = write(tmp_path / "elsewhere.toml")
    link = home / "interlock.toml"
    link.symlink_to(target)
    refused(finishes(lambda: read_private_file(link, home=home, max_bytes=10)), link, "link")


def test_a_linked_folder_out_of_the_home_is_refused(home: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write(outside / "entities.json", b"{}")
    (home / "policy").symlink_to(outside, target_is_directory=True)
    f = home / "policy" / "entities.json"
    exc = finishes(lambda: read_private_file(f, home=home, max_bytes=10))
    refused(exc, home / "policy", "symbolic link")


def test_a_linked_folder_inside_the_home_is_refused_too(home: Path) -> None:
    write(home / "real" / "a.txt")
    (home / "alias").symlink_to(home / "real", target_is_directory=True)
    with pytest.raises(UntrustedHomeFile, match="symbolic link"):
        read_private_file(home / "alias" / "a.txt", home=home, max_bytes=10)


def test_the_home_path_itself_may_be_a_link(home: Path, tmp_path: Path) -> None:
    write(home / "a.txt", b"ok")
    alias = tmp_path / "alias"
    alias.symlink_to(home, target_is_directory=True)
    assert read_private_file(alias / "a.txt", home=alias, max_bytes=10) == b"ok"


@pytest.mark.parametrize("mode", [0o620, 0o602, 0o666])
def test_a_file_writable_by_group_or_others_is_refused(home: Path, mode: int) -> None:
    f = write(home / "interlock.toml", mode=mode)
    exc = refused(finishes(lambda: read_private_file(f, home=home, max_bytes=10)), f)
    assert f"chmod go-w {f}" in exc.message


def test_a_secret_readable_by_group_is_refused(home: Path) -> None:
    f = write(home / "keys" / "log.key", mode=0o640)
    (home / "keys").chmod(0o700)
    assert read_private_file(f, home=home, max_bytes=10) == b"x = 1\n"  # not secret: fine
    with pytest.raises(UntrustedKeyFile, match="chmod 600") as info:
        read_private_file(f, home=home, max_bytes=10, secret=True, error=UntrustedKeyFile)
    refused(info.value, f)


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o1777])
def test_a_home_writable_by_group_or_others_is_refused(home: Path, mode: int) -> None:
    f = write(home / "interlock.toml")
    home.chmod(mode)
    exc = refused(finishes(lambda: read_private_file(f, home=home, max_bytes=10)), home)
    assert f"chmod go-w {home}" in exc.message
    refused(finishes(lambda: check_home_dir(home)), home, "writable by group or others")


def test_a_folder_writable_by_others_on_the_way_is_refused(home: Path) -> None:
    f = write(home / "keys" / "log.key")
    (home / "keys").chmod(0o777)
    refused(finishes(lambda: read_private_file(f, home=home, max_bytes=10)), home / "keys")
    refused(finishes(lambda: check_home_dir(home)), home / "keys")


def test_check_home_dir_refuses_a_linked_policy_folder(home: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (home / "policy").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    refused(finishes(lambda: check_home_dir(home)), home / "policy", "symbolic link")


def test_check_home_dir_refuses_a_fifo_for_a_folder(home: Path) -> None:
    os.mkfifo(home / "keys")
    refused(finishes(lambda: check_home_dir(home)), home / "keys", "FIFO")


def test_check_home_dir_passes_a_bare_home_and_raises_for_a_missing_one(
    home: Path, tmp_path: Path
) -> None:
    check_home_dir(home)  # no keys/ or policy/ yet: their absence is decided elsewhere
    with pytest.raises(FileNotFoundError):
        check_home_dir(tmp_path / "nowhere")


def test_a_missing_file_is_file_not_found(home: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_private_file(home / "checkpoint", home=home, max_bytes=10)
    with pytest.raises(FileNotFoundError):
        check_private_file(home / "ledger.db", home=home)


def test_an_oversized_file_is_refused(home: Path) -> None:
    f = write(home / "interlock.toml", b"#" * 11)
    refused(finishes(lambda: read_private_file(f, home=home, max_bytes=10)), f, "more than")
    assert read_private_file(f, home=home, max_bytes=11) == b"#" * 11
    check_private_file(f, home=home)  # no limit given: size is not checked


def test_binary_text_is_refused_with_a_message(home: Path) -> None:
    f = write(home / "interlock.toml", b"\xff\xfe\x00garbage")
    refused(finishes(lambda: read_private_text(f, home=home, max_bytes=100)), f, "not UTF-8")


def test_a_path_outside_the_home_is_refused(home: Path, tmp_path: Path) -> None:
    f = write(tmp_path / "other.toml")
    with pytest.raises(UntrustedHomeFile, match="not inside the home"):
        read_private_file(f, home=home, max_bytes=10)
    with pytest.raises(UntrustedHomeFile, match="not inside the home"):
        read_private_file(home, home=home, max_bytes=10)


@root_only
def test_a_file_owned_by_another_user_is_refused(home: Path) -> None:
    f = write(home / "interlock.toml")
    os.chown(f, 65534, 65534)
    refused(finishes(lambda: read_private_file(f, home=home, max_bytes=10)), f, "uid 65534")


@root_only
def test_a_home_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    h = Path(tempfile.mkdtemp(dir=tmp_path))
    f = write(h / "interlock.toml")
    os.chown(h, 65534, 65534)
    refused(finishes(lambda: read_private_file(f, home=h, max_bytes=10)), h, "uid 65534")
    refused(finishes(lambda: check_home_dir(h)), h, "uid 65534")
