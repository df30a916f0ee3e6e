"""C2SP tlog-proof@v1: one text file that proves an entry is in the log. Pure: no I/O.

    >>> note = "example.com/log\\n1\\n<root>\\n\\n— example.com/log <signature>\\n"
    >>> b = ProofBundle(index=0, extra=b"entry", inclusion=[], checkpoint_note=note)
    >>> print(format_proof(b), end="")
    c2sp.org/tlog-proof@v1
    extra ZW50cnk=
    index 0
    <BLANKLINE>
    example.com/log
    1
    <root>
    <BLANKLINE>
    — example.com/log <signature>
    >>> parse_proof(format_proof(b)) == b
    True

Format (https://c2sp.org/tlog-proof): the header line, an optional ``extra <base64>`` line, an
``index <N>`` line, one base64 hash per line (the RFC 6962 §2.1.1 audit path, leaf's sibling
first), an empty line, then the signed checkpoint verbatim. Interlock puts the entry's bytes
in ``extra`` so one file is a complete evidence bundle; ``extra`` is not authenticated by
itself — :func:`interlock.ledger.verify.verify_proof_bundle` binds it through its leaf hash.

Parsing checks only the format; it does not verify anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from interlock.errors import VerificationError
from interlock.ledger.merkle import HASH_SIZE
from interlock.ledger.note import b64decode_strict, b64encode

__all__ = ["HEADER", "MAX_PROOF_BYTES", "ProofBundle", "format_proof", "parse_proof"]

#: c2sp.org/tlog-proof §Format: the first line
HEADER = "c2sp.org/tlog-proof@v1"
#: bound on a proof's size: a 64 KiB entry in base64, 64 hashes and a checkpoint fit easily
MAX_PROOF_BYTES = 1 << 20
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_MAX_INDEX = (1 << 64) - 1
_MAX_PATH = 64  # a tree of at most 2**64 leaves has at most 64 levels


@dataclass(frozen=True, slots=True, kw_only=True)
class ProofBundle:
    """An entry index, optional extra data, its inclusion proof and the checkpoint it proves to."""

    index: int
    extra: bytes | None
    inclusion: list[bytes] = field(default_factory=list)
    checkpoint_note: str


def format_proof(bundle: ProofBundle) -> str:
    """The tlog-proof@v1 text of ``bundle``.

    Raises:
        VerificationError: if the bundle cannot be represented: negative index, a hash that is
            not 32 bytes, or a checkpoint note that is empty, starts with an empty line, does
            not end in a newline or contains a carriage return.
    """
    if bundle.index < 0 or bundle.index > _MAX_INDEX:
        raise VerificationError("proof index out of range", index=bundle.index)
    note = bundle.checkpoint_note
    if not note.endswith("\n") or note.startswith("\n") or "\r" in note:
        raise VerificationError(
            "checkpoint note must be non-empty, end in a newline and have no carriage return"
        )
    lines = [HEADER]
    if bundle.extra is not None:
        lines.append(f"extra {b64encode(bundle.extra)}")
    lines.append(f"index {bundle.index}")
    for i, h in enumerate(bundle.inclusion):
        if len(h) != HASH_SIZE:
            raise VerificationError("inclusion proof hash is not 32 bytes", position=i)
        lines.append(b64encode(h))
    # c2sp.org/tlog-proof §Format: after the proof lines and an empty line, the checkpoint.
    return "\n".join(lines) + "\n\n" + note


def parse_proof(text: str) -> ProofBundle:
    """Strictly parse a tlog-proof@v1 text. Verifies nothing.

    Raises:
        VerificationError: on a wrong header, a malformed ``extra`` or ``index`` line, a hash
            line that is not canonical base64 of 32 bytes, too many hashes, a missing empty
            line or checkpoint, a carriage return, or a text over 1 MiB.
    """
    if len(text) > MAX_PROOF_BYTES:
        raise VerificationError("proof is too large", size=len(text))
    if "\r" in text:
        raise VerificationError("proof contains a carriage return")
    lines = text.split("\n")
    if lines[0] != HEADER:
        raise VerificationError("not a c2sp.org/tlog-proof@v1 proof (bad header line)")
    pos = 1
    extra: bytes | None = None
    # c2sp.org/tlog-proof §Format: the optional "extra" line comes second.
    if pos < len(lines) and lines[pos].startswith("extra "):
        extra = b64decode_strict(lines[pos][len("extra ") :])
        if extra is None:
            raise VerificationError("proof extra data is not canonical base64")
        pos += 1
    if pos >= len(lines) or not lines[pos].startswith("index "):
        raise VerificationError("proof has no index line")
    index_text = lines[pos][len("index ") :]
    if not _DECIMAL.fullmatch(index_text) or int(index_text) > _MAX_INDEX:
        raise VerificationError("proof index is not a canonical decimal", index=index_text)
    pos += 1
    hashes: list[bytes] = []
    while pos < len(lines) and lines[pos]:
        h = b64decode_strict(lines[pos])
        if h is None or len(h) != HASH_SIZE:
            raise VerificationError(
                "proof hash line is not base64 of 32 bytes", position=len(hashes)
            )
        hashes.append(h)
        if len(hashes) > _MAX_PATH:
            raise VerificationError("proof has more than 64 hashes")
        pos += 1
    if pos >= len(lines):
        raise VerificationError("proof has no empty line before the checkpoint")
    # Everything after the empty line is the checkpoint, verbatim.
    note = "\n".join(lines[pos + 1 :])
    if not note or note.startswith("\n") or not note.endswith("\n"):
        raise VerificationError("proof checkpoint is missing or does not end in a newline")
    return ProofBundle(index=int(index_text), extra=extra, inclusion=hashes, checkpoint_note=note)
