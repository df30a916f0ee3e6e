"""One shape for every 422: FastAPI's validation error, ``{"detail": [{"loc", "msg", ...}]}``.

    >>> unprocessable(("query", "from"), "'from' must not be larger than 'to'").errors()[0]["msg"]
    "'from' must not be larger than 'to'"

Checks that a JSON Schema cannot say (a SPIFFE ID, ``from <= to``) are reported exactly like
the schema checks FastAPI runs, so a client parses one error format. The action-request
endpoints are the exception: their 422 carries the recorded deny (see ``routes/decisions.py``).
"""

from __future__ import annotations

from fastapi.exceptions import RequestValidationError

__all__ = ["unprocessable"]


def unprocessable(loc: tuple[str, ...], message: str) -> RequestValidationError:
    """A 422 naming the offending input's location (``("body", "principal")``)."""
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": message}])
