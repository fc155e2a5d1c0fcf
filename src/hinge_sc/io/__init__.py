"""Input and output: Visium folders, and conversions between AnnData (Visium convention) and SpatialData."""

from __future__ import annotations

from ._spatialdata import from_spatialdata, to_spatialdata
from ._visium import read_visium
from ._wsi import read_wsi

__all__ = ["from_spatialdata", "read_visium", "read_wsi", "to_spatialdata"]
