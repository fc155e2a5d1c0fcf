"""Preprocessing: H&E patches, histology features, virtual spot grids and gene panels."""

from __future__ import annotations

from ._encoder_hub import load_encoder
from ._encoders import ENCODERS, Encoder
from ._extract import extract_patches
from ._features import histology_features
from ._genes import select_genes
from ._standardize import standardize_features
from ._tiling import detect_tissue, tile_slide

__all__ = [
    "ENCODERS",
    "Encoder",
    "detect_tissue",
    "extract_patches",
    "histology_features",
    "load_encoder",
    "select_genes",
    "standardize_features",
    "tile_slide",
]
