"""The ledger over HTTP: checkpoints, entries, RFC 9162 proofs, and C2SP ``tlog-tiles``.

    >>> # curl -s http://127.0.0.1:8750/v1/ledger/proof/7
    >>> # curl -s http://127.0.0.1:8750/tlog/checkpoint

``/tlog/`` serves the layout of https://c2sp.org/tlog-tiles — ``checkpoint``, ``tile/<L>/<N>``
and ``tile/entries/<N>``, partial tiles as ``.p/<W>`` — computed from the live tree, so a tile
client (e.g. ``tlog_scales``'s ``HttpBackend``) reads the ledger unchanged. Every tile path
names fixed content (a partial tile's width is in its path), so tiles are served immutable.

Index and size parameters are bounded (422 outside ``0 .. 2**53-1``); an index or size past the
current log is 404, never a 5xx.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from interlock.errors import LedgerCorrupt, LedgerError, LedgerUnavailable
from interlock.ledger.tiles import TILE_HEIGHT, TILE_WIDTH, encode_entry_bundle, encode_index
from interlock.server.problems import unprocessable
from interlock.server.schemas import CheckpointOut, ConsistencyOut, EntryOut, InclusionOut, Problem
from interlock.server.state import ServerState, StateDep

__all__ = ["api", "parse_tile_path"]

#: I-JSON integers: every index and size the API accepts or returns fits
MAX_INDEX = 2**53 - 1
Index = Annotated[int, Path(ge=0, le=MAX_INDEX)]
_IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable"}
_FRESH = {"Cache-Control": "no-cache"}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Problem}}

# c2sp.org/tlog-tiles: tile/<L>/<N>[.p/<W>], tile/entries/<N>[.p/<W>]; N as 3-digit path
# elements, all but the last prefixed with "x"
# (matched with fullmatch: "$" would also match before a final newline)
_TILE_RE = re.compile(r"(entries|[0-9]{1,2})/((?:x[0-9]{3}/){0,6}[0-9]{3})(?:\.p/([0-9]{1,3}))?")
_MAX_LEVEL = 63


def parse_tile_path(path: str) -> tuple[int | None, int, int] | None:
    """``(level, n, width)`` of a C2SP tile path below ``tile/`` (``level`` None for an entry
    bundle), or None unless the path is in canonical form.

        >>> parse_tile_path("0/x001/x234/067"), parse_tile_path("entries/000.p/3")
        ((0, 1234067, 256), (None, 0, 3))
        >>> parse_tile_path("0/x000/067"), parse_tile_path("1/000.p/256")
        (None, None)
        >>> parse_tile_path("0/000\\n"), parse_tile_path("entries/000.p/3\\n")
        (None, None)

    Never raises.
    """
    m = _TILE_RE.fullmatch(path)
    if m is None:
        return None
    level_text, n_text, width_text = m.groups()
    level = None if level_text == "entries" else int(level_text)
    if level is not None and (level > _MAX_LEVEL or str(level) != level_text):
        return None
    n = int(n_text.replace("x", "").replace("/", ""))
    if encode_index(n) != n_text:  # no needless leading "x000/" elements
        return None
    width = TILE_WIDTH
    if width_text is not None:
        width = int(width_text)
        if not 1 <= width < TILE_WIDTH or str(width) != width_text:
            return None
    return level, n, width


api = APIRouter()


def _latest_covering(state: ServerState, index: int) -> Any:
    """The latest checkpoint, signing a fresh one if it does not cover ``index`` yet (never
    over a ledger that failed verification)."""
    gate = state.gate
    led = gate.ledger
    cp = led.latest_checkpoint()
    if (cp is None or cp.size <= index) and index < led.size():
        if gate.corrupt is not None:
            raise HTTPException(
                status_code=503,
                detail="the ledger failed verification: no checkpoint will be signed",
            )
        cp = led.checkpoint()
    return cp


@api.get(
    "/v1/ledger/checkpoint",
    tags=["ledger"],
    summary="The latest signed checkpoint",
    response_model=CheckpointOut,
    responses=_NOT_FOUND,
)
def get_checkpoint(state: StateDep) -> JSONResponse:
    """The latest C2SP signed checkpoint (signed at least every second while entries
    arrive). Verify ``note`` with the log's verifier key (``interlock ledger vkey``)."""
    gate = state.gate
    cp = gate.ledger.latest_checkpoint()
    if cp is None:
        raise HTTPException(status_code=404, detail="the ledger is empty: no checkpoint yet")
    return JSONResponse(
        {"size": cp.size, "root_hash": cp.root.hex(), "note": cp.note, "created": cp.created},
        headers=_FRESH,
    )


@api.get(
    "/v1/ledger/entries/{index}",
    tags=["ledger"],
    summary="One ledger entry",
    response_model=EntryOut,
    responses=_NOT_FOUND,
)
def get_entry(state: StateDep, index: Index) -> JSONResponse:
    """The exact entry bytes (base64), their RFC 6962 leaf hash, and the record parsed."""
    gate = state.gate
    led = gate.ledger
    if index >= led.size():
        raise HTTPException(status_code=404, detail=f"no entry at index {index}")
    data = led.entry(index)
    try:
        record = json.loads(data)
    except ValueError:
        record = None
    return JSONResponse(
        {
            "index": index,
            "leaf_hash": led.leaf_hash_at(index).hex(),
            "data": base64.b64encode(data).decode("ascii"),
            "record": record if isinstance(record, dict) else None,
        },
        headers=_IMMUTABLE,
    )


@api.get(
    "/v1/ledger/proof/{index}",
    tags=["ledger"],
    summary="Inclusion proof of an entry",
    response_model=InclusionOut,
    responses=_NOT_FOUND,
)
def get_proof(
    state: StateDep,
    index: Index,
    size: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_INDEX,
            description="tree size (default: the latest checkpoint, signed now if needed)",
        ),
    ] = None,
) -> JSONResponse:
    """RFC 9162 §2.1.3 inclusion proof of entry ``index`` in the tree of ``size`` entries;
    without ``size``, in the latest signed checkpoint, which is returned with it."""
    gate = state.gate
    led = gate.ledger
    note: str | None = None
    if size is None:
        cp = _latest_covering(state, index)
        if cp is None or cp.size <= index:
            raise HTTPException(status_code=404, detail=f"no entry at index {index}")
        size, note = cp.size, cp.note
    elif index >= size or size > led.size():
        raise HTTPException(
            status_code=404,
            detail=f"no entry {index} in a tree of {size} (the log has {led.size()})",
        )
    hashes = led.inclusion_proof(index, size)
    return JSONResponse(
        {
            "index": index,
            "tree_size": size,
            "leaf_hash": led.leaf_hash_at(index).hex(),
            "hashes": [h.hex() for h in hashes],
            "checkpoint": note,
        }
    )


@api.get(
    "/v1/ledger/consistency",
    tags=["ledger"],
    summary="Consistency proof between two tree sizes",
    response_model=ConsistencyOut,
    responses=_NOT_FOUND,
)
def get_consistency(
    state: StateDep,
    from_: Annotated[int, Query(alias="from", ge=0, le=MAX_INDEX)],
    to: Annotated[
        int | None,
        Query(ge=0, le=MAX_INDEX, description="default: the latest checkpoint's size"),
    ] = None,
) -> JSONResponse:
    """RFC 9162 §2.1.4 consistency proof that the tree of ``from`` entries is a prefix of
    the tree of ``to`` entries, with both roots."""
    gate = state.gate
    led = gate.ledger
    current = led.size()
    if to is None:
        cp = led.latest_checkpoint()
        to = cp.size if cp is not None else current
    if from_ > to:
        raise unprocessable(("query", "from"), "'from' must not be larger than 'to'")
    if to > current:
        raise HTTPException(
            status_code=404, detail=f"the log has {current} entries, fewer than {to}"
        )
    hashes = led.consistency_proof(from_, to)
    return JSONResponse(
        {
            "from": from_,
            "to": to,
            "from_root": led.root_at(from_).hex(),
            "to_root": led.root_at(to).hex(),
            "hashes": [h.hex() for h in hashes],
        }
    )


@api.get(
    "/tlog/checkpoint",
    tags=["tlog-tiles"],
    summary="C2SP tlog-tiles checkpoint",
    response_class=PlainTextResponse,
    responses=_NOT_FOUND,
)
def tlog_checkpoint(state: StateDep) -> Response:
    """The latest signed checkpoint note, as ``text/plain``."""
    gate = state.gate
    cp = gate.ledger.latest_checkpoint()
    if cp is None:
        raise HTTPException(status_code=404, detail="the ledger is empty: no checkpoint yet")
    return PlainTextResponse(cp.note, headers=_FRESH)


@api.get(
    "/tlog/tile/{tile_path:path}",
    tags=["tlog-tiles"],
    summary="C2SP tlog-tiles hash tile or entry bundle",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "the tile"},
        **_NOT_FOUND,
    },
)
def tlog_tile(state: StateDep, tile_path: Annotated[str, Path(max_length=256)]) -> Response:
    """``<L>/<N>[.p/<W>]`` (hash tile: W hashes at tree level 8·L) or
    ``entries/<N>[.p/<W>]`` (W entries, each prefixed by its uint16 length)."""
    gate = state.gate
    parsed = parse_tile_path(tile_path)
    if parsed is None:
        raise HTTPException(status_code=404, detail="not a C2SP tile path")
    level, n, width = parsed
    led = gate.ledger
    height = TILE_HEIGHT * (level or 0)
    available = led.size() >> height  # nodes that exist at this tree level
    first = n * TILE_WIDTH
    if first + width > available:
        raise HTTPException(status_code=404, detail="no such tile in the log yet")
    try:
        if level is None:
            entries = [data for _i, _lh, data in led.iter_entries(first, first + width)]
            if len(entries) != width:
                raise LedgerError("entries missing under a tile", first=first)
            body = encode_entry_bundle(entries)
        else:
            body = b"".join(led.node(height, first + i) for i in range(width))
    except LedgerError as exc:
        if isinstance(exc, LedgerUnavailable | LedgerCorrupt):
            raise  # the server's problem, not the path's: 503 (see app.py)
        raise HTTPException(status_code=404, detail="no such tile in the log yet") from None
    return Response(body, media_type="application/octet-stream", headers=_IMMUTABLE)
