"""Plotting: spatial maps of measured and generated expression, co-expression, per-gene scores, calibration, training
curves.

Return values: a plot of one panel returns its :class:`~matplotlib.axes.Axes`; a plot of several panels returns the
list of its Axes (``result[0].figure`` is the figure). ``save=`` writes the figure, ``show=`` shows it, as in scanpy.
"""

from __future__ import annotations

from ._calibration import calibration
from ._coexpression import coexpression
from ._history import training_history
from ._scores import gene_scores
from ._spatial import spatial_genes

__all__ = ["calibration", "coexpression", "gene_scores", "spatial_genes", "training_history"]
