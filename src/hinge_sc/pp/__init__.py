"""Preprocessing: H&E patches, histology features and gene panels."""

from __future__ import annotations

from ._features import histology_features
from ._genes import select_genes
from ._patches import extract_patches

__all__ = ["extract_patches", "histology_features", "select_genes"]
