"""The C2SP tlog-witness ``add-checkpoint`` request body: parse and format. Pure.

    >>> body = format_add_checkpoint(0, [], "example.com/log\\n0\\nAAAA\\n\\n— x y\\n")
    >>> body.splitlines()[0]
    'old 0'
    >>> parse_add_checkpoint(body.encode())[0]
    0

https://c2sp.org/tlog-witness §add-checkpoint: an ``old <size>`` line, zero to 63 consistency
proof lines (one base64 hash each), an empty line, then the signed checkpoint note. Every line
ends in a newline. Parsing is strict: anything else is a 400.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from interlock.errors import VerificationError
from interlock.ledger.merkle import HASH_SIZE
from interlock.ledger.note import b64decode_strict, b64encode

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_PROOF_LINES",
    "SIZE_CONTENT_TYPE",
    "format_add_checkpoint",
    "parse_add_checkpoint",
    "parse_size_body",
]

#: c2sp.org/tlog-witness: a client MUST NOT send more than 63 consistency proof lines
MAX_PROOF_LINES = 63
#: the largest request body a witness reads: 63 proof lines and a checkpoint with many
#: signatures fit in a few KiB; anything near this is not a checkpoint
MAX_BODY_BYTES = 64 * 1024
#: c2sp.org/tlog-witness: a 409 answer carries the witness's size with this content type
SIZE_CONTENT_TYPE = "text/x.tlog.size"
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")
_MAX_SIZE = (1 << 64) - 1


def _size(text: str) -> int | None:
    if not _DECIMAL.fullmatch(text):
        return None
    value = int(text)
    return value if value <= _MAX_SIZE else None


def parse_add_checkpoint(body: bytes) -> tuple[int, list[bytes], str]:
    """``(old size, consistency proof, signed checkpoint note)`` from a request body.

    Raises:
        VerificationError: the body is too large, not UTF-8, or not in the form above (the
            witness answers 400).
    """
    if len(body) > MAX_BODY_BYTES:
        raise VerificationError("request body is too large", size=len(body))
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise VerificationError("request body is not UTF-8") from exc
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise VerificationError("request has no empty line before the checkpoint")
    lines = head.split("\n")
    old_line, proof_lines = lines[0], lines[1:]
    if not old_line.startswith("old "):
        raise VerificationError("request does not start with an old size line")
    old = _size(old_line[4:])
    if old is None:
        raise VerificationError("old size is not a canonical decimal")
    if len(proof_lines) > MAX_PROOF_LINES:
        raise VerificationError("more than 63 consistency proof lines", count=len(proof_lines))
    proof: list[bytes] = []
    for n, line in enumerate(proof_lines):
        h = b64decode_strict(line)
        if h is None or len(h) != HASH_SIZE:
            raise VerificationError("consistency proof line is not a base64 hash", line=n)
        proof.append(h)
    if not note:
        raise VerificationError("request has no checkpoint")
    return old, proof, note


def format_add_checkpoint(old: int, proof: Sequence[bytes], note: str) -> str:
    """The request body for ``add-checkpoint``.

    Raises nothing for valid inputs; the witness judges the content.
    """
    return f"old {old}\n" + "".join(f"{b64encode(h)}\n" for h in proof) + "\n" + note


def parse_size_body(body: bytes) -> int | None:
    """The size in a 409 answer (``<decimal>\\n``), or None if it is not one. Never raises."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        return None
    if not text.endswith("\n"):
        return None
    return _size(text[:-1])
