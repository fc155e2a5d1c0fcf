"""Spatial context of a spot (beyond the paper): features of its neighbourhood, appended to its own."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._patches import PatchGroup


def knn_mean(groups: Sequence[PatchGroup], feats: np.ndarray, k: int) -> np.ndarray:
    """Mean features of each spot's ``k`` nearest spots of the same section (the spot itself excluded).

    Parameters
    ----------
    groups
        Spot groups (sections) with centres ``xy`` in px; neighbours never cross sections.
    feats
        Features, shape (n_spots, n_views, D); view ``v`` of a spot is averaged over view ``v`` of its neighbours,
        i.e. the whole neighbourhood is rotated or flipped together.
    k
        Number of neighbours; sections with ``m ≤ k`` spots use their ``m − 1`` others. A spot alone in its
        section gets its own features.

    Returns
    -------
    Neighbourhood features, shape (n_spots, n_views, D), float32.
    """
    from scipy.spatial import cKDTree

    if k < 1:
        raise ValueError(f"`context_k` must be a positive number of neighbours, found {k}.")
    out = np.empty_like(feats)
    for group in groups:
        idx = group.obs_idx
        n_nb = min(k, len(idx) - 1)
        if n_nb < 1:
            out[idx] = feats[idx]
            continue
        _, nn = cKDTree(group.xy).query(group.xy, k=n_nb + 1)
        # drop the spot itself (the first hit, or wherever it is when spots coincide)
        nb = np.array([[j for j in row if j != i][:n_nb] for i, row in enumerate(nn)])
        out[idx] = feats[idx[nb]].mean(axis=1)
    return out.astype(np.float32, copy=False)
