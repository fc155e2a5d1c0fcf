"""Input and output: Visium, HEST-1k and Stem data folders, collections of sections on disk, whole-slide images, and conversions between AnnData (Visium
convention) and SpatialData."""

from __future__ import annotations

from ._collection import SectionCollection
from ._hest import read_hest, read_hest_patches
from ._spatialdata import from_spatialdata, to_spatialdata
from ._stem import read_stem
from ._visium import read_visium
from ._wsi import read_wsi

__all__ = [
    "SectionCollection",
    "from_spatialdata",
    "read_hest",
    "read_hest_patches",
    "read_stem",
    "read_visium",
    "read_wsi",
    "to_spatialdata",
]
