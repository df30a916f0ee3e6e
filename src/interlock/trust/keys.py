"""Ed25519 key files: created with mode 0600, never overwritten, refused when readable by others,
when a link, a FIFO or another special file, or when another user owns them.

    >>> from pathlib import Path
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> key = create_key(d / "log.key")
    >>> load_private_key(d / "log.key").public_key() == key.public_key()
    True

Private keys are PKCS#8 PEM. Public keys travel as raw 32 bytes (hex or base64 in text).
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from interlock.errors import KeyFileError, UntrustedKeyFile, VerificationError
from interlock.trust.files import MAX_KEY_BYTES, read_private_file

__all__ = [
    "create_key",
    "load_private_key",
    "private_raw",
    "public_from_raw",
    "public_raw",
    "verify_signature",
]


def create_key(path: Path) -> Ed25519PrivateKey:
    """Generate an Ed25519 key and write it to ``path`` with mode 0600.

    Raises:
        KeyFileError: if ``path`` already exists (keys are never overwritten).
    """
    key = Ed25519PrivateKey.generate()
    write_key(path, key)
    return key


def write_key(path: Path, key: Ed25519PrivateKey) -> None:
    """Write ``key`` to ``path`` (PKCS#8 PEM) with mode 0600 from its first byte.

    Raises:
        KeyFileError: if ``path`` already exists (keys are never overwritten).
    """
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: never overwrite; 0o600 from the first byte, not chmod'ed afterwards.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise KeyFileError(f"refusing to overwrite existing key {path}") from exc
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
        fh.flush()
        os.fsync(fh.fileno())


def load_private_key(path: Path, *, home: Path | None = None) -> Ed25519PrivateKey:
    """Load an Ed25519 private key written by :func:`create_key`, through the checks of
    :func:`interlock.trust.files.read_private_file` with ``secret=True``.

    ``home``: the folder the key must be inside with no link on the way (``Home.private_key``
    passes the home, so ``keys/`` is checked too); None means the key's own folder, which is
    then checked like a home (a key given on the command line).

    Raises:
        UntrustedKeyFile: (a KeyFileError; ENVIRONMENT_UNTRUSTED) the key is accessible by group
            or others, a link, a FIFO or other special file, owned by another user or too
            large, or a folder on the way is a link, another user's or writable by others.
        KeyFileError: if the file is missing, unreadable, or not an Ed25519 key.
    """
    root = home if home is not None else Path(os.path.abspath(path)).parent
    try:
        data = read_private_file(
            path, home=root, max_bytes=MAX_KEY_BYTES, secret=True, error=UntrustedKeyFile
        )
    except OSError as exc:
        raise KeyFileError(f"cannot read key {path}: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"key {path} is not a PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"key {path} is not an Ed25519 key")
    return key


def private_raw(key: Ed25519PrivateKey) -> bytes:
    """The 32-byte raw private key (for libraries such as biscuit that take raw bytes)."""
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def public_raw(key: Ed25519PublicKey | Ed25519PrivateKey) -> bytes:
    """The 32-byte raw public key."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_from_raw(data: bytes) -> Ed25519PublicKey:
    """Parse a 32-byte raw Ed25519 public key.

    Raises:
        KeyFileError: if ``data`` is not 32 bytes.
    """
    if len(data) != 32:
        raise KeyFileError("an Ed25519 public key is 32 bytes", length=len(data))
    return Ed25519PublicKey.from_public_bytes(data)


def verify_signature(public: Ed25519PublicKey, signature: bytes, message: bytes) -> None:
    """Verify an Ed25519 signature.

    Raises:
        VerificationError: if the signature does not verify.
    """
    try:
        public.verify(signature, message)
    except InvalidSignature as exc:
        raise VerificationError("signature does not verify") from exc
