"""Plotting: spatial maps of measured and generated expression."""

from __future__ import annotations

from ._spatial import spatial_genes

__all__ = ["spatial_genes"]
