"""Shared fixtures: the real HER2ST data in ``../shared/data`` (or ``$HINGE_SC_DATA_DIR``)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

#: Data folder with ``her2st/``, ``vocab/`` …: ``$HINGE_SC_DATA_DIR`` if set, else ``<repo>/../shared/data``.
DATA_DIR = Path(os.environ.get("HINGE_SC_DATA_DIR") or Path(__file__).resolve().parents[1].parent / "shared" / "data")


@pytest.fixture(scope="session")
def her2st_path() -> Path:
    """The HER2ST folder (``counts/``, ``spots/``, ``images/``, ``labels/``); skips the test if absent."""
    path = DATA_DIR / "her2st"
    if not (path / "counts").is_dir():
        message = f"HER2ST data not found at {path}; set HINGE_SC_DATA_DIR."
        if os.environ.get("CI"):
            pytest.fail(message)  # CI always has ../shared/data: a skip there would hide a broken path
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def her2st_c(her2st_path):
    """Sections C2 and C3 (367 spots, with H&E images). Session-scoped: copy it before modifying."""
    import hinge_sc as hs

    return hs.datasets.her2st(sections=["C2", "C3"], path=her2st_path, show_progress_bar=False)


@pytest.fixture(scope="session")
def her2st_crop(her2st_c):
    """20 spots of section C2 with a 1,400 px crop of its full-resolution H&E as the only image.

    Visium convention: ``obsm["spatial"]`` in the crop's pixels, ``uns["spatial"]["C2"]["images"]["hires"]`` = the
    crop at ``tissue_hires_scalef = 1``, the section's ``microns_per_pixel`` and ``spot_diameter_fullres``; the
    crop's top-left in the full-resolution image is ``uns["crop_origin"]``. Session-scoped: copy it before modifying.
    """
    import numpy as np
    from PIL import Image

    from hinge_sc.pp._image import pil_pixel_limit

    c2 = her2st_c[her2st_c.obs["section"] == "C2"]
    lib = c2.uns["spatial"]["C2"]
    xy = c2.obsm["spatial"]
    x0, y0 = (np.median(xy, axis=0) - 700).astype(int)
    path = lib["metadata"]["source_image_path"]
    with pil_pixel_limit(path), Image.open(path) as im:
        crop = np.asarray(im.crop((x0, y0, x0 + 1400, y0 + 1400)).convert("RGB"))
    inside = ((xy > [x0 + 100, y0 + 100]) & (xy < [x0 + 1300, y0 + 1300])).all(axis=1)
    adata = c2[inside].copy()
    adata.obsm["spatial"] = adata.obsm["spatial"] - [x0, y0]
    scalefactors = {**lib["scalefactors"], "tissue_hires_scalef": 1.0}
    adata.uns["spatial"] = {"C2": {"images": {"hires": crop}, "scalefactors": scalefactors}}
    adata.uns["crop_origin"] = np.array([x0, y0])
    return adata
