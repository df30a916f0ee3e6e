"""The resource-id grammar (interlock.core.ids): each refused class, accepted ids, the fold."""

from __future__ import annotations

import unicodedata

import pytest

from interlock.core.ids import MAX_ID_CHARS, fold, id_problem

REFUSED = {
    "empty": ("", "empty"),
    "too long": ("a" * (MAX_ID_CHARS + 1), "longer than"),
    "lone surrogate": ("rm\ud800", "lone surrogate"),
    "NUL": ("rm\x00", "U+0000"),
    "newline": ("rm\nx", "U+000A"),
    "tab inside": ("a\tb", "U+0009"),
    "DEL": ("rm\x7f", "U+007F"),
    "C1 control NEL": ("rm\x85", "U+0085"),
    "zero-width space": ("r\u200bm", "U+200B"),
    "zero-width joiner": ("rm\u200d", "U+200D"),
    "zero-width non-joiner": ("\u200crm", "U+200C"),
    "word joiner": ("r\u2060m", "U+2060"),
    "BOM": ("\ufeffrm", "U+FEFF"),
    "soft hyphen": ("r\u00adm", "U+00AD"),
    "LRM": ("rm\u200e", "U+200E"),
    "RLM": ("rm\u200f", "U+200F"),
    "bidi embedding LRE": ("\u202arm", "U+202A"),
    "bidi override RLO": ("txt.\u202eexe", "U+202E"),
    "bidi isolate LRI": ("\u2066rm", "U+2066"),
    "bidi isolate PDI": ("rm\u2069", "U+2069"),
    "line separator": ("a\u2028b", "U+2028"),
    "paragraph separator": ("a\u2029b", "U+2029"),
    "private use": ("rm\ue000", "U+E000"),
    "noncharacter": ("rm\ufffe", "U+FFFE"),
    "unassigned": ("rm\U000e0fff", "U+E0FFF"),
    "NBSP leading": ("\u00a0rm", "U+00A0"),
    "NBSP inside": ("web\u00a0search", "U+00A0"),
    "ideographic space": ("rm\u3000", "U+3000"),
    "en space": ("\u2002rm", "U+2002"),
    "leading space": (" rm", "start or end"),
    "trailing space": ("rm ", "start or end"),
    "only a space": (" ", "start or end"),
    "dot": (".", "'.' path segment"),
    "dot dot": ("..", "'..' path segment"),
    "leading dot segment": ("./rm", "'.' path segment"),
    "trailing dot dot": ("/tmp/..", "'..' path segment"),
    "inner dot dot": ("a/../b", "'..' path segment"),
    "inner dot": ("/etc/./passwd", "'.' path segment"),
    "backslash dot dot": ("a\\..\\b", "'..' path segment"),
    "mixed separators": ("a/..\\b", "'..' path segment"),
    "non-NFC combining sequence": ("cafe\u0301", "NFC"),
    "non-NFC decomposed hangul": ("\u1100\u1161", "NFC"),
    "full-width rm": ("\uff52\uff4d", "compatibility"),
    "full-width capital in Tool": ("\uff34ool", "compatibility"),
    "full-width dot segment": ("a/\uff0e\uff0e/b", "compatibility"),
    "ligature": ("\ufb01le", "compatibility"),
    "superscript": ("x\u00b2", "compatibility"),
    "ellipsis": ("a\u2026", "compatibility"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_each_refused_class_is_refused_with_its_reason(name: str) -> None:
    value, expected = REFUSED[name]
    problem = id_problem(value)
    assert problem is not None, name
    assert expected in problem
    # the text never carries the offending raw character (a log line cannot be spoofed)
    assert all(not unicodedata.category(c).startswith(("C", "Z")) or c == " " for c in problem)


ACCEPTED = [
    "web_search",
    "delete_database",
    "Tool Call",  # U+0020 inside is fine
    "/tmp/x",
    "/tmp/x/",  # a trailing slash: allowed (the fold makes it equal to /tmp/x)
    "a//b",
    "time/now",
    "files/file:///tmp/report.txt",
    "https://example.org/a?b=c#d",
    "...",  # three dots are a name, not a dot segment
    ".hidden",
    "a/.hidden/..x",
    "café",  # NFC, precomposed
    "données/résumé_été.txt",
    "Ελληνικά",
    "日本語のファイル",
    "한국어",
    "emoji\U0001f600",
    "a" * MAX_ID_CHARS,
]


@pytest.mark.parametrize("value", ACCEPTED)
def test_accepted_ids(value: str) -> None:
    assert id_problem(value) is None


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("rm", "RM"),
        ("delete_database", "Delete_Database"),
        ("/etc/passwd", "/etc//passwd"),
        ("/etc/passwd", "/ETC/passwd/"),
        ("straße", "STRASSE"),
        ("Ελληνικά", "ΕΛΛΗΝΙΚΆ"),
    ],
)
def test_fold_equates_case_and_slash_variants(a: str, b: str) -> None:
    assert fold(a) == fold(b)


@pytest.mark.parametrize(("a", "b"), [("rm", "rn"), ("/a/b", "/a/b/c"), ("a-b", "a_b")])
def test_fold_keeps_different_ids_apart(a: str, b: str) -> None:
    assert fold(a) != fold(b)


def test_fold_of_root_is_root() -> None:
    assert fold("/") == "/"
    assert fold("//") == "/"
