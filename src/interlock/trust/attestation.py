"""Runtime attestation (DESIGN §7, issue 3 §4): the node measures what it runs on.

    >>> m = Measurement(interlock="aa" * 32, config="bb" * 32, policy=None, python="CPython 3.11.7")
    >>> len(m.platform), m.env(attested=True)["python"]
    (64, 'CPython 3.11.7')

A measurement has four components:

* ``interlock`` — SHA-256 over Interlock's installed files (every file of the ``interlock``
  package except ``__pycache__``), each as ``<relative path> NUL <sha256 hex> LF``, sorted by
  path: a changed, added or removed file changes it;
* ``config`` — SHA-256 of the RFC 8785 bytes of the parsed ``interlock.toml`` *without*
  ``[attestation] trusted`` (the trusted set cannot contain a digest of itself): comments and
  formatting do not count, every setting does;
* ``policy`` — the active policy bundle's digest (or None);
* ``python`` — the interpreter, e.g. ``CPython 3.11.7``;
* ``containment`` — what ``interlock exec`` can enforce here (DESIGN I9): the ``[exec]`` mode,
  whether it is available, the cgroup directory and the Landlock ABI
  (:func:`interlock.containment.describe`). Recorded and signed with the rest, and given to
  policies as ``context.env.containment``: the mode when it is available, else ``"none"``.

``platform`` is the digest of the first, second and fourth: what ``[attestation] trusted``
lists. The policy bundle is trusted by its *signature* (``[policy] trusted_keys``), not by this
list, so signing a new policy version does not require re-trusting the node; it is still part
of the signed, recorded measurement (``measurement``) and of ``context.env`` for policies.

Everything here except :func:`measure` and :func:`trust_current` is pure.
"""

from __future__ import annotations

import hashlib
import os
import platform as _platform
import re
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interlock.core.canonical import canonical_bytes, digest
from interlock.errors import ConfigError
from interlock.trust.files import MAX_CONFIG_BYTES, read_private_text, replace_text

__all__ = [
    "Measurement",
    "measure",
    "measure_config",
    "measure_files",
    "package_root",
    "trust_current",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Measurement:
    """One measurement of the node's environment (hex SHA-256 digests)."""

    interlock: str
    config: str
    policy: str | None
    python: str
    containment: dict[str, Any] | None = None

    @property
    def platform(self) -> str:
        """Digest of what the trusted set pins: Interlock's files, the config, the interpreter."""
        return digest({"interlock": self.interlock, "config": self.config, "python": self.python})

    @property
    def digest(self) -> str:
        """Digest of the whole measurement, policy bundle included (recorded and signed)."""
        return digest(self.to_json())

    def to_json(self) -> dict[str, Any]:
        return {
            "interlock": self.interlock,
            "config": self.config,
            "policy": self.policy,
            "python": self.python,
            "containment": self.containment,
        }

    def env(self, *, attested: bool) -> dict[str, Any]:
        """What policies read as ``context.env``."""
        return {
            "attested": attested,
            "measurement": self.digest,
            "platform": self.platform,
            "python": self.python,
            "containment": self.containment_in_force,
        }

    @property
    def containment_in_force(self) -> str:
        """The containment mode ``interlock exec`` enforces now, or ``"none"``."""
        c = self.containment
        if not c or not c.get("available"):
            return "none"
        return str(c.get("mode", "none"))

    def differences(self, other: Measurement) -> list[str]:
        """The platform components that differ from ``other`` (``policy`` is not one)."""
        return [
            name
            for name in ("interlock", "config", "python")
            if getattr(self, name) != getattr(other, name)
        ]


def package_root() -> Path:
    """Where Interlock's own files are installed."""
    return Path(__file__).resolve().parent.parent


def measure_files(root: Path) -> str:
    """SHA-256 over every file under ``root`` except ``__pycache__`` (see the module doc).

    Raises:
        OSError: a file could not be read (the caller denies: an unmeasurable node is untrusted).
    """
    lines: list[bytes] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            lines.append(rel.encode() + b"\x00" + _file_digest(path).encode())
    lines.sort()
    h = hashlib.sha256()
    for line in lines:
        h.update(line + b"\n")
    return h.hexdigest()


def _file_digest(path: Path) -> str:
    """SHA-256 of a regular file, read in chunks. Anything else (a FIFO that would block the
    measurement forever, a device, a socket) makes the node unmeasurable.

    Raises:
        OSError: not a regular file, or unreadable.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        h = hashlib.sha256()
        while chunk := os.read(fd, 1 << 20):
            h.update(chunk)
        return h.hexdigest()
    finally:
        os.close(fd)


def measure_config(text: str) -> str:
    """Digest of a parsed ``interlock.toml`` without ``[attestation] trusted``.

    Raises:
        ConfigError: the text is not TOML.
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"interlock.toml: {exc}") from exc
    att = doc.get("attestation")
    if isinstance(att, dict):
        rest = {k: v for k, v in att.items() if k != "trusted"}
        if rest:
            doc["attestation"] = rest
        else:  # a section holding only the trusted set measures like no section
            del doc["attestation"]
    return hashlib.sha256(canonical_bytes(doc)).hexdigest()


def _read_config(config_path: Path) -> str:
    return read_private_text(
        config_path, home=Path(os.path.abspath(config_path)).parent, max_bytes=MAX_CONFIG_BYTES
    )


def python_version() -> str:
    return f"{_platform.python_implementation()} {_platform.python_version()}"


def measure(
    config_path: Path,
    policy_digest: str | None,
    *,
    root: Path | None = None,
    containment: dict[str, Any] | None = None,
) -> Measurement:
    """Measure this node now. ``config_path`` is the home's ``interlock.toml``, read through the
    home's checks (:func:`interlock.trust.files.read_private_text`, its folder as the home).

    Raises:
        OSError: a measured file could not be read, or one of Interlock's files is not a
            regular file.
        UntrustedHomeFile: (ENVIRONMENT_UNTRUSTED) the configuration or the home cannot be
            trusted (a FIFO, a link, another user's, writable by others, not UTF-8, too large).
        ConfigError: ``config_path`` is not TOML.
    """
    return Measurement(
        interlock=measure_files(root or package_root()),
        config=measure_config(_read_config(config_path)),
        policy=policy_digest,
        python=python_version(),
        containment=containment,
    )


_TRUSTED_RE = re.compile(r"(?m)^trusted[ \t]*=[ \t]*\[[^\]]*\][ \t]*$")
_SECTION_RE = re.compile(r"(?m)^\[attestation\][ \t]*$")
_NEXT_TABLE_RE = re.compile(r"(?m)^\[")


def trust_current(config_path: Path) -> str:
    """Put this node's current platform digest into ``[attestation] trusted`` of
    ``config_path`` (added to the list; the section is created if missing). Returns it.
    The file is replaced atomically, keeping its mode; every other setting is checked to be
    unchanged.

    Raises:
        OSError: the file could not be read or written.
        UntrustedHomeFile: (ENVIRONMENT_UNTRUSTED) the file or its folder cannot be trusted
            (see :func:`measure`).
        ConfigError: the file is not TOML, or its ``trusted`` list is written in a form this
            cannot edit safely (then edit it by hand: the error says what to add).
    """
    original = _read_config(config_path)
    platform_digest = measure(config_path, None).platform
    try:
        doc = tomllib.loads(original)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{config_path}: {exc}") from exc
    att = doc.get("attestation", {})
    current = list(att.get("trusted", [])) if isinstance(att, dict) else []
    if platform_digest in current:
        return platform_digest
    line = "trusted = [" + ", ".join(f'"{d}"' for d in [*current, platform_digest]) + "]"
    by_hand = (
        f"{config_path}: cannot edit [attestation] trusted safely; add"
        f' "{platform_digest}" to it by hand'
    )
    section = _SECTION_RE.search(original)
    if "attestation" not in doc:
        text = original.rstrip("\n") + "\n\n[attestation]\n" + line + "\n"
    elif section is None:
        raise ConfigError(by_hand)
    else:
        nxt = _NEXT_TABLE_RE.search(original, section.end())
        end = nxt.start() if nxt else len(original)
        match = _TRUSTED_RE.search(original, section.end(), end)
        if match is None:
            text = original[: section.end()] + "\n" + line + original[section.end() :]
        else:
            text = original[: match.start()] + line + original[match.end() :]
    try:
        written = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(by_hand) from exc
    now_trusted = written.get("attestation", {}).get("trusted", [])
    if measure_config(text) != measure_config(original) or platform_digest not in now_trusted:
        raise ConfigError(by_hand)
    replace_text(config_path, text)
    return platform_digest
