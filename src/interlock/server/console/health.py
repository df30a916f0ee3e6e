"""Placeholder: the health view's data routes (filled in by its own change)."""

from __future__ import annotations

from fastapi import APIRouter

__all__ = ["api"]

api = APIRouter(prefix="/console/api/health", tags=["console"])
