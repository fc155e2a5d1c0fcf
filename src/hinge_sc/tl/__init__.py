"""Tools: generate expression, evaluate it, and aggregate and compare evaluations."""

from __future__ import annotations

from ._aggregate import aggregate, compare
from ._evaluate import evaluate
from ._generate import generate
from ._lazyslide import LazySlideAdapter
from ._new_slide import depth_spread, level_spread
from ._to_adata import to_adata
from ._write import add_prediction

__all__ = [
    "LazySlideAdapter",
    "add_prediction",
    "aggregate",
    "compare",
    "depth_spread",
    "evaluate",
    "generate",
    "level_spread",
    "to_adata",
]
