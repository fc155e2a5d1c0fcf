"""Steps shared by the plots: the spots of one section, and writing a figure."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import os

    from anndata import AnnData
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)


def section_mask(adata: AnnData, section: str | None, section_key: str | None) -> tuple[str | None, np.ndarray]:
    """The section to show and the mask of its spots.

    Parameters
    ----------
    adata
        AnnData with the sections in ``obs[section_key]``.
    section
        A value of ``obs[section_key]``; ``None`` picks the first (category order). Without ``section_key``, every
        spot is shown and the default section is the only key of ``uns["spatial"]``, if there is one.
    section_key
        Column of ``obs`` with the section of each spot, or ``None``.

    Returns
    -------
    ``(section, mask)``: the section (``None`` when unknown) and a boolean mask over the spots, shape (n_spots,).

    Raises
    ------
    KeyError
        If ``section_key`` is not a column of ``obs``.
    ValueError
        If ``section`` is not in ``obs[section_key]``.
    """
    spatial = adata.uns.get("spatial", {})
    if section_key is None or section_key not in adata.obs:
        if section_key is not None:
            raise KeyError(f"`section_key={section_key!r}` is not a column of `adata.obs`; pass one, or None.")
        if section is None and len(spatial) == 1:
            section = next(iter(spatial))
        return section, np.ones(adata.n_obs, dtype=bool)
    col = adata.obs[section_key].astype(str)
    present = list(dict.fromkeys(col))
    if section is None:
        cats = adata.obs[section_key].cat.categories if hasattr(adata.obs[section_key], "cat") else present
        section = next(str(c) for c in cats if str(c) in present)
    elif section not in present:
        raise ValueError(f"`section={section!r}` is not in `adata.obs[{section_key!r}]`; choose from {present}.")
    return section, (col == section).to_numpy()


def save_figure(fig: Figure, save: str | os.PathLike | None) -> None:
    """Write ``fig`` to ``save`` (format from the suffix) when a path is given, and log it."""
    if save is not None:
        fig.savefig(save, bbox_inches="tight")
        logger.info("Saved the figure to %s.", save)
