"""The witness: verify a log's checkpoint, check it extends the last one cosigned, cosign.

    >>> # init_witness(Path("w"), name="witness.example/w1", logs={"example.com/log": vkey})
    >>> # with Witness.open(Path("w")) as w:
    >>> #     line = w.add_checkpoint(body, now=1700000000)

https://c2sp.org/tlog-witness §add-checkpoint, in the order the spec gives its answers:

- 400 :class:`BadRequest`: the body is malformed, or the old size exceeds the checkpoint's;
- 404 :class:`UnknownLog`: no log with this origin is configured;
- 403 :class:`Forbidden`: no valid signature from the log's key (a failing one from it
  included);
- 409 :class:`Conflict`: the old size is not the size of the latest checkpoint cosigned (the
  answer carries that size);
- 422 :class:`Unprocessable`: the consistency proof does not verify, is not empty from size 0,
  or the same size comes with another root (a split view).

The witness never goes backwards: the size it holds only grows, and only along verified
consistency proofs. A validly signed checkpoint it refuses for being smaller, for another root
at the same size, or for a failed proof is kept as :class:`~interlock.witness.state.Evidence`.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from interlock.errors import ConfigError, Error, VerificationError
from interlock.ledger.cosign import Cosigner, note_text
from interlock.ledger.merkle import EMPTY_ROOT, verify_consistency
from interlock.ledger.note import Checkpoint, NoteVerifier, open_checkpoint
from interlock.trust import keys
from interlock.trust.files import check_private_file, read_private_text
from interlock.witness.protocol import parse_add_checkpoint
from interlock.witness.state import Evidence, Latest, WitnessState

__all__ = [
    "CONFIG_NAME",
    "KEY_NAME",
    "STATE_NAME",
    "BadRequest",
    "Conflict",
    "Forbidden",
    "UnknownLog",
    "Unprocessable",
    "Witness",
    "WitnessConfig",
    "WitnessRefused",
    "init_witness",
]

CONFIG_NAME = "witness.toml"
KEY_NAME = "witness.key"
STATE_NAME = "witness.db"
_MAX_CONFIG_BYTES = 256 * 1024
_NAME_RE = re.compile(r"^[A-Za-z0-9._:/-]{1,255}\Z")


class WitnessRefused(Error):
    """The witness refused a checkpoint; ``status`` is the tlog-witness HTTP status."""

    status = 400


class BadRequest(WitnessRefused):
    status = 400


class Forbidden(WitnessRefused):
    status = 403


class UnknownLog(WitnessRefused):
    status = 404


class Conflict(WitnessRefused):
    """The old size is not the witness's; ``size`` is the size it holds."""

    status = 409

    def __init__(self, message: str, *, size: int, **evidence: object) -> None:
        super().__init__(message, size=size, **evidence)
        self.size = size


class Unprocessable(WitnessRefused):
    status = 422


@dataclass(frozen=True, slots=True, kw_only=True)
class WitnessConfig:
    """``witness.toml``: the witness's key name and, per log origin, the log's verifier key."""

    name: str
    logs: Mapping[str, NoteVerifier]

    @classmethod
    def from_toml(cls, text: str, *, source: str = CONFIG_NAME) -> WitnessConfig:
        """Parse and validate ``witness.toml``.

        Raises:
            ConfigError: syntax, an unknown key, a bad name, or a log key that does not parse
                or whose name is not its origin.
        """
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: {exc}") from exc
        extra = set(doc) - {"name", "logs"}
        if extra:
            raise ConfigError(f"{source}: unknown key(s) {sorted(extra)}")
        name = doc.get("name")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ConfigError(f"{source}: name must be a key name like witness.example/w1")
        logs_doc = doc.get("logs", {})
        if not isinstance(logs_doc, dict):
            raise ConfigError(f"{source}: [logs] must map each origin to its verifier key")
        logs: dict[str, NoteVerifier] = {}
        for origin, vkey in logs_doc.items():
            if not isinstance(vkey, str):
                raise ConfigError(f"{source}: [logs] {origin!r} must be a verifier key string")
            logs[origin] = _log_verifier(origin, vkey, source)
        return cls(name=name, logs=logs)

    def to_toml(self) -> str:
        """The file :meth:`from_toml` reads back. Raises nothing."""
        lines = [
            "# Interlock witness (c2sp.org/tlog-witness).",
            "# the name in this witness's cosignature lines",
            f"name = {json.dumps(self.name)}",
            "",
            "[logs]",
            "# origin = the log's verifier key (interlock ledger vkey); only these are cosigned",
        ]
        lines += [f"{json.dumps(o)} = {json.dumps(v.vkey)}" for o, v in sorted(self.logs.items())]
        return "\n".join(lines) + "\n"


def _log_verifier(origin: str, vkey: str, source: str) -> NoteVerifier:
    try:
        verifier = NoteVerifier.from_vkey(vkey)
    except VerificationError as exc:
        raise ConfigError(f"{source}: log {origin!r}: {exc.diagnostics()}") from exc
    if verifier.name != origin:
        # c2sp.org/tlog-checkpoint: the log's key name is its origin (open_checkpoint checks it)
        raise ConfigError(f"{source}: log {origin!r}: its key is named {verifier.name!r}")
    return verifier


def init_witness(path: Path, *, name: str, logs: Mapping[str, str]) -> WitnessConfig:
    """Create a witness folder (mode 0700): a new Ed25519 key (``witness.key``, mode 0600),
    ``witness.toml`` and an empty state file.

    Raises:
        ConfigError: the folder exists and is not empty, or the name or a log key is invalid.
        KeyFileError: the key could not be written.
    """
    if not _NAME_RE.match(name):
        raise ConfigError("a witness name is like witness.example/w1 (letters, digits, . _ - / :)")
    built = WitnessConfig(
        name=name, logs={o: _log_verifier(o, v, "--log") for o, v in logs.items()}
    )
    config = WitnessConfig.from_toml(built.to_toml())  # what is written reads back the same
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError(f"{path} exists and is not an empty folder: refusing to overwrite it")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    keys.create_key(path / KEY_NAME)
    fd = os.open(path / CONFIG_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(config.to_toml())
        fh.flush()
        os.fsync(fh.fileno())
    WitnessState(path / STATE_NAME, create=True).close()
    return config


class Witness:
    """A witness over its folder: its config, its cosigning key and its state.

    Build it with :meth:`open` (a folder made by :func:`init_witness`), or directly with a
    config, a key and a state (tests).
    """

    def __init__(self, config: WitnessConfig, key: Ed25519PrivateKey, state: WitnessState) -> None:
        self.config = config
        self.cosigner = Cosigner(config.name, key)
        self.state = state

    @classmethod
    def open(cls, path: Path) -> Witness:
        """Open the witness in ``path``.

        Raises:
            ConfigError: ``witness.toml`` is missing, unsafe or invalid, or the state file is
                missing or unsafe (another user's, or accessible by group or others).
            KeyFileError: the key is missing, unsafe (readable by others) or not Ed25519.
            StateError: the state file cannot be opened.
        """
        try:
            text = read_private_text(path / CONFIG_NAME, home=path, max_bytes=_MAX_CONFIG_BYTES)
        except OSError as exc:
            raise ConfigError(
                f"cannot read {path / CONFIG_NAME}: {exc.strerror or exc}"
                " (make one with `interlock witness init`)"
            ) from exc
        except Error as exc:
            raise ConfigError(exc.diagnostics()) from exc
        config = WitnessConfig.from_toml(text, source=str(path / CONFIG_NAME))
        key = keys.load_private_key(path / KEY_NAME, home=path)
        try:
            # the state decides what gets cosigned: this user's, not accessible by others
            check_private_file(path / STATE_NAME, home=path, secret=True)
        except (OSError, Error) as exc:
            raise ConfigError(
                f"the witness state {path / STATE_NAME} cannot be trusted: {exc}"
            ) from exc
        return cls(config, key, WitnessState(path / STATE_NAME))

    @property
    def vkey(self) -> str:
        """This witness's verifier key (``name+keyid+base64(0x04 || key)``)."""
        return self.cosigner.vkey

    def add_checkpoint(self, body: bytes, *, now: int) -> str:
        """Handle one ``add-checkpoint`` request body; return the cosignature line.

        ``now``: the cosignature's timestamp (POSIX seconds).

        Raises:
            WitnessRefused: one of its subclasses, with the tlog-witness status (see the
                module docstring).
            StateError: the state could not be read or written: nothing was cosigned.
        """
        try:
            old, proof, note = parse_add_checkpoint(body)
            cp = Checkpoint.from_body(note_text(note))
        except VerificationError as exc:
            raise BadRequest(exc.message) from exc
        log = self.config.logs.get(cp.origin)
        if log is None:
            raise UnknownLog("unknown log", origin=cp.origin)
        try:
            open_checkpoint(note, log)
        except VerificationError as exc:
            raise Forbidden("the checkpoint is not validly signed by the log") from exc
        with self.state.transaction() as tx:
            held = tx.latest(cp.origin)
            refusal, evidence = self._judge(held, old, proof, cp, note, now)
            if evidence is not None:
                tx.add_evidence(evidence)
            if refusal is None:
                line = self.cosigner.cosign(note_text(note), timestamp=now)
                tx.set_latest(
                    Latest(
                        origin=cp.origin,
                        size=cp.size,
                        root=cp.root_hash,
                        note=note + line,
                        cosigned=now,
                    )
                )
        # raised after the transaction commits, so the evidence of a refusal is kept
        if refusal is not None:
            raise refusal
        return line

    @staticmethod
    def _judge(
        held: Latest | None,
        old: int,
        proof: list[bytes],
        cp: Checkpoint,
        note: str,
        now: int,
    ) -> tuple[WitnessRefused | None, Evidence | None]:
        """``(None, None)`` to cosign; else the refusal and, for a validly signed checkpoint
        that shows the log misbehaving, the evidence to keep."""
        held_size = held.size if held else 0
        held_root = held.root if held else EMPTY_ROOT

        def evidence(kind: str) -> Evidence:
            return Evidence(
                origin=cp.origin,
                kind=kind,
                size=cp.size,
                root=cp.root_hash,
                note=note,
                held_size=held_size,
                held_root=held_root,
                held_note=held.note if held else "",
                received=now,
            )

        # c2sp.org/tlog-witness: old > checkpoint size is 400, then an old size that is not
        # the witness's is 409 (with its size). A checkpoint below the size held is refused
        # either way, and kept: the witness never goes back.
        smaller = evidence("smaller") if cp.size < held_size else None
        if old > cp.size:
            bad = BadRequest("old size is larger than the checkpoint's", old=old, size=cp.size)
            return bad, smaller
        if old != held_size:
            return Conflict("old size is not the witness's", size=held_size), smaller
        if held is not None and cp.size == held_size and cp.root_hash != held_root:
            # the same size with another root, both signed by the log: a split view
            return Unprocessable("another root for the same size", size=cp.size), evidence("fork")
        try:
            verify_consistency(old, cp.size, held_root, cp.root_hash, proof)
        except VerificationError as exc:
            refused = Unprocessable(f"consistency: {exc.message}", old=old, size=cp.size)
            # from nothing (a non-empty proof from 0, a size-0 checkpoint with another root)
            # shows nothing about the log; from a held checkpoint it may be a fork
            return refused, (evidence("inconsistent") if held is not None and old else None)
        return None, None

    def close(self) -> None:
        """Close the state file. Never raises."""
        self.state.close()

    def __enter__(self) -> Witness:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
