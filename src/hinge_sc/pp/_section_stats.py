"""Features standardised within each section (shared by histology_features and standardize_features)."""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)


#: Fewest spots of a section whose own statistics are used without a warning.
MIN_SECTION_SPOTS = 30


def within_sections(features: np.ndarray, sections: list[np.ndarray]) -> np.ndarray:
    r"""``(n_spots, V, D)`` features standardised within each section with the identity view's statistics.

    Each feature of each section becomes :math:`(f - \mu_s) / \sigma_s`, with :math:`\mu_s, \sigma_s` the mean and
    s.d. of view 0 over the section's spots; every view is moved by the same affine map, so the views stay
    augmentations of one another. A constant feature becomes 0.

    Parameters
    ----------
    features
        ``(n_spots, V, D)`` features (view 0: the identity).
    sections
        Row indices of each section (together, every row once).

    Returns
    -------
    ``(n_spots, V, D)`` float32.
    """
    features = np.asarray(features, dtype=np.float64)
    out = np.empty_like(features)
    for rows in sections:
        if len(rows) < MIN_SECTION_SPOTS:
            logger.warning(
                "Standardising features within a section of %d spots: its statistics are noisy (give a whole "
                "section, ≥ %d spots, or `standardize=None`).", len(rows), MIN_SECTION_SPOTS,
            )
        identity = features[rows, 0]
        mean, sd = identity.mean(axis=0), identity.std(axis=0)
        sd = np.where(sd > 1e-8, sd, 1.0)
        out[rows] = (features[rows] - mean) / sd
    return out.astype(np.float32)
