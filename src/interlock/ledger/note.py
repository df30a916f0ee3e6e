"""C2SP signed notes (Ed25519) and tlog checkpoints. Pure: no I/O.

    >>> from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    >>> signer = NoteSigner("example.com/log", Ed25519PrivateKey.generate())
    >>> cp = Checkpoint(origin="example.com/log", size=0, root_hash=bytes(32))
    >>> note = sign_checkpoint(cp, signer)
    >>> open_checkpoint(note, NoteVerifier.from_vkey(signer.vkey)) == cp
    True

Formats: https://c2sp.org/signed-note (``text || "\\n" || "— name base64(keyid || sig)\\n"...``)
and https://c2sp.org/tlog-checkpoint (``origin\\nsize\\nbase64(root)\\n[extension lines]``).
Only signature type 0x01 (plain Ed25519 over the note text) is produced or verified.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from interlock.errors import UsageError, VerificationError

__all__ = [
    "MAX_NOTE_BYTES",
    "MAX_SIGNATURES",
    "Checkpoint",
    "NoteSigner",
    "NoteVerifier",
    "open_checkpoint",
    "sign_checkpoint",
]

#: c2sp.org/signed-note: verifiers SHOULD bound a note's size; 1 MiB is far above any checkpoint
MAX_NOTE_BYTES = 1 << 20
#: c2sp.org/signed-note: verifiers MUST accept at least 16 signatures (golang.org/x/mod's
#: reference implementation accepts 100)
MAX_SIGNATURES = 100

#: c2sp.org/signed-note §Signature types: 0x01 is Ed25519
_SIG_ED25519 = 0x01
_EM_DASH_PREFIX = "\u2014 "
_HEX8 = re.compile(r"[0-9a-f]{8}")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_MAX_TREE_SIZE = (1 << 64) - 1


def b64encode(data: bytes) -> str:
    """Standard base64 (RFC 4648 §4), padded."""
    return base64.b64encode(data).decode("ascii")


def b64decode_strict(text: str) -> bytes | None:
    """Standard base64 (RFC 4648 §4), canonical only: padded, no stray bits, no whitespace."""
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return None
    # A non-canonical encoding (non-zero padding bits) decodes but does not re-encode the same.
    if b64encode(data) != text:
        return None
    return data


def _has_control(text: str, *, allow_newline: bool) -> bool:
    # c2sp.org/signed-note §Format: no ASCII control characters other than newline.
    return any(ch < " " and not (allow_newline and ch == "\n") for ch in text)


def _is_utf8(text: str) -> bool:
    """Whether ``text`` encodes as UTF-8 (no lone surrogate, as a lax decoder of bytes or a
    command-line argument of invalid UTF-8 leaves behind). Never raises."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _name_problem(name: str) -> str | None:
    # c2sp.org/signed-note §Format: key names are non-empty, with no Unicode spaces and no '+'.
    if not name:
        return "key name is empty"
    if not _is_utf8(name):
        return "key name is not valid UTF-8"
    if "+" in name:
        return "key name contains '+'"
    if any(ch.isspace() for ch in name):
        return "key name contains a space"
    if _has_control(name, allow_newline=False):
        return "key name contains a control character"
    return None


def _key_id(name: str, public: bytes) -> bytes:
    # c2sp.org/signed-note §Ed25519 signatures:
    # key ID = SHA-256(key name || 0x0A || 0x01 || 32-byte Ed25519 public key)[:4]
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([_SIG_ED25519]) + public).digest()[
        :4
    ]


def _public_raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes_raw()


class NoteSigner:
    """Signs note texts with an Ed25519 key under a key ``name`` (C2SP signature type 0x01).

    Raises (constructor):
        UsageError: if ``name`` is empty or contains a space, a '+' or a control character.
    """

    __slots__ = ("_key", "key_id", "name", "public_key", "vkey")

    def __init__(self, name: str, key: Ed25519PrivateKey) -> None:
        problem = _name_problem(name)
        if problem:
            raise UsageError(problem, name=name)
        self.name = name
        self._key = key
        self.public_key = _public_raw(key.public_key())
        #: the 4-byte key ID (c2sp.org/signed-note §Ed25519 signatures)
        self.key_id = _key_id(name, self.public_key)
        #: the verifier key: name+hex(key ID)+base64(0x01 || public key)
        self.vkey = (
            f"{name}+{self.key_id.hex()}+{b64encode(bytes([_SIG_ED25519]) + self.public_key)}"
        )

    def sign(self, text: str) -> str:
        """The signed note: ``text``, a blank line, and this key's signature line.

        Raises:
            UsageError: if ``text`` is empty, does not end in a newline, contains a control
                character other than newline, is not encodable as UTF-8, or is too large.
        """
        if not text or not text.endswith("\n"):
            raise UsageError("note text must be non-empty and end in a newline")
        if _has_control(text, allow_newline=True):
            raise UsageError("note text contains a control character")
        try:
            msg = text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise UsageError("note text is not valid Unicode") from exc
        if len(msg) > MAX_NOTE_BYTES - 1024:
            raise UsageError("note text is too large", size=len(msg))
        sig = self._key.sign(msg)
        return f"{text}\n{_EM_DASH_PREFIX}{self.name} {b64encode(self.key_id + sig)}\n"

    def __repr__(self) -> str:
        return f"NoteSigner({self.vkey!r})"


class NoteVerifier:
    """Verifies signed notes against one Ed25519 verifier key. Build it with :meth:`from_vkey`."""

    __slots__ = ("_public", "key_id", "name", "public_key", "vkey")

    def __init__(self, name: str, public_key: bytes) -> None:
        """A verifier for ``name`` and a raw 32-byte Ed25519 public key.

        Raises:
            UsageError: if the name is invalid or the key is not 32 bytes.
        """
        problem = _name_problem(name)
        if problem:
            raise UsageError(problem, name=name)
        if len(public_key) != 32:
            raise UsageError("an Ed25519 public key is 32 bytes", length=len(public_key))
        self.name = name
        self.public_key = bytes(public_key)
        self._public = Ed25519PublicKey.from_public_bytes(self.public_key)
        self.key_id = _key_id(name, self.public_key)
        self.vkey = (
            f"{name}+{self.key_id.hex()}+{b64encode(bytes([_SIG_ED25519]) + self.public_key)}"
        )

    @classmethod
    def from_vkey(cls, vkey: str) -> NoteVerifier:
        """Parse a verifier key ``name+hex(keyid)+base64(0x01 || pubkey)``.

        Raises:
            VerificationError: if the string is malformed, the key type is not Ed25519 (0x01),
                the key is not 32 bytes, or the key ID does not match the name and key.
        """
        # c2sp.org/signed-note §Verifier keys. The name has no '+', so the first two '+' are
        # the separators (base64 may itself contain '+').
        parts = vkey.split("+", 2)
        if len(parts) != 3:
            raise VerificationError("verifier key must be name+keyid+key")
        name, id_hex, key_b64 = parts
        problem = _name_problem(name)
        if problem:
            raise VerificationError(f"verifier key: {problem}")
        if not _HEX8.fullmatch(id_hex):
            raise VerificationError("verifier key ID must be 8 lowercase hex digits", name=name)
        raw = b64decode_strict(key_b64)
        if raw is None:
            raise VerificationError("verifier key material is not base64", name=name)
        if len(raw) != 33 or raw[0] != _SIG_ED25519:
            raise VerificationError(
                "verifier key is not an Ed25519 (type 0x01) key", name=name, length=len(raw)
            )
        verifier = cls(name, raw[1:])
        if verifier.key_id.hex() != id_hex:
            # c2sp.org/signed-note §Ed25519 signatures: the ID is derived from name and key.
            raise VerificationError(
                "verifier key ID does not match its name and key",
                name=name,
                key_id=id_hex,
                expected=verifier.key_id.hex(),
            )
        return verifier

    def verify(self, note: str) -> str:
        """Verify ``note`` and return its text (including the final newline).

        Signatures from other keys are ignored. At least one signature line from this key must
        verify, and every one from this key must verify.

        Raises:
            VerificationError: if the note is malformed (no blank line before the signatures,
                control characters, invalid UTF-8, a malformed or unterminated signature line,
                too large or too many signatures), has no signature from this key, or a
                signature from this key does not verify.
        """
        text, sigs = _split_note(note)
        found = False
        for name, key_id, sig in sigs:
            # c2sp.org/signed-note §Signatures: a key is identified by both name and key ID;
            # signatures from unknown keys are ignored.
            if name != self.name or key_id != self.key_id:
                continue
            try:
                self._public.verify(sig, text.encode("utf-8"))
            except InvalidSignature as exc:
                # A failing signature from a known key rejects the whole note (SHOULD).
                raise VerificationError(
                    "note signature does not verify", key=f"{self.name}+{self.key_id.hex()}"
                ) from exc
            found = True
        if not found:
            raise VerificationError(
                "note has no signature from the expected key",
                key=f"{self.name}+{self.key_id.hex()}",
            )
        return text

    def __repr__(self) -> str:
        return f"NoteVerifier({self.vkey!r})"


def _split_note(note: str) -> tuple[str, list[tuple[str, bytes, bytes]]]:
    """Split a signed note into its text and ``(name, key_id, signature)`` tuples."""
    try:
        size = len(note.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise VerificationError("note is not valid UTF-8") from exc
    if size > MAX_NOTE_BYTES:
        raise VerificationError("note is too large", size=size)
    if _has_control(note, allow_newline=True):
        raise VerificationError("note contains a control character")
    # c2sp.org/signed-note §Format: the text is separated from the signatures by the last
    # empty line; the text keeps its final newline.
    split = note.rfind("\n\n")
    if split < 0:
        raise VerificationError("note has no blank line before its signatures")
    text = note[: split + 1]
    block = note[split + 2 :]
    if not block or not block.endswith("\n"):
        raise VerificationError("note has no signature lines, or they do not end in a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise VerificationError("note has too many signatures", count=len(lines))
    sigs: list[tuple[str, bytes, bytes]] = []
    for n, line in enumerate(lines):
        # "— <key name> base64(32-bit key ID || signature)"
        if not line.startswith(_EM_DASH_PREFIX):
            raise VerificationError("malformed signature line", line=n)
        name, sep, b64 = line[len(_EM_DASH_PREFIX) :].partition(" ")
        if not sep or _name_problem(name):
            raise VerificationError("malformed signature line: bad key name", line=n)
        blob = b64decode_strict(b64)
        if blob is None or len(blob) < 5:
            raise VerificationError("malformed signature line: bad signature encoding", line=n)
        sigs.append((name, blob[:4], blob[4:]))
    return text, sigs


def _checkpoint_problem(
    origin: str, size: int, root_hash: bytes, extensions: tuple[str, ...]
) -> str | None:
    # c2sp.org/tlog-checkpoint §Note text.
    if not isinstance(origin, str) or not origin:
        return "checkpoint origin is empty"
    if _has_control(origin, allow_newline=False):
        return "checkpoint origin contains a control character or newline"
    if not _is_utf8(origin):
        return "checkpoint origin is not valid UTF-8"
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= _MAX_TREE_SIZE:
        return "checkpoint size is not an unsigned 64-bit integer"
    if not isinstance(root_hash, bytes) or len(root_hash) != 32:
        return "checkpoint root hash is not 32 bytes"
    for ext in extensions:
        if not isinstance(ext, str) or not ext:
            return "checkpoint extension lines must be non-empty"
        if _has_control(ext, allow_newline=False):
            return "checkpoint extension line contains a control character or newline"
        if not _is_utf8(ext):
            return "checkpoint extension line is not valid UTF-8"
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    """A tlog checkpoint body (c2sp.org/tlog-checkpoint): origin, tree size, root hash.

    Raises (constructor):
        UsageError: if a field is invalid (empty origin, negative size, root not 32 bytes,
            empty extension line, control characters).
    """

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problem = _checkpoint_problem(self.origin, self.size, self.root_hash, self.extensions)
        if problem:
            raise UsageError(problem)

    def body(self) -> str:
        """The note text: ``origin\\nsize\\nbase64(root)\\n`` then each extension line.

        Raises nothing.
        """
        head = f"{self.origin}\n{self.size}\n{b64encode(self.root_hash)}\n"
        return head + "".join(f"{ext}\n" for ext in self.extensions)

    @classmethod
    def from_body(cls, text: str) -> Checkpoint:
        """Strictly parse a checkpoint note text.

        Raises:
            VerificationError: if the text does not end in a newline, has fewer than three
                lines, an empty line, a size that is not canonical decimal, or a root that is
                not canonical base64 of 32 bytes.
        """
        if not text.endswith("\n"):
            raise VerificationError("checkpoint text does not end in a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise VerificationError("checkpoint text has fewer than three lines")
        origin, size_text, root_text, *extensions = lines
        # Size: ASCII decimal, no leading zeros (c2sp.org/tlog-checkpoint §Note text, 2).
        if not _DECIMAL.fullmatch(size_text) or len(size_text) > 20:
            raise VerificationError("checkpoint size is not a canonical decimal", size=size_text)
        root = b64decode_strict(root_text)
        if root is None:
            raise VerificationError("checkpoint root hash is not canonical base64")
        problem = _checkpoint_problem(origin, int(size_text), root, tuple(extensions))
        if problem:
            raise VerificationError(problem)
        return cls(origin=origin, size=int(size_text), root_hash=root, extensions=tuple(extensions))


def sign_checkpoint(cp: Checkpoint, signer: NoteSigner) -> str:
    """The signed checkpoint note for ``cp``.

    The key name must equal the origin (c2sp.org/tlog-checkpoint §Signatures: SHOULD match;
    :func:`open_checkpoint` requires it).

    Raises:
        UsageError: if ``cp.origin`` differs from ``signer.name``.
    """
    if cp.origin != signer.name:
        raise UsageError("checkpoint origin must equal the signing key's name", origin=cp.origin)
    return signer.sign(cp.body())


def open_checkpoint(note: str, verifier: NoteVerifier) -> Checkpoint:
    """Verify a signed checkpoint note and parse it.

    Raises:
        VerificationError: if the signature does not verify (see :meth:`NoteVerifier.verify`),
            the text is not a valid checkpoint, or its origin is not the verifier's key name.
    """
    cp = Checkpoint.from_body(verifier.verify(note))
    if cp.origin != verifier.name:
        raise VerificationError(
            "checkpoint origin is not the log's name", origin=cp.origin, expected=verifier.name
        )
    return cp
