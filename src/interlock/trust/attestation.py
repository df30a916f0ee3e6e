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
* ``python`` — the interpreter, e.g. ``CPython 3.11.7``.

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
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interlock.core.canonical import canonical_bytes, digest
from interlock.errors import ConfigError

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
        }

    def env(self, *, attested: bool) -> dict[str, Any]:
        """What policies read as ``context.env``."""
        return {
            "attested": attested,
            "measurement": self.digest,
            "platform": self.platform,
            "python": self.python,
        }

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
            lines.append(
                rel.encode() + b"\x00" + hashlib.sha256(path.read_bytes()).hexdigest().encode()
            )
    lines.sort()
    h = hashlib.sha256()
    for line in lines:
        h.update(line + b"\n")
    return h.hexdigest()


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


def python_version() -> str:
    return f"{_platform.python_implementation()} {_platform.python_version()}"


def measure(
    config_path: Path, policy_digest: str | None, *, root: Path | None = None
) -> Measurement:
    """Measure this node now.

    Raises:
        OSError: a measured file could not be read.
        ConfigError: ``config_path`` is not TOML.
    """
    return Measurement(
        interlock=measure_files(root or package_root()),
        config=measure_config(config_path.read_text(encoding="utf-8")),
        policy=policy_digest,
        python=python_version(),
    )


_TRUSTED_RE = re.compile(r"(?m)^trusted\s*=\s*\[[^\]]*\]\s*$")


def trust_current(config_path: Path) -> str:
    """Put this node's current platform digest into ``[attestation] trusted`` of
    ``config_path`` (added to the list; the section is created if missing). Returns it.

    Raises:
        OSError: the file could not be read or written.
        ConfigError: the file is not TOML or its ``trusted`` list cannot be edited.
    """
    text = config_path.read_text(encoding="utf-8")
    platform_digest = measure(config_path, None).platform
    doc = tomllib.loads(text)
    current = list(doc.get("attestation", {}).get("trusted", []))
    if platform_digest in current:
        return platform_digest
    current.append(platform_digest)
    line = "trusted = [" + ", ".join(f'"{d}"' for d in current) + "]"
    if "attestation" not in doc:
        text = text.rstrip("\n") + "\n\n[attestation]\n" + line + "\n"
    else:
        section = text.index("[attestation]")
        match = _TRUSTED_RE.search(text, section)
        if match is None:
            end = section + len("[attestation]")
            text = text[:end] + "\n" + line + text[end:]
        else:
            text = text[: match.start()] + line + text[match.end() :]
    if measure_config(text) != measure_config(config_path.read_text(encoding="utf-8")):
        raise ConfigError("could not edit [attestation] trusted without changing other settings")
    tmp = config_path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, config_path)
    return platform_digest
