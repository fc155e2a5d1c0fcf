"""End-to-end calibration of the spread of generated samples on held-out spots (beyond the paper)."""

from __future__ import annotations

import numpy as np


def spread_scale(y_true: np.ndarray, samples: np.ndarray, *, levels: tuple[float, ...] = (0.5, 0.9)) -> float:
    r"""The factor :math:`c` by which the samples' spread around their mean must grow for central intervals to cover.

    With :math:`S` samples, mean :math:`\bar x` and s.d. :math:`s` per spot and gene, the central ``level`` interval
    of a new draw is :math:`\bar x \pm t_{S-1,(1+\text{level})/2}\, s \sqrt{1 + 1/S}` (the rule of
    :func:`hinge_sc.tl.evaluate`). For held-out values :math:`y` the ratio
    :math:`r = |y - \bar x| / (s \sqrt{1 + 1/S})` gives, per level,

    .. math::

        c_\text{level} = \frac{Q_\text{level}(r)}{t_{S-1,(1+\text{level})/2}},

    the factor at which that interval covers exactly ``level`` of the held-out values; the geometric mean over
    ``levels`` is returned. Generated samples are then :math:`\bar x + c\,(x - \bar x)` (docs/method.md §5.6).
    Entries with :math:`s = 0` (e.g. every sample at the floor 0) are left out.

    Parameters
    ----------
    y_true
        ``(n_spots, G)`` held-out values on the model's scale.
    samples
        ``(n_spots, S, G)`` samples for the same spots, ``S ≥ 2``.
    levels
        Interval levels to calibrate, each in (0, 1).

    Returns
    -------
    :math:`c > 0` (1.0 when nothing can be calibrated).
    """
    from scipy.stats import t

    samples = np.asarray(samples, dtype=np.float64)
    y = np.asarray(y_true, dtype=np.float64)
    n = samples.shape[1]
    if n < 2 or samples.shape[0] == 0:
        return 1.0
    s = samples.std(axis=1, ddof=1) * np.sqrt(1 + 1 / n)
    ok = s > 1e-8
    if not ok.any():
        return 1.0
    r = np.abs(y - samples.mean(axis=1))[ok] / s[ok]
    factors = [np.quantile(r, level) / t.ppf((1 + level) / 2, n - 1) for level in levels]
    c = float(np.exp(np.mean(np.log(np.clip(factors, 1e-3, None)))))
    return c if np.isfinite(c) and c > 0 else 1.0
