"""C2SP tlog-cosignature (``cosignature/v1``, Ed25519): witness cosignatures on checkpoints.
Pure: no I/O, no clock (times are arguments).

    >>> from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    >>> from interlock.ledger.note import Checkpoint, NoteSigner, sign_checkpoint
    >>> log = NoteSigner("example.com/log", Ed25519PrivateKey.generate())
    >>> note = sign_checkpoint(Checkpoint(origin="example.com/log", size=0,
    ...     root_hash=bytes(32)), log)
    >>> witness = Cosigner("witness.example/w1", Ed25519PrivateKey.generate())
    >>> line = witness.cosign(note_text(note), timestamp=1679315147)
    >>> verifier = CosignatureVerifier.from_vkey(witness.vkey)
    >>> verifier.verify(add_signatures(note, [line]))
    1679315147

Format (https://c2sp.org/tlog-cosignature): a cosignature is a signed-note signature line
``— <name> base64(key ID || timestamp || signature)`` where

- key ID = ``SHA-256(name || "\\n" || 0x04 || 32-byte Ed25519 public key)[:4]`` (signature
  type 0x04, so a log's own 0x01 key and a witness key never share an ID);
- timestamp = the POSIX time of cosigning, a big-endian u64 (at most 2**63 - 1);
- signature = Ed25519 over ``"cosignature/v1\\ntime <timestamp>\\n" || checkpoint note text``
  (the whole text, extension lines included; no signature lines).

A cosignature states that, as of its time, the checkpoint is the largest consistent tree head
the cosigner has seen for that origin. :func:`verify_quorum` is the client's check: at least
``quorum`` distinct trusted cosigners vouch for the same note text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from interlock.errors import UsageError, VerificationError
from interlock.ledger.note import (
    MAX_NOTE_BYTES,
    Checkpoint,
    NoteVerifier,
    b64decode_strict,
    b64encode,
)

__all__ = [
    "COSIGNATURE_V1",
    "MAX_SIGNATURE_LINES",
    "CosignatureVerifier",
    "CosignedCheckpoint",
    "Cosigner",
    "QuorumNotMet",
    "add_signatures",
    "check_quorum",
    "cosignature_key_id",
    "note_text",
    "parse_signature_lines",
    "signed_message",
    "verify_quorum",
]

#: c2sp.org/tlog-cosignature §Ed25519 signed message: the header line (domain separation)
COSIGNATURE_V1 = "cosignature/v1"
#: c2sp.org/tlog-cosignature §Format: the key ID algorithm byte of Ed25519 cosignatures
_SIG_COSIGNATURE_V1 = 0x04
#: c2sp.org/tlog-cosignature: the timestamp MUST NOT exceed 2**63 - 1
_MAX_TIMESTAMP = (1 << 63) - 1
_EM_DASH_PREFIX = "\u2014 "
#: key ID (4) || timestamp (8) || Ed25519 signature (64)
_COSIG_LEN = 4 + 8 + 64
#: a response or note carries at most this many signature lines (c2sp.org/signed-note: at
#: least 16 must be accepted; golang.org/x/mod accepts 100)
MAX_SIGNATURE_LINES = 100


class QuorumNotMet(VerificationError):
    """Fewer than ``quorum`` trusted witnesses vouch for a tree head: it is not confirmed.

    A node MUST treat the head as not trusted; it cannot prove it is current, so the gate's
    answer is ``POLICY_STALE`` (DESIGN §3, I7). ``evidence`` names the count, the quorum and,
    where known, why each witness did not count.
    """

    reason_code = "POLICY_STALE"


def _name_problem(name: str) -> str | None:
    # c2sp.org/signed-note §Format: a key name is non-empty, with no Unicode space and no '+'.
    if not name:
        return "key name is empty"
    if "+" in name:
        return "key name contains '+'"
    if any(ch.isspace() or ch < " " for ch in name):
        return "key name contains a space or a control character"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        # a lone surrogate, as a lax decoder or an argument of invalid UTF-8 leaves behind
        return "key name is not valid UTF-8"
    return None


def cosignature_key_id(name: str, public_key: bytes) -> bytes:
    """The 4-byte key ID of an Ed25519 cosigner (c2sp.org/tlog-cosignature §Format):
    ``SHA-256(name || 0x0A || 0x04 || public key)[:4]``.

    Raises nothing.
    """
    msg = name.encode("utf-8") + b"\n" + bytes([_SIG_COSIGNATURE_V1]) + public_key
    return hashlib.sha256(msg).digest()[:4]


def signed_message(text: str, timestamp: int) -> bytes:
    """The bytes a ``cosignature/v1`` signature covers: the header line, the time line and the
    checkpoint note text (c2sp.org/tlog-cosignature §Ed25519 signed message).

    Raises:
        UsageError: if ``timestamp`` is outside ``0 .. 2**63 - 1`` or ``text`` is not a note
            text (empty, or not ending in a newline).
    """
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        raise UsageError("a cosignature timestamp is an integer")
    if not 0 <= timestamp <= _MAX_TIMESTAMP:
        raise UsageError("a cosignature timestamp is in 0 .. 2**63 - 1", timestamp=timestamp)
    if not text or not text.endswith("\n"):
        raise UsageError("a note text is non-empty and ends in a newline")
    return f"{COSIGNATURE_V1}\ntime {timestamp}\n{text}".encode()


def _vkey(name: str, key_id: bytes, public_key: bytes) -> str:
    # c2sp.org/signed-note §Verifier keys, with signature type 0x04 (tlog-cosignature §Format)
    return f"{name}+{key_id.hex()}+{b64encode(bytes([_SIG_COSIGNATURE_V1]) + public_key)}"


class Cosigner:
    """A witness's cosigning key: signs ``cosignature/v1`` lines under ``name``.

    Raises (constructor):
        UsageError: if ``name`` is not a valid note key name.
    """

    __slots__ = ("_key", "key_id", "name", "public_key", "vkey")

    def __init__(self, name: str, key: Ed25519PrivateKey) -> None:
        problem = _name_problem(name)
        if problem:
            raise UsageError(problem, name=name)
        self.name = name
        self._key = key
        self.public_key = key.public_key().public_bytes_raw()
        self.key_id = cosignature_key_id(name, self.public_key)
        #: the verifier key clients configure: ``name+hex(key ID)+base64(0x04 || public key)``
        self.vkey = _vkey(name, self.key_id, self.public_key)

    def cosign(self, text: str, *, timestamp: int) -> str:
        """One signature line (ending in a newline) cosigning the checkpoint note ``text``
        (its text only, as :func:`note_text` gives it) as of ``timestamp``.

        Raises:
            UsageError: if ``text`` is not a valid checkpoint text or the timestamp is out of
                range.
        """
        try:
            Checkpoint.from_body(text)
        except VerificationError as exc:
            raise UsageError(f"refusing to cosign: {exc.message}") from exc
        sig = self._key.sign(signed_message(text, timestamp))
        blob = self.key_id + timestamp.to_bytes(8, "big") + sig
        return f"{_EM_DASH_PREFIX}{self.name} {b64encode(blob)}\n"

    def __repr__(self) -> str:
        return f"Cosigner({self.vkey!r})"


class CosignatureVerifier:
    """Verifies ``cosignature/v1`` lines of one witness. Build it with :meth:`from_vkey`.

    Raises (constructor):
        UsageError: if the name is invalid or the key is not 32 bytes.
    """

    __slots__ = ("_public", "key_id", "name", "public_key", "vkey")

    def __init__(self, name: str, public_key: bytes) -> None:
        problem = _name_problem(name)
        if problem:
            raise UsageError(problem, name=name)
        if len(public_key) != 32:
            raise UsageError("an Ed25519 public key is 32 bytes", length=len(public_key))
        self.name = name
        self.public_key = bytes(public_key)
        self._public = Ed25519PublicKey.from_public_bytes(self.public_key)
        self.key_id = cosignature_key_id(name, self.public_key)
        self.vkey = _vkey(name, self.key_id, self.public_key)

    @classmethod
    def from_vkey(cls, vkey: str) -> CosignatureVerifier:
        """Parse a cosigner verifier key ``name+hex(keyid)+base64(0x04 || public key)``.

        Only type 0x04 is accepted: a log's 0x01 key names a different statement, and taking
        it here would let a plain note signature pass for a cosignature.

        Raises:
            VerificationError: if the string is malformed, the type is not 0x04, the key is not
                32 bytes, or the key ID does not match the name and key.
        """
        parts = vkey.split("+", 2)
        if len(parts) != 3:
            raise VerificationError("witness key must be name+keyid+key")
        name, id_hex, key_b64 = parts
        problem = _name_problem(name)
        if problem:
            raise VerificationError(f"witness key: {problem}")
        if len(id_hex) != 8 or any(c not in "0123456789abcdef" for c in id_hex):
            raise VerificationError("witness key ID must be 8 lowercase hex digits", name=name)
        raw = b64decode_strict(key_b64)
        if raw is None or len(raw) != 33 or raw[0] != _SIG_COSIGNATURE_V1:
            raise VerificationError(
                "witness key is not an Ed25519 cosignature/v1 (type 0x04) key", name=name
            )
        verifier = cls(name, raw[1:])
        if verifier.key_id.hex() != id_hex:
            raise VerificationError(
                "witness key ID does not match its name and key",
                name=name,
                key_id=id_hex,
                expected=verifier.key_id.hex(),
            )
        return verifier

    def matches(self, name: str, key_id: bytes) -> bool:
        """Whether a signature line with this name and key ID is this witness's. Never raises."""
        return name == self.name and key_id == self.key_id

    def verify_signature(self, text: str, blob: bytes) -> int:
        """Verify one decoded signature (``key ID || timestamp || signature``) over the note
        ``text``; return its timestamp.

        Raises:
            VerificationError: wrong length or key ID, timestamp above 2**63 - 1, or the
                signature does not verify.
        """
        if len(blob) != _COSIG_LEN or blob[:4] != self.key_id:
            raise VerificationError("not a cosignature/v1 from this witness", witness=self.name)
        timestamp = int.from_bytes(blob[4:12], "big")
        if timestamp > _MAX_TIMESTAMP:
            raise VerificationError("cosignature timestamp is above 2**63 - 1", witness=self.name)
        try:
            self._public.verify(blob[12:], signed_message(text, timestamp))
        except (InvalidSignature, UsageError) as exc:
            raise VerificationError(
                "cosignature does not verify", witness=self.name, timestamp=timestamp
            ) from exc
        return timestamp

    def verify(self, note: str) -> int:
        """Verify this witness's cosignature on a signed note; return its timestamp.

        Signature lines of other keys are ignored. Every line with this witness's name and key
        ID must verify (a failing one makes the note malformed, c2sp.org/signed-note).

        Raises:
            VerificationError: the note is malformed, has no cosignature from this witness, or
                one does not verify.
        """
        text, sigs = _split(note)
        newest: int | None = None
        for name, blob in sigs:
            if self.matches(name, blob[:4]):
                ts = self.verify_signature(text, blob)
                newest = ts if newest is None else max(newest, ts)
        if newest is None:
            raise VerificationError("note has no cosignature from this witness", witness=self.name)
        return newest

    def __repr__(self) -> str:
        return f"CosignatureVerifier({self.vkey!r})"


def _split(note: str) -> tuple[str, list[tuple[str, bytes]]]:
    """A signed note's text (with its final newline) and its ``(name, decoded blob)`` lines."""
    try:
        size = len(note.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise VerificationError("note is not valid UTF-8") from exc
    if size > MAX_NOTE_BYTES:
        raise VerificationError("note is too large", size=size)
    split = note.rfind("\n\n")
    if split < 0:
        raise VerificationError("note has no blank line before its signatures")
    text = note[: split + 1]
    if any(ch < " " and ch != "\n" for ch in text):
        raise VerificationError("note contains a control character")
    return text, parse_signature_lines(note[split + 2 :])


def note_text(note: str) -> str:
    """The text of a signed note: everything before the blank line that precedes its
    signatures, with its final newline.

    Raises:
        VerificationError: if the note is malformed.
    """
    return _split(note)[0]


def parse_signature_lines(block: str) -> list[tuple[str, bytes]]:
    """Parse signature lines (each ``— name base64`` and a newline) into ``(name, blob)``.

    Raises:
        VerificationError: empty, not newline-terminated, too many lines, or a malformed line.
    """
    if not block or not block.endswith("\n"):
        raise VerificationError("no signature lines, or they do not end in a newline")
    if any(ch < " " and ch != "\n" for ch in block):
        raise VerificationError("signature lines contain a control character")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURE_LINES:
        raise VerificationError("too many signature lines", count=len(lines))
    out: list[tuple[str, bytes]] = []
    for n, line in enumerate(lines):
        if not line.startswith(_EM_DASH_PREFIX):
            raise VerificationError("malformed signature line", line=n)
        name, sep, b64 = line[len(_EM_DASH_PREFIX) :].partition(" ")
        blob = b64decode_strict(b64) if sep and not _name_problem(name) else None
        if blob is None or len(blob) < 5:
            raise VerificationError("malformed signature line", line=n)
        out.append((name, blob))
    return out


def add_signatures(note: str, lines: Sequence[str]) -> str:
    """``note`` with signature ``lines`` appended, each kept once (C2SP: a cosigned checkpoint
    is the log's note with the witnesses' lines added).

    Raises:
        VerificationError: the note or a line is malformed, or the result is too large.
    """
    _split(note)
    have = set(note[note.rfind("\n\n") + 2 :].splitlines(keepends=True))
    extra: list[str] = []
    for line in lines:
        parse_signature_lines(line)
        if line.count("\n") != 1:
            raise VerificationError("one signature line at a time")
        if line not in have:
            have.add(line)
            extra.append(line)
    out = note + "".join(extra)
    _split(out)
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class CosignedCheckpoint:
    """A log checkpoint that ``quorum`` or more trusted witnesses cosigned.

    ``note`` is the log's signed note with the witnesses' cosignature lines; ``cosigners``
    maps each witness name that vouched for it to its cosignature's timestamp.
    """

    checkpoint: Checkpoint
    note: str
    cosigners: dict[str, int]
    quorum: int


def verify_quorum(
    note: str,
    log: NoteVerifier,
    witnesses: Sequence[CosignatureVerifier],
    quorum: int,
    *,
    now: int | None = None,
    max_skew: int = 300,
    max_age: int | None = None,
) -> CosignedCheckpoint:
    """Check that the log signed ``note`` and that at least ``quorum`` distinct ``witnesses``
    cosigned it (c2sp.org/tlog-cosignature; a client's split-view defence).

    ``now`` (POSIX seconds) enables the time checks: a cosignature more than ``max_skew``
    seconds in the future does not count, nor (with ``max_age``) one older than ``max_age``.

    Raises:
        UsageError: ``quorum`` below 1 (a quorum of 0 would trust any head: refused, not
            treated as "no check") or above the number of witnesses, or two witnesses share a
            name or a public key.
        VerificationError: the note is malformed or the log's signature fails
            (:func:`~interlock.ledger.note.open_checkpoint`), or a line from a trusted witness
            does not verify.
        QuorumNotMet: fewer than ``quorum`` witnesses vouch for the note.
    """
    from interlock.ledger.note import open_checkpoint

    check_quorum(quorum, witnesses)
    cp = open_checkpoint(note, log)
    text, sigs = _split(note)
    cosigners: dict[str, int] = {}
    skipped: dict[str, str] = {}
    for w in witnesses:
        for name, blob in sigs:
            if not w.matches(name, blob[:4]):
                continue
            ts = w.verify_signature(text, blob)
            if now is not None and ts > now + max_skew:
                skipped[w.name] = f"timestamp {ts} is in the future"
                continue
            if now is not None and max_age is not None and ts < now - max_age:
                skipped[w.name] = f"timestamp {ts} is older than {max_age}s"
                continue
            cosigners[w.name] = max(ts, cosigners.get(w.name, ts))
    if len(cosigners) < quorum:
        raise QuorumNotMet(
            "too few witnesses cosigned the checkpoint",
            origin=cp.origin,
            size=cp.size,
            cosigned=len(cosigners),
            quorum=quorum,
            **({"skipped": skipped} if skipped else {}),
        )
    return CosignedCheckpoint(checkpoint=cp, note=note, cosigners=cosigners, quorum=quorum)


def check_quorum(quorum: int, witnesses: Sequence[CosignatureVerifier]) -> None:
    """Check a quorum setting against its witnesses (see :func:`verify_quorum`).

    Raises:
        UsageError: quorum below 1 or above the number of witnesses; a shared name or key.
    """
    if isinstance(quorum, bool) or not isinstance(quorum, int) or quorum < 1:
        # A quorum of zero would accept any head, witnessed or not: never a default.
        raise UsageError("a witness quorum is at least 1", quorum=quorum)
    if quorum > len(witnesses):
        raise UsageError(
            "the witness quorum is larger than the number of witnesses",
            quorum=quorum,
            witnesses=len(witnesses),
        )
    names = [w.name for w in witnesses]
    if len(set(names)) != len(names):
        raise UsageError("two witnesses share a name: each counts once", names=sorted(names))
    # c2sp.org/tlog-cosignature: the Ed25519 message does not commit to the cosigner's name,
    # so one key under two names would let one witness's signature count twice.
    if len({w.public_key for w in witnesses}) != len(witnesses):
        raise UsageError("two witnesses share a public key: they are one witness")
