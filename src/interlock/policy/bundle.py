"""Signed policy bundles (DESIGN §7): a folder of Cedar files covered by an Ed25519-signed manifest.

    >>> import shutil, tempfile
    >>> from pathlib import Path
    >>> from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    >>> from interlock.policy import DEFAULT_BUNDLE
    >>> folder = Path(tempfile.mkdtemp()) / "policy"
    >>> _ = shutil.copytree(DEFAULT_BUNDLE, folder)
    >>> key = Ed25519PrivateKey.generate()
    >>> sign_bundle(folder, key).version
    1
    >>> bundle = load_bundle(folder, [key.public_key()])
    >>> bundle.version, len(bundle.digest)
    (1, 64)
    >>> PolicyBundle.from_blob(bundle.to_blob(), [key.public_key()]) == bundle
    True

A bundle folder holds:

* ``*.cedar`` — the policies (any folder except ``tests/``), ``schema.cedarschema``,
  ``entities.json``, optionally ``tests/*.json`` (policy test cases, see
  :mod:`interlock.policy.testing`) and any other files (e.g. a README);
* ``manifest.json`` — the RFC 8785 bytes of
  ``{"v": 1, "version": <int>, "files": {"<relative path>": "<sha256 hex>", ...}}``, listing
  **every** other file of the folder, test cases included, so the whole folder is covered;
* ``manifest.sig`` — ``{"key": "<hex raw Ed25519 public key>", "sig": "<base64 signature over
  the manifest.json bytes>"}``.

:func:`load_bundle` accepts a bundle only when the manifest is signed by a trusted key, every
listed file is present with its hash, no unlisted ``.cedar``/``.cedarschema``/``.json`` file is
present (an added, unsigned policy must not load), the version is not below ``min_version``
(versions never go backwards), and the policies, schema and entities parse and the policies
validate against the schema. Symbolic links are refused anywhere in the folder.

:func:`load_bundle` reads every file through :func:`interlock.trust.files.read_private_file`
with the folder's parent as the root (for a home's ``policy/``, the home): the folder itself may
not be a link, and it, its subfolders and its files must be this user's, not writable by group or
others, and regular files (a FIFO never blocks the loader). Such a refusal is an
:class:`~interlock.errors.UntrustedPolicyFile` (a PolicyError, reason ENVIRONMENT_UNTRUSTED).
The authoring side (:func:`sign_bundle`, :func:`validate_bundle`, :func:`read_bundle_files`)
checks no owners or modes, but still never blocks on a special file.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from interlock.core.canonical import CanonicalizationError, canonical_bytes, sha256_hex
from interlock.errors import PolicyError, UntrustedPolicyFile
from interlock.policy import _cedar
from interlock.policy._cedar import Compiled
from interlock.trust.files import read_private_file, read_regular_file
from interlock.trust.keys import public_raw

__all__ = [
    "MANIFEST_FILE",
    "SIGNATURE_FILE",
    "Manifest",
    "PolicyBundle",
    "load_bundle",
    "read_bundle_files",
    "sign_bundle",
    "validate_bundle",
]

MANIFEST_FILE: Final = "manifest.json"
SIGNATURE_FILE: Final = "manifest.sig"
MANIFEST_VERSION: Final = 1
BLOB_VERSION: Final = 1

#: an unlisted file with one of these suffixes makes a bundle refuse to load
_GUARDED_SUFFIXES: Final = (".cedar", ".cedarschema", ".json")
_MAX_VERSION: Final = 2**53 - 1  # RFC 8785 / I-JSON safe integer
_HEX64: Final = re.compile(r"^[0-9a-f]{64}\Z")
#: no bundle file may be larger (the whole bundle, uploaded, is at most 4 MiB)
MAX_FILE_BYTES: Final = 16 << 20


def _sign_hint(directory: Path | str = "<bundle>") -> str:
    return f"run `interlock policy sign {directory}` with a trusted policy key"


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """What a bundle signature covers: a version and the sha256 of every file.

        >>> m = Manifest(version=3, files={"a.cedar": "0" * 64})
        >>> m.to_bytes()[:22]
        b'{"files":{"a.cedar":"0'
        >>> Manifest.from_bytes(m.to_bytes()) == m
        True

    Raises:
        PolicyError: if the version is not an integer in [1, 2**53 - 1], or a path or digest is
            malformed (absolute, ``..``, backslash, not lowercase sha256 hex).
    """

    version: int
    files: Mapping[str, str]

    def __post_init__(self) -> None:
        if type(self.version) is not int or not 1 <= self.version <= _MAX_VERSION:
            raise PolicyError("manifest version must be an integer >= 1", version=self.version)
        checked: dict[str, str] = {}
        for path, sha in sorted(self.files.items()):
            _check_path(path)
            if not isinstance(sha, str) or not _HEX64.match(sha):
                raise PolicyError("manifest digest is not sha256 hex", path=path)
            checked[path] = sha
        object.__setattr__(self, "files", MappingProxyType(checked))

    def __hash__(self) -> int:
        return hash((self.version, tuple(self.files.items())))

    def to_json(self) -> dict[str, Any]:
        """The manifest as a JSON object."""
        return {"v": MANIFEST_VERSION, "version": self.version, "files": dict(self.files)}

    def to_bytes(self) -> bytes:
        """The RFC 8785 bytes that are written to ``manifest.json`` and signed."""
        return canonical_bytes(self.to_json())

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Parse ``manifest.json`` bytes, which must be exactly canonical (RFC 8785).

        Raises:
            PolicyError: if the bytes are not a canonical v1 manifest.
        """
        try:
            obj = json.loads(data)
            canonical = canonical_bytes(obj)
        except (ValueError, CanonicalizationError) as exc:
            raise PolicyError(f"{MANIFEST_FILE} is not valid JSON; {_sign_hint()}") from exc
        if canonical != data:
            raise PolicyError(f"{MANIFEST_FILE} is not in canonical form; {_sign_hint()}")
        if (
            not isinstance(obj, dict)
            or set(obj) != {"v", "version", "files"}
            or obj["v"] != MANIFEST_VERSION
            or not isinstance(obj["files"], dict)
        ):
            raise PolicyError(f"{MANIFEST_FILE} is not a v1 manifest; {_sign_hint()}")
        return cls(version=obj["version"], files=obj["files"])


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyBundle:
    """A verified, signed bundle: build it with :func:`load_bundle` or :meth:`from_blob`.

    ``digest`` is the sha256 hex of the manifest bytes (it identifies the bundle: the files are
    bound to it by their hashes). ``files`` maps every signed relative path to its bytes.
    ``signer`` is the hex raw public key that signed it; ``signature`` the raw signature.
    """

    version: int
    digest: str
    manifest: Manifest
    files: Mapping[str, bytes]
    signer: str
    signature: bytes
    _compiled: Compiled = field(repr=False, compare=False)

    def __hash__(self) -> int:
        return hash(self.digest)

    def to_blob(self) -> bytes:
        """The exact bundle as one byte string (RFC 8785 JSON, files base64), for the ledger's
        payload table, so ``ledger replay`` can re-decide with the pinned bundle."""
        return canonical_bytes(
            {
                "v": BLOB_VERSION,
                "manifest": self.manifest.to_json(),
                "signature": _signature_doc(self.signer, self.signature),
                "files": {p: base64.b64encode(b).decode("ascii") for p, b in self.files.items()},
            }
        )

    @classmethod
    def from_blob(
        cls, data: bytes, trusted_keys: Sequence[Ed25519PublicKey], *, min_version: int = 0
    ) -> PolicyBundle:
        """Rebuild a bundle from :meth:`to_blob` bytes, re-verifying everything
        :func:`load_bundle` verifies (signature, hashes, exact file set, version, validation).

        Raises:
            PolicyError: if the blob is malformed or any check fails.
        """
        try:
            obj = json.loads(data)
        except ValueError as exc:
            raise PolicyError("policy bundle blob is not JSON") from exc
        if (
            not isinstance(obj, dict)
            or set(obj) != {"v", "manifest", "signature", "files"}
            or obj["v"] != BLOB_VERSION
            or not isinstance(obj["files"], dict)
        ):
            raise PolicyError("not a v1 policy bundle blob")
        try:
            manifest_bytes = canonical_bytes(obj["manifest"])
            files = {str(p): base64.b64decode(b, validate=True) for p, b in obj["files"].items()}
        except (CanonicalizationError, binascii.Error, TypeError, ValueError) as exc:
            raise PolicyError("policy bundle blob is malformed") from exc
        signer, signature = _parse_signature_doc(obj["signature"])
        manifest = _verify_manifest(manifest_bytes, signer, signature, trusted_keys, min_version)
        extra = sorted(set(files) - set(manifest.files))
        if extra:
            raise PolicyError(
                "policy bundle blob holds files the manifest does not list", extra=extra
            )
        return _assemble(manifest, manifest_bytes, signer, signature, files, None)


def sign_bundle(directory: Path, key: Ed25519PrivateKey, *, version: int | None = None) -> Manifest:
    """Hash every file of ``directory`` (except ``manifest.json``/``manifest.sig``), write the
    manifest and its signature, and return the manifest.

    ``version`` defaults to the previous manifest's version + 1 (1 when there is none); an
    explicit ``version`` must be greater than the previous one. The bundle must be valid
    (policies parse and validate against the schema): an invalid bundle is never signed.

    Raises:
        PolicyError: if the folder is unreadable or holds a symlink, the bundle is invalid, the
            previous manifest is unreadable and no ``version`` was given, or ``version`` does not
            increase.
    """
    files = read_bundle_files(directory)
    _cedar.compile_files(files)
    previous = _previous_version(directory)
    if version is None:
        if previous == _UNREADABLE:
            raise PolicyError(
                f"{directory / MANIFEST_FILE} is unreadable, so the next version is unknown; "
                "pass the version explicitly"
            )
        version = (previous or 0) + 1
    elif previous is not None and version <= previous:
        raise PolicyError(
            f"version {version} does not increase on the signed version {previous} "
            "(policy versions never go backwards)"
        )
    manifest = Manifest(version=version, files={p: sha256_hex(b) for p, b in files.items()})
    data = manifest.to_bytes()
    signature_doc = canonical_bytes(_signature_doc(public_raw(key).hex(), key.sign(data)))
    _write_atomic(directory / MANIFEST_FILE, data)
    _write_atomic(directory / SIGNATURE_FILE, signature_doc)
    return manifest


def load_bundle(
    directory: Path, trusted_keys: Sequence[Ed25519PublicKey], *, min_version: int = 0
) -> PolicyBundle:
    """Load and verify a signed bundle folder (see the module docstring for every check).

    Raises:
        UntrustedPolicyFile: (a PolicyError; ENVIRONMENT_UNTRUSTED) the folder is a link, or it,
            a subfolder or a file is another user's, writable by group or others, a special file
            or too large.
        PolicyError: on any other failed check; the message says what to do about it.
    """
    if not directory.is_dir():
        raise PolicyError(f"policy bundle {directory} is not a directory")
    try:
        manifest_bytes = _read_trusted(directory, MANIFEST_FILE)
        signature_bytes = _read_trusted(directory, SIGNATURE_FILE)
    except FileNotFoundError as exc:
        raise PolicyError(
            f"policy bundle {directory} is not signed (no {Path(exc.filename).name}); "
            f"{_sign_hint(directory)}"
        ) from exc
    except OSError as exc:
        raise PolicyError(f"cannot read the manifest of {directory}: {exc.strerror}") from exc
    try:
        signature_obj = json.loads(signature_bytes)
    except ValueError as exc:
        raise PolicyError(f"{SIGNATURE_FILE} is not JSON; {_sign_hint(directory)}") from exc
    signer, signature = _parse_signature_doc(signature_obj)
    manifest = _verify_manifest(manifest_bytes, signer, signature, trusted_keys, min_version)

    present = set(_walk(directory))
    unlisted = sorted(p for p in present - set(manifest.files) if p.endswith(_GUARDED_SUFFIXES))
    if unlisted:
        raise PolicyError(
            f"{directory / unlisted[0]} is not covered by the signed manifest; remove it, or "
            f"{_sign_hint(directory)} to include it",
            unlisted=unlisted,
        )
    files: dict[str, bytes] = {}
    for path in manifest.files:
        if path not in present:
            raise PolicyError(
                f"{directory / path} is listed in the signed manifest but missing; restore it, "
                f"or {_sign_hint(directory)}"
            )
        try:
            files[path] = _read_trusted(directory, path)
        except OSError as exc:
            raise PolicyError(f"cannot read {directory / path}: {exc.strerror}") from exc
    return _assemble(manifest, manifest_bytes, signer, signature, files, directory)


def validate_bundle(directory: Path) -> list[str]:
    """Every problem with a bundle folder's contents, without checking any signature: policy,
    schema and entities parse errors, schema validation errors, duplicate policy ids. An empty
    list means the bundle is valid (for ``interlock policy validate``).

    Raises:
        PolicyError: if the folder cannot be read or holds a symlink.
    """
    return _cedar.check_files(read_bundle_files(directory))


def read_bundle_files(directory: Path) -> dict[str, bytes]:
    """Every file of a bundle folder except ``manifest.json``/``manifest.sig``, by relative
    POSIX path. Checks nothing but readability.

    Raises:
        PolicyError: if ``directory`` is not a directory, a file is unreadable, or the folder
            holds a symlink or a special file.
    """
    if not directory.is_dir():
        raise PolicyError(f"policy bundle {directory} is not a directory")
    return {p: _read_file(directory, p) for p in _walk(directory)}


# --- internals -----------------------------------------------------------------------------


_UNREADABLE: Final = -1


def _check_path(path: object) -> None:
    if (
        not isinstance(path, str)
        or not path
        or path.startswith("/")
        or "\\" in path
        or "\x00" in path
        or any(part in ("", ".", "..") for part in path.split("/"))
        or path in (MANIFEST_FILE, SIGNATURE_FILE)
    ):
        raise PolicyError("manifest lists an invalid path", path=repr(path))


def _signature_doc(signer: str, signature: bytes) -> dict[str, str]:
    return {"key": signer, "sig": base64.b64encode(signature).decode("ascii")}


def _parse_signature_doc(obj: object) -> tuple[str, bytes]:
    if (
        not isinstance(obj, dict)
        or set(obj) != {"key", "sig"}
        or not isinstance(obj["key"], str)
        or not isinstance(obj["sig"], str)
    ):
        raise PolicyError(f"{SIGNATURE_FILE} is malformed; {_sign_hint()}")
    try:
        signature = base64.b64decode(obj["sig"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PolicyError(f"{SIGNATURE_FILE} signature is not base64; {_sign_hint()}") from exc
    return obj["key"].lower(), signature


def _verify_manifest(
    manifest_bytes: bytes,
    signer: str,
    signature: bytes,
    trusted_keys: Sequence[Ed25519PublicKey],
    min_version: int,
) -> Manifest:
    # An empty trust list would otherwise accept nothing silently; say so instead.
    if not trusted_keys:
        raise PolicyError("no trusted policy keys are configured, so no bundle can load")
    trusted = {public_raw(k).hex(): k for k in trusted_keys}
    key = trusted.get(signer)
    if key is None:
        raise PolicyError(
            f"the bundle is signed by key {signer}, which is not a trusted policy key; "
            f"{_sign_hint()}, or add the key to the trusted policy keys",
            signer=signer,
        )
    try:
        key.verify(signature, manifest_bytes)
    except InvalidSignature as exc:
        raise PolicyError(
            f"the manifest signature does not verify (the manifest changed after signing); "
            f"{_sign_hint()}"
        ) from exc
    manifest = Manifest.from_bytes(manifest_bytes)  # only parsed once the signature holds
    if manifest.version < min_version:
        raise PolicyError(
            f"bundle version {manifest.version} is older than the required {min_version} "
            f"(policy versions never go backwards); sign a newer version: {_sign_hint()}",
            version=manifest.version,
            min_version=min_version,
        )
    return manifest


def _assemble(
    manifest: Manifest,
    manifest_bytes: bytes,
    signer: str,
    signature: bytes,
    files: Mapping[str, bytes],
    directory: Path | None,
) -> PolicyBundle:
    where = "the bundle blob" if directory is None else str(directory)
    hint = _sign_hint() if directory is None else _sign_hint(directory)
    for path, expected in manifest.files.items():
        data = files.get(path)
        if data is None:
            raise PolicyError(f"{path} is listed in the signed manifest but missing from {where}")
        if sha256_hex(data) != expected:
            raise PolicyError(
                f"{path} in {where} does not match the signed manifest; restore the signed "
                f"file, or if the change is intended, {hint}",
                path=path,
            )
    files = {p: files[p] for p in sorted(manifest.files)}
    return PolicyBundle(
        version=manifest.version,
        digest=sha256_hex(manifest_bytes),
        manifest=manifest,
        files=MappingProxyType(files),
        signer=signer,
        signature=signature,
        _compiled=_cedar.compile_files(files),
    )


def _walk(directory: Path) -> list[str]:
    out: list[str] = []
    for root, dirs, names in os.walk(directory, followlinks=False):
        base = Path(root)
        for name in [*dirs, *names]:
            st = (base / name).lstat()
            rel = (base / name).relative_to(directory).as_posix()
            if stat.S_ISLNK(st.st_mode):
                raise PolicyError(f"{base / name} is a symbolic link; bundles may not hold links")
            if name in dirs:
                continue
            if not stat.S_ISREG(st.st_mode):
                raise PolicyError(f"{base / name} is not a regular file")
            if rel not in (MANIFEST_FILE, SIGNATURE_FILE):
                out.append(rel)
    return sorted(out)


def _read_trusted(directory: Path, rel: str) -> bytes:
    """A bundle file read through the home's checks, rooted at the folder's parent so that the
    folder itself is checked and may not be a link.

    Raises:
        UntrustedPolicyFile: the file or a folder on the way fails a check.
        OSError: the file is missing (FileNotFoundError) or unreadable.
    """
    root = Path(os.path.abspath(directory)).parent
    return read_private_file(
        directory / rel, home=root, max_bytes=MAX_FILE_BYTES, error=UntrustedPolicyFile
    )


def _read_file(directory: Path, rel: str) -> bytes:
    try:
        # non-blocking and not through a final link: a FIFO swapped in after _walk's check
        # must not hang `interlock policy sign`
        return read_regular_file(directory / rel, max_bytes=MAX_FILE_BYTES)
    except OSError as exc:
        raise PolicyError(f"cannot read {directory / rel}: {exc.strerror or exc}") from exc


def _previous_version(directory: Path) -> int | None:
    path = directory / MANIFEST_FILE
    if not path.exists():
        return None
    try:
        obj = json.loads(read_regular_file(path, max_bytes=MAX_FILE_BYTES))
        version = obj["version"]
    except (OSError, ValueError, KeyError, TypeError):
        return _UNREADABLE
    return version if type(version) is int and version >= 1 else _UNREADABLE


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()  # a stale one would keep its mode through O_TRUNC
        # 0644 whatever the umask: the loader refuses files that group or others can write
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise PolicyError(f"cannot write {path}: {exc.strerror}") from exc
