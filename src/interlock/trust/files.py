"""Reading the governance home's files so that the governed agent cannot hang, redirect or feed
the gate (issue 9, "the home is checked").

    >>> import os, tempfile
    >>> from pathlib import Path
    >>> home = Path(tempfile.mkdtemp())
    >>> os.close(os.open(home / "note", os.O_WRONLY | os.O_CREAT, 0o600))
    >>> read_private_file(home / "note", home=home, max_bytes=64)
    b''
    >>> os.mkfifo(home / "pipe")  # would block a plain open() forever
    >>> try:
    ...     read_private_file(home / "pipe", home=home, max_bytes=64)
    ... except UntrustedHomeFile as exc:
    ...     exc.reason_code
    'ENVIRONMENT_UNTRUSTED'

The attacker is the governed agent: a process with a shell and whatever the home's permissions
grant it. Every file of a home is therefore read by :func:`read_private_file`, which

* opens with ``O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC``: a FIFO never blocks, a symbolic
  link as the file itself is refused, the descriptor does not leak into governed children;
* walks from the home to the file one folder at a time (``openat`` with ``O_NOFOLLOW``), so no
  component between the home and the file can be a link: what is read is inside the home, and
  a link swapped in between a check and the open is refused, not followed;
* checks what it opened (``fstat``, not the path): every folder a directory owned by this user
  (or root) and not writable by group or others; the file a regular file owned by this user,
  not writable by group or others (for secrets: not accessible by them at all), and no larger
  than the caller's limit.

The home folder itself may be reached through links (the operator chose its path), but it is
checked as the folders below it are. Every refusal raises :class:`UntrustedHomeFile` (reason
``ENVIRONMENT_UNTRUSTED``), or the subclass the caller names, with a message that names the
file, what is wrong and the command that fixes it. A missing file raises ``FileNotFoundError``
unchanged: a missing checkpoint anchor, ledger or policy folder is legitimate and each caller
decides what it means.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Final

from interlock.errors import UntrustedHomeFile

__all__ = [
    "MAX_ANCHOR_BYTES",
    "MAX_CONFIG_BYTES",
    "MAX_KEY_BYTES",
    "check_home_dir",
    "check_private_file",
    "read_private_file",
    "read_private_text",
    "read_regular_file",
    "replace_text",
]

#: ``interlock.toml``: a generous bound; a real one is a few kilobytes
MAX_CONFIG_BYTES: Final = 1 << 20
#: a PKCS#8 PEM Ed25519 key is about 120 bytes
MAX_KEY_BYTES: Final = 64 << 10
#: the checkpoint anchor is one signed note (a few hundred bytes)
MAX_ANCHOR_BYTES: Final = 64 << 10

# O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever; on a
# regular file it changes nothing. O_NOFOLLOW: the last component may not be a link.
_FILE_FLAGS: Final = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_GO_WRITE: Final = stat.S_IWGRP | stat.S_IWOTH
_GO_ANY: Final = stat.S_IRWXG | stat.S_IRWXO
_CHUNK: Final = 1 << 16
#: the folders of a home that :func:`check_home_dir` checks besides the home itself
_HOME_FOLDERS: Final = ("keys", "policy")


def read_private_file(
    path: Path,
    *,
    home: Path,
    max_bytes: int,
    secret: bool = False,
    error: type[UntrustedHomeFile] = UntrustedHomeFile,
) -> bytes:
    """The bytes of ``path``, a file inside the folder ``home``, read only if it can be trusted
    (see the module docstring for every check).

    ``secret``: the file may not be accessible by group or others at all (private keys, the
    ledger), not only not writable by them. ``error``: the :class:`UntrustedHomeFile` subclass
    to raise, so callers keep their own contract (``UntrustedKeyFile``, ``UntrustedPolicyFile``).

    Raises:
        UntrustedHomeFile: (or ``error``) ``path`` is not inside ``home``; a folder on the way
            is a link, not a directory, owned by another user or writable by group or others;
            the file is not a regular file, is a link, is owned by another user, is writable by
            group or others (for ``secret``: accessible by them), or is larger than
            ``max_bytes``.
        FileNotFoundError: the file, or a folder on the way, does not exist.
        OSError: the file could not be opened or read for another reason (permission denied,
            I/O error).
    """
    fd = _open_checked(path, home=home, max_bytes=max_bytes, secret=secret, error=error)
    try:
        chunks: list[bytes] = []
        total = 0
        while chunk := os.read(fd, _CHUNK):
            total += len(chunk)
            if total > max_bytes:  # it grew after fstat: the size limit still holds
                raise error(f"{path} is larger than {max_bytes} bytes; restore the file")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_private_text(
    path: Path,
    *,
    home: Path,
    max_bytes: int,
    error: type[UntrustedHomeFile] = UntrustedHomeFile,
) -> str:
    """:func:`read_private_file`, decoded as UTF-8 (a binary file is refused with a message, not
    a ``UnicodeDecodeError`` traceback).

    Raises:
        UntrustedHomeFile: (or ``error``) as :func:`read_private_file`, or the file is not
            UTF-8 text.
        FileNotFoundError: the file, or a folder on the way, does not exist.
        OSError: the file could not be opened or read for another reason.
    """
    data = read_private_file(path, home=home, max_bytes=max_bytes, error=error)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(
            f"{path} is not UTF-8 text (invalid byte at offset {exc.start}); restore it from a"
            " backup, or recreate it",
            offset=exc.start,
        ) from exc


def check_private_file(
    path: Path,
    *,
    home: Path,
    secret: bool = False,
    max_bytes: int | None = None,
    error: type[UntrustedHomeFile] = UntrustedHomeFile,
) -> None:
    """Apply :func:`read_private_file`'s checks to ``path`` without reading it: for files another
    library opens itself (the SQLite ledger and its ``-wal``/``-shm`` files). ``max_bytes``
    None means no size limit.

    Raises:
        UntrustedHomeFile: (or ``error``) as :func:`read_private_file`.
        FileNotFoundError: the file, or a folder on the way, does not exist.
        OSError: the file could not be opened for another reason.
    """
    fd = _open_checked(path, home=home, max_bytes=max_bytes, secret=secret, error=error)
    os.close(fd)


def check_home_dir(path: Path, *, error: type[UntrustedHomeFile] = UntrustedHomeFile) -> None:
    """Check a home folder and its ``keys/`` and ``policy/`` folders: each a directory (not a
    link, below the home) owned by this user (or root) and not writable by group or others. A
    missing ``keys/`` or ``policy/`` passes: what its absence means is decided where it is used.

    Raises:
        UntrustedHomeFile: (or ``error``) a folder fails a check.
        FileNotFoundError: the home does not exist.
        OSError: a folder could not be opened for another reason.
    """
    fd = _open_home(path, error)
    try:
        for name in _HOME_FOLDERS:
            try:
                sub = _open_below(fd, name, path / name, error)
            except FileNotFoundError:
                continue
            os.close(sub)
    finally:
        os.close(fd)


def replace_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (a fresh temporary name in the same folder,
    fsync'ed, then renamed over it), keeping its mode: a crash leaves the old file or the new
    one, never half of either, and no FIFO or link planted at a fixed name is written to.

    Raises:
        OSError: it could not be written (the original is unchanged).
    """
    mode = stat.S_IMODE(os.stat(path).st_mode)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_regular_file(path: Path, *, max_bytes: int) -> bytes:
    """The bytes of ``path``, opened without blocking and without following a final link, if it
    is a regular file of at most ``max_bytes``. No ownership or mode checks: for files outside a
    home (a bundle being authored, Interlock's own installed files).

    Raises:
        OSError: the file is missing, a link, not a regular file, larger than ``max_bytes``, or
            unreadable.
    """
    fd = os.open(path, _FILE_FLAGS)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{path} is {_kind(st.st_mode)}, not a regular file")
        if st.st_size > max_bytes:
            raise OSError(f"{path} is larger than {max_bytes} bytes")
        chunks: list[bytes] = []
        total = 0
        while chunk := os.read(fd, _CHUNK):
            total += len(chunk)
            if total > max_bytes:
                raise OSError(f"{path} is larger than {max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


# --- internals -----------------------------------------------------------------------------


def _open_checked(
    path: Path,
    *,
    home: Path,
    max_bytes: int | None,
    secret: bool,
    error: type[UntrustedHomeFile],
) -> int:
    """A read-only descriptor of ``path`` after every check (the caller closes it)."""
    parts = _relative_parts(path, home, error)
    fd = _open_home(home, error)
    try:
        where = home
        for name in parts[:-1]:
            where = where / name
            sub = _open_below(fd, name, where, error)
            os.close(fd)
            fd = sub
        name = parts[-1]
        # refuse a special file before opening it: opening a device can have side effects
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode):
            raise error(_not_regular(path, st.st_mode))
        try:
            file_fd = os.open(name, _FILE_FLAGS, dir_fd=fd)
        except OSError as exc:
            # swapped for a link between the check and the open (O_NOFOLLOW: ELOOP)
            raise error(f"{path} changed while it was being checked: {exc.strerror}") from exc
    finally:
        os.close(fd)
    try:
        # decide on what was opened, not on the path: it cannot change under us any more
        _check_file(os.fstat(file_fd), path, max_bytes=max_bytes, secret=secret, error=error)
    except BaseException:
        os.close(file_fd)
        raise
    return file_fd


def _relative_parts(path: Path, home: Path, error: type[UntrustedHomeFile]) -> tuple[str, ...]:
    # lexical on purpose: links are not resolved here, they are refused during the walk
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(home))
    parts = Path(rel).parts
    if not parts or rel == os.curdir or parts[0] == os.pardir:
        raise error(f"{path} is not inside the home {home}")
    return parts


def _open_home(home: Path, error: type[UntrustedHomeFile]) -> int:
    """A descriptor of the home folder, checked. The home itself may be reached through links:
    its path is the operator's choice, not something the governed agent can plant."""
    try:
        fd = os.open(home, _DIR_FLAGS)
    except NotADirectoryError as exc:
        raise error(f"the home {home} is not a directory") from exc
    try:
        _check_dir(os.fstat(fd), home, error)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_below(parent_fd: int, name: str, where: Path, error: type[UntrustedHomeFile]) -> int:
    """A descriptor of the folder ``name`` in ``parent_fd``, which may not be a link."""
    st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    if not stat.S_ISDIR(st.st_mode):
        raise error(_not_a_folder(where, st.st_mode))
    try:
        fd = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=parent_fd)
    except OSError as exc:
        # swapped for a link or a file between the check and the open (ELOOP, ENOTDIR)
        raise error(f"{where} changed while it was being checked: {exc.strerror}") from exc
    try:
        _check_dir(os.fstat(fd), where, error)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_dir(st: os.stat_result, where: Path, error: type[UntrustedHomeFile]) -> None:
    if not stat.S_ISDIR(st.st_mode):
        raise error(_not_a_folder(where, st.st_mode))
    euid = os.geteuid()
    # root may own a folder: root can change anything anyway (OpenSSH's safe_path does the same)
    if st.st_uid not in (euid, 0):
        raise error(
            f"{where} is owned by uid {st.st_uid}, not by the user running Interlock (uid"
            f" {euid}), so that user could change what is in it; run: chown {euid} {where},"
            " or use a home of your own",
            owner=st.st_uid,
        )
    if st.st_mode & _GO_WRITE:
        raise error(
            f"{where} is writable by group or others (mode {_mode(st)}), so they could replace"
            f" what is in it; run: chmod go-w {where}, or keep the home in a folder only you"
            " can write",
            mode=_mode(st),
        )


def _check_file(
    st: os.stat_result,
    path: Path,
    *,
    max_bytes: int | None,
    secret: bool,
    error: type[UntrustedHomeFile],
) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise error(_not_regular(path, st.st_mode))
    euid = os.geteuid()
    if st.st_uid != euid:
        raise error(
            f"{path} is owned by uid {st.st_uid}, not by the user running Interlock (uid"
            f" {euid}); run: chown {euid} {path} once you have checked its content",
            owner=st.st_uid,
        )
    if secret and st.st_mode & _GO_ANY:
        raise error(
            f"{path} is accessible by group or others (mode {_mode(st)}); run: chmod 600 {path}",
            mode=_mode(st),
        )
    if st.st_mode & _GO_WRITE:
        raise error(
            f"{path} is writable by group or others (mode {_mode(st)}), so they could change"
            f" it; run: chmod go-w {path}",
            mode=_mode(st),
        )
    if max_bytes is not None and st.st_size > max_bytes:
        raise error(
            f"{path} is {st.st_size} bytes, more than the {max_bytes} allowed; restore the file",
            size=st.st_size,
        )


def _not_regular(path: Path, mode: int) -> str:
    if stat.S_ISLNK(mode):
        return (
            f"{path} is a symbolic link: a home's files must be the files themselves, not links"
            " that could point out of it; replace the link with the file it points to"
        )
    return (
        f"{path} is {_kind(mode)}, not a regular file (a FIFO or a device could block or feed"
        f" Interlock); remove it and restore the file"
    )


def _not_a_folder(where: Path, mode: int) -> str:
    return f"{where} is {_kind(mode)}, not a folder; remove it and restore the folder"


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISREG(mode):
        return "a regular file"
    return "a special file"


def _mode(st: os.stat_result) -> str:
    return f"{stat.S_IMODE(st.st_mode):04o}"
