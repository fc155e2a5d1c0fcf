"""Tools: generate expression, evaluate it, and aggregate and compare evaluations."""

from __future__ import annotations

from ._aggregate import aggregate, compare
from ._evaluate import evaluate
from ._generate import depth_spread, generate
from ._lazyslide import LazySlideAdapter
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
    "to_adata",
]
