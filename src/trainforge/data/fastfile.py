"""FastFile mode (interim: staged like File mode until the background fetcher lands)."""

from __future__ import annotations
