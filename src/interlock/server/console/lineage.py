"""Placeholder: the lineage view's data routes (filled in by its own change)."""

from __future__ import annotations

from fastapi import APIRouter

__all__ = ["api"]

api = APIRouter(prefix="/console/api/lineage", tags=["console"])
