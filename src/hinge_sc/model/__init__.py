"""The user-facing model class and its result type."""

from __future__ import annotations

from ._hinge import HINGE
from ._prediction import GeneratedExpression, Prediction

__all__ = ["HINGE", "GeneratedExpression", "Prediction"]
