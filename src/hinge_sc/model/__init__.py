"""The user-facing model class."""

from __future__ import annotations

from ._hinge import HINGE, GeneratedExpression

__all__ = ["HINGE", "GeneratedExpression"]
