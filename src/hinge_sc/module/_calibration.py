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


def correction_weight(y_true: np.ndarray, point: np.ndarray, skip: np.ndarray) -> np.ndarray:
    r"""Per-gene weight :math:`w_g \in [0, 1]` of the learned correction to the linear skip, fitted on held-out spots.

    With the linear skip :math:`s` (a ridge of the image features) and the model's point prediction :math:`m`, the
    mean becomes :math:`s + w_g\,(m - s)`. Least squares on held-out values :math:`y`,

    .. math::

        w_g = \operatorname{clip}\Big(\frac{\sum_i (m_{ig} - s_{ig})(y_{ig} - s_{ig})}{\sum_i (m_{ig} - s_{ig})^2},
        0, 1\Big),

    keeps the part of the correction that generalises to the held-out spots: 1 where the network improves on the
    ridge, 0 where its correction only adds error (docs/method.md §5.6). Genes without a correction get 1.

    Parameters
    ----------
    y_true
        ``(n_spots, G)`` held-out values on the model's scale.
    point
        ``(n_spots, G)`` the model's point predictions for those spots (with :math:`w = 1`).
    skip
        ``(n_spots, G)`` the linear skip for those spots.

    Returns
    -------
    ``(G,)`` float32 weights in [0, 1].
    """
    y, m, s = (np.asarray(a, dtype=np.float64) for a in (y_true, point, skip))
    if not y.shape == m.shape == s.shape:
        raise ValueError(f"`y_true`, `point` and `skip` must have one shape, found {y.shape}, {m.shape}, {s.shape}.")
    d = m - s
    denominator = (d * d).sum(axis=0)
    numerator = (d * (y - s)).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(denominator > 1e-12, numerator / denominator, 1.0)
    return np.clip(np.nan_to_num(w, nan=1.0), 0.0, 1.0).astype(np.float32)
