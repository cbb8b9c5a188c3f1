"""Pipe mode (not yet implemented)."""

from __future__ import annotations
