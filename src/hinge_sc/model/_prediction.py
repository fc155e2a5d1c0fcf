"""The one result type of every generator and baseline: mean, spread, samples and the seed used."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


class Prediction(NamedTuple):
    """Expression predicted for a set of spots (returned by :meth:`hinge_sc.HINGE.generate` and the baselines).

    Attributes
    ----------
    mean
        Spots × panel genes, the point prediction (model scale, e.g. log2(count + 1)), indexed by ``obs_names``.
    std
        Spots × panel genes, the spread over samples, or ``None`` for a point estimator.
    samples
        ``(n_spots, S, n_genes)`` samples (or retrieved profiles) when requested, else ``None``.
    seed
        Seed that was used (drawn and recorded when none was given), ``None`` for deterministic methods.
    """

    mean: pd.DataFrame
    std: pd.DataFrame | None = None
    samples: np.ndarray | None = None
    seed: int | None = None


#: Former name of :class:`Prediction` (hinge_sc 0.1.0), kept for one release.
GeneratedExpression = Prediction
