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
