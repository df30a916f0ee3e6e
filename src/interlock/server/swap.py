"""Swap a folder's contents in so that a reader never finds it missing or half-written.

    exchange(Path("home/.policy-upload-1"), Path("home/policy"))

Used by the policy upload (``PUT /v1/admin/policy``). The new bundle is first written in full
to a sibling folder and verified from there; then:

* :func:`exchange` swaps the two folders in one step (Linux ``renameat2(RENAME_EXCHANGE)``):
  every lookup of ``<home>/policy`` finds either the complete old folder or the complete new
  one, never no folder, and the old one is then at the sibling's name (so undoing is the same
  call again). A reader that opened the folder before the swap keeps reading the old one.
* :func:`replace_contents` is the fallback where that call does not exist (not Linux, an old
  C library, a file system without it): ``os.replace`` file by file, the signed manifest
  (``manifest.sig``, then ``manifest.json``) last. A reader may then see a mix of old and new
  files for a moment; the bundle loader refuses every such mix — the manifest is signed and
  lists each file's SHA-256, and an unlisted policy file is refused — so a mix is never loaded
  as valid: the reader keeps the bundle it had (the gate keeps the loaded one when a reload
  fails) and the next reload sees the new bundle.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from interlock.policy.bundle import MANIFEST_FILE, SIGNATURE_FILE

__all__ = ["exchange", "remove", "replace_contents"]

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _load_renameat2() -> Callable[..., int] | None:
    """libc's ``renameat2`` (glibc 2.28+), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_RENAMEAT2 = _load_renameat2()


def exchange(a: Path, b: Path) -> None:
    """Atomically exchange the directory entries ``a`` and ``b`` (both must exist, on one file
    system).

    Raises:
        OSError: the exchange did not happen (``ENOSYS``/``EINVAL`` where it is not supported:
            use :func:`replace_contents`).
    """
    if _RENAMEAT2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available on this platform")
    rc = _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(a), None, str(b))


def _files(root: Path) -> set[str]:
    out: set[str] = set()
    for base, _dirs, names in os.walk(root, followlinks=False):
        for name in names:
            out.add((Path(base) / name).relative_to(root).as_posix())
    return out


def _same(a: Path, b: Path) -> bool:
    try:
        return a.read_bytes() == b.read_bytes()
    except OSError:
        return False


def replace_contents(src: Path, dst: Path) -> None:
    """Make folder ``dst`` hold exactly the files of ``src`` (moved out of ``src``, one
    ``os.replace`` each): changed and added files first, then stale files removed, then
    ``manifest.sig`` and ``manifest.json`` last, then empty sub-folders pruned.

    Raises:
        OSError: a step failed (``dst`` may then hold a mix: restore it the same way from a
            copy taken before).
    """
    new, old = _files(src), _files(dst)
    signed = (SIGNATURE_FILE, MANIFEST_FILE)
    for rel in sorted(new.difference(signed)):
        target = dst / rel
        if rel in old and _same(src / rel, target):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src / rel, target)
    for rel in sorted(old - new):
        if rel not in signed:
            (dst / rel).unlink()
    for rel in signed:  # the manifest names what is valid: it changes last
        if rel in new:
            os.replace(src / rel, dst / rel)
        elif rel in old:
            (dst / rel).unlink()
    for base, dirs, _names in os.walk(dst, topdown=False):
        for name in dirs:
            path = Path(base) / name
            if not path.is_symlink() and not any(path.iterdir()):
                path.rmdir()


def remove(path: Path) -> None:
    """Remove a folder (or a link) if it exists; errors are ignored. Never raises."""
    try:
        if path.is_symlink() or path.is_file():
            path.unlink()
        else:
            shutil.rmtree(path, ignore_errors=True)
    except OSError:
        pass
