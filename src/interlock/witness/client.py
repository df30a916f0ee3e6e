"""The node's side: have witnesses cosign the log's newest checkpoint, and trust a tree head
only with a quorum of their cosignatures.

    >>> # witnesses = [WitnessEndpoint.parse("http://127.0.0.1:7380", vkey), ...]
    >>> # head = confirm_head(log, witnesses, quorum=2)   # raises QuorumNotMet below 2
    >>> # head.note  -> the log's checkpoint with the witnesses' cosignature lines

:func:`confirm_head` is the integration point for the freshness lease: a node MUST NOT treat
a tree head as confirmed unless it returned; :class:`~interlock.ledger.cosign.QuorumNotMet`
(reason ``POLICY_STALE``) and every other exception mean "not confirmed". It sends each
witness the checkpoint with a consistency proof from the size that witness last cosigned
(c2sp.org/tlog-witness ``add-checkpoint``), learning that size from a 409 answer when it does
not know it, and checks every returned cosignature itself before counting it.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

from interlock.errors import Error, UsageError, VerificationError
from interlock.ledger.cosign import (
    CosignatureVerifier,
    CosignedCheckpoint,
    QuorumNotMet,
    add_signatures,
    check_quorum,
    note_text,
    parse_signature_lines,
    verify_quorum,
)
from interlock.ledger.note import NoteVerifier, open_checkpoint
from interlock.ledger.protocols import Log
from interlock.witness.protocol import SIZE_CONTENT_TYPE, format_add_checkpoint, parse_size_body

__all__ = [
    "WitnessEndpoint",
    "WitnessFailed",
    "confirm_head",
    "request_cosignature",
    "require_quorum",
    "witnesses_from",
]

#: a witness's answer is a few signature lines; anything longer is refused unread
MAX_RESPONSE_BYTES = 16 * 1024
#: 409 answers followed per witness and round (the witness may advance meanwhile when other
#: nodes of the fleet submit the same log)
_MAX_CONFLICTS = 3


class WitnessFailed(Error):
    """One witness did not cosign (down, refused, or answered something unverifiable)."""

    reason_code = "POLICY_STALE"


@dataclass(frozen=True, slots=True, kw_only=True)
class WitnessEndpoint:
    """A witness: its submission prefix URL and its cosignature verifier key."""

    url: str
    verifier: CosignatureVerifier

    @classmethod
    def parse(cls, url: str, vkey: str) -> WitnessEndpoint:
        """Build from a URL (``http://`` or ``https://``, no query) and a type-0x04 vkey.

        Raises:
            UsageError: the URL is not an http(s) URL.
            VerificationError: the key does not parse.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
            raise UsageError("a witness URL is http(s)://host[:port][/prefix]", url=url)
        return cls(url=url.rstrip("/"), verifier=CosignatureVerifier.from_vkey(vkey))


def witnesses_from(urls: Sequence[str], vkeys: Sequence[str]) -> list[WitnessEndpoint]:
    """Endpoints from ``[witness] urls`` and ``keys`` (same order).

    Raises:
        UsageError: the lists differ in length, or a URL is not http(s).
        VerificationError: a key does not parse.
    """
    if len(urls) != len(vkeys):
        raise UsageError("one witness key per URL", urls=len(urls), keys=len(vkeys))
    return [WitnessEndpoint.parse(u, k) for u, k in zip(urls, vkeys, strict=True)]


def _post(url: str, body: bytes, timeout: float) -> tuple[int, str, bytes]:
    req = urllib.request.Request(  # noqa: S310 - the scheme is checked in WitnessEndpoint.parse
        url, data=body, method="POST", headers={"Content-Type": "text/plain; charset=utf-8"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            return resp.status, resp.headers.get("Content-Type", ""), _read(resp)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers.get("Content-Type", ""), _read(exc)


def _read(resp: object) -> bytes:
    data: bytes = resp.read(MAX_RESPONSE_BYTES + 1)  # type: ignore[attr-defined]
    if len(data) > MAX_RESPONSE_BYTES:
        raise WitnessFailed("witness answer is too large")
    return data


def request_cosignature(
    witness: WitnessEndpoint,
    log: Log,
    note: str,
    size: int,
    *,
    known_size: int = 0,
    timeout: float = 2.0,
) -> tuple[str, int]:
    """Ask ``witness`` to cosign ``note`` (the log's checkpoint of ``size`` entries); return
    its verified cosignature line and the size it now holds.

    Starts from ``known_size`` (the size this witness last cosigned, 0 when unknown); on a 409
    retries from the size the witness reports, up to a few times. A witness that holds a
    larger size than ``size`` will not cosign: the head is stale, or the log forked.

    Raises:
        WitnessFailed: unreachable, refused, a reported size above ``size``, or no valid
            cosignature from this witness in its answer.
    """
    text = note_text(note)
    old = known_size if 0 <= known_size <= size else 0
    for _ in range(_MAX_CONFLICTS + 1):
        try:
            proof = log.consistency_proof(old, size) if old else []
        except Error as exc:
            raise WitnessFailed(f"no consistency proof from {old}: {exc.message}") from exc
        body = format_add_checkpoint(old, proof, note).encode()
        try:
            status, ctype, data = _post(f"{witness.url}/add-checkpoint", body, timeout)
        except (OSError, ValueError) as exc:  # connection refused, timeout, bad answer
            raise WitnessFailed(f"witness unreachable: {type(exc).__name__}") from exc
        if status == 409:
            is_size = ctype.split(";")[0].strip() == SIZE_CONTENT_TYPE
            held = parse_size_body(data) if is_size else None
            if held is None:
                raise WitnessFailed("witness answered 409 without a size")
            if held > size:
                raise WitnessFailed(
                    "witness holds a larger tree than this head", held=held, size=size
                )
            old = held
            continue
        if status != 200:
            detail = data[:200].decode("utf-8", "replace").strip()
            raise WitnessFailed(f"witness refused ({status})", detail=detail)
        try:
            block = data.decode("utf-8")
            sigs = parse_signature_lines(block)
            mine = [
                line + "\n"
                for (name, blob), line in zip(sigs, block[:-1].split("\n"), strict=True)
                if witness.verifier.matches(name, blob[:4])
                # c2sp.org/tlog-witness: the client checks what it counts; a bad line fails
                and witness.verifier.verify_signature(text, blob) >= 0
            ]
        except (UnicodeDecodeError, VerificationError) as exc:
            raise WitnessFailed("witness answer has no valid cosignature") from exc
        if not mine:
            raise WitnessFailed("witness answer has no cosignature from its key")
        return mine[0], size
    raise WitnessFailed("witness kept changing its size", old=old)


def confirm_head(
    log: Log,
    witnesses: Sequence[WitnessEndpoint],
    quorum: int,
    *,
    log_verifier: NoteVerifier | None = None,
    known_sizes: MutableMapping[str, int] | None = None,
    timeout: float = 2.0,
    now: int | None = None,
    max_skew: int = 300,
) -> CosignedCheckpoint:
    """Have ``witnesses`` cosign the log's newest checkpoint; return it with the cosignatures
    only if at least ``quorum`` of them verify. Fail closed: anything less raises.

    ``log_verifier``: the log's key (default: from ``log.signer``). ``known_sizes``: each
    witness's last cosigned size by URL, read and updated (a node keeps it between calls to
    skip the 409 round trip). ``now``: POSIX seconds for the timestamp check (default: the
    clock); a cosignature more than ``max_skew`` seconds away from it does not count.
    Witnesses are asked in parallel, each within ``timeout`` seconds per request.

    Raises:
        UsageError: a quorum below 1 or above the number of witnesses, or a shared name/key.
        QuorumNotMet: (``POLICY_STALE``) fewer than ``quorum`` valid cosignatures; its
            evidence names why each failing witness did not count.
        VerificationError: the log's own checkpoint does not verify.
        LedgerError: the log cannot be read.
    """
    check_quorum(quorum, [w.verifier for w in witnesses])
    if log_verifier is None:
        if log.signer is None:
            raise UsageError("confirm_head needs the log's verifier key")
        log_verifier = NoteVerifier.from_vkey(log.signer.vkey)
    stored = log.latest_checkpoint()
    if stored is None:
        raise QuorumNotMet("the log has no checkpoint to confirm", quorum=quorum)
    cp = open_checkpoint(stored.note, log_verifier)
    sizes = known_sizes if known_sizes is not None else {}

    def ask(w: WitnessEndpoint) -> str | WitnessFailed:
        try:
            line, held = request_cosignature(
                w, log, stored.note, cp.size, known_size=sizes.get(w.url, 0), timeout=timeout
            )
        except WitnessFailed as exc:
            return exc
        except Exception as exc:  # noqa: BLE001 - one witness's failure is a missing vote, never an allow
            return WitnessFailed(f"{type(exc).__name__} while asking the witness")
        sizes[w.url] = held
        return line

    with ThreadPoolExecutor(max_workers=max(1, len(witnesses))) as pool:
        answers = list(pool.map(ask, witnesses))
    lines = [a for a in answers if isinstance(a, str)]
    failures = {
        w.url: a.diagnostics()[:300]
        for w, a in zip(witnesses, answers, strict=True)
        if isinstance(a, WitnessFailed)
    }
    if len(lines) < quorum:
        raise QuorumNotMet(
            "too few witnesses cosigned the checkpoint",
            origin=cp.origin,
            size=cp.size,
            cosigned=len(lines),
            quorum=quorum,
            failures=failures,
        )
    cosigned = add_signatures(stored.note, lines)
    # the one check of the result: the same code an offline verifier runs
    return verify_quorum(
        cosigned,
        log_verifier,
        [w.verifier for w in witnesses],
        quorum,
        now=int(time.time()) if now is None else now,
        max_skew=max_skew,
    )


def require_quorum(
    note: str,
    log_verifier: NoteVerifier,
    witnesses: Sequence[WitnessEndpoint],
    quorum: int,
    *,
    now: int | None = None,
    max_skew: int = 300,
    max_age: int | None = None,
) -> CosignedCheckpoint:
    """Offline: check a cosigned checkpoint ``note`` (from :func:`confirm_head`, or kept) has
    the log's signature and ``quorum`` valid cosignatures from ``witnesses``.

    Raises:
        UsageError: a bad quorum setting (see :func:`~interlock.ledger.cosign.check_quorum`).
        QuorumNotMet: too few cosignatures (``POLICY_STALE``).
        VerificationError: the note is malformed, the log's signature fails, or a line from
            a configured witness does not verify.
    """
    return verify_quorum(
        note,
        log_verifier,
        [w.verifier for w in witnesses],
        quorum,
        now=now,
        max_skew=max_skew,
        max_age=max_age,
    )
