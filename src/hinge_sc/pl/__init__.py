"""Plotting: spatial maps of measured and generated expression, co-expression, per-gene scores, calibration, training
curves."""

from __future__ import annotations

from ._calibration import calibration
from ._coexpression import coexpression
from ._scores import gene_scores, training_history
from ._spatial import spatial_genes

__all__ = ["calibration", "coexpression", "gene_scores", "spatial_genes", "training_history"]
