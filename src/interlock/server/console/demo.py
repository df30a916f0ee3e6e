"""Placeholder: the Runtime Governance Demo's routes (filled in by its own change)."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

__all__ = ["api", "close_all"]

api = APIRouter(prefix="/console/api/demo", tags=["console"])


def close_all(app: FastAPI) -> None:
    """Close every demo home this app opened (called when the app stops)."""
    del app
