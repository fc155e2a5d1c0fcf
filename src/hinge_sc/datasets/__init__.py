"""Public datasets in their original formats."""

from __future__ import annotations

from ._her2st import her2st, her2st_sections

__all__ = ["her2st", "her2st_sections"]
