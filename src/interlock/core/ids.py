"""The resource-id grammar: which strings may name a resource, and the fold that finds ids
that only *look* different.

    >>> id_problem("web_search") is None
    True
    >>> id_problem("rm\\u200b")[:47]
    'contains U+200B (ZERO WIDTH SPACE, category Cf)'
    >>> id_problem("/tmp/a/../b")
    "has a '..' path segment: '.' and '..' segments are refused, send the resolved path"
    >>> fold("/ETC//Passwd/")
    '/etc/passwd'

A resource id reaches Cedar verbatim (``Tool::"<id>"``) and is recorded on the ledger verbatim,
so the gate refuses every id a human or a downstream system could read as *another* id rather
than guess which one was meant. An id is accepted when all of these hold (docs/cedar.md,
"Resource ids"):

1. it is a non-empty string of at most 1,024 characters, valid Unicode (no lone surrogate);
2. it is in Unicode NFC — refused, not normalised: the ledger records exactly what was asked,
   and normalising would record an id the agent never sent;
3. it is NFKC-stable: no compatibility characters (full-width forms such as ``\uff52\uff4d``,
   ligatures, superscripts, the ellipsis), which IDNA, Python identifiers and search indexes
   fold into their plain forms — so a forbid on ``rm`` cannot be sidestepped with the
   full-width ``rm``;
4. no character of category Cc (controls), Cf (format: zero-width space/joiner, BOM, soft
   hyphen, bidi embeddings, overrides and isolates, LRM/RLM), Cs, Co (private use), Cn
   (unassigned, including noncharacters), Zl or Zp (line and paragraph separators);
5. the only space character is U+0020 SPACE (no NBSP, ideographic or other Zs), and no
   whitespace at either end;
6. no ``.`` or ``..`` segment when split on ``/`` or ``\\``.

Case is kept, as Cedar keeps it: ``Tool::"RM"`` is a different entity from ``Tool::"rm"``. What
the gate refuses instead is an id whose :func:`fold` equals the fold of an id a policy names
while the two differ (see :mod:`interlock.policy.engine`): a case or slash variant of a named
id is ambiguous, any other id is just another resource.

Pure: no I/O. The Unicode tables are those of the running Python's ``unicodedata``.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

__all__ = ["MAX_ID_CHARS", "fold", "id_problem"]

#: the longest resource id accepted, in characters
MAX_ID_CHARS: Final = 1024

#: categories never allowed anywhere in an id
_REFUSED_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})

#: an ASCII id needs only these checks: printable, no edge space, no dot segment
_ASCII_BAD: Final = re.compile(r"[\x00-\x1f\x7f]")
_DOT_SEGMENT: Final = re.compile(r"(?:^|[/\\])\.{1,2}(?:[/\\]|\Z)")
_SLASH_RUN: Final = re.compile(r"/{2,}")


def _describe(ch: str) -> str:
    name = unicodedata.name(ch, "unnamed")
    return f"U+{ord(ch):04X} ({name}, category {unicodedata.category(ch)})"


def id_problem(value: str) -> str | None:
    """Why ``value`` is not a well-formed resource id, or None when it is.

    The text names the first rule broken (and the offending character as ``U+XXXX``, never the
    raw character, so a log line cannot be spoofed by it). Never raises on a ``str``.
    """
    if not value:
        return "is empty"
    if len(value) > MAX_ID_CHARS:
        return f"is longer than {MAX_ID_CHARS} characters"
    if value.isascii():
        bad = _ASCII_BAD.search(value)
        if bad is not None:
            return (
                f"contains {_describe(bad.group())}: invisible, control and format characters"
                " are refused"
            )
    else:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "is not valid Unicode (lone surrogate)"
        for ch in value:
            if ch.isascii():
                if ch < " " or ch == "\x7f":
                    return (
                        f"contains {_describe(ch)}: invisible, control and format characters"
                        " are refused"
                    )
                continue
            category = unicodedata.category(ch)
            if category in _REFUSED_CATEGORIES:
                return (
                    f"contains {_describe(ch)}: invisible, control and format characters"
                    " are refused"
                )
            if category == "Zs":
                return (
                    f"contains {_describe(ch)}: the only space allowed is U+0020 SPACE,"
                    " and not at either end"
                )
        if not unicodedata.is_normalized("NFC", value):
            return (
                "is not in Unicode NFC (e.g. a letter followed by a combining mark that has a"
                " precomposed form): ids are refused, not normalised, so the ledger records"
                " exactly what was asked; send the NFC form"
            )
        if not unicodedata.is_normalized("NFKC", value):
            return (
                "contains compatibility characters (full-width forms, ligatures, superscripts,"
                " ...) that NFKC folds into other characters; send the plain form"
            )
    if value[0].isspace() or value[-1].isspace():
        return "has whitespace at its start or end"
    dots = _DOT_SEGMENT.search(value) if "." in value else None
    if dots is not None:
        segment = dots.group().strip("/\\")
        return (
            f"has a {segment!r} path segment: '.' and '..' segments are refused,"
            " send the resolved path"
        )
    return None


def fold(value: str) -> str:
    """The key under which ids that differ only by case or by repeated or trailing ``/`` are
    equal: NFKC of the case fold, runs of ``/`` made one, a trailing ``/`` dropped (not a lone
    ``/``). Used to refuse near-duplicates of the ids policies name. Never raises."""
    key = value.lower() if value.isascii() else unicodedata.normalize("NFKC", value.casefold())
    if "//" in key:
        key = _SLASH_RUN.sub("/", key)
    if len(key) > 1 and key[-1] == "/":
        key = key[:-1]
    return key
