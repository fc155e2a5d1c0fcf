"""Tools: generate expression and evaluate it."""

from __future__ import annotations

from ._evaluate import evaluate
from ._generate import generate

__all__ = ["evaluate", "generate"]
