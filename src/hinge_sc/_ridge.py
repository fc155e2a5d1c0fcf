"""Ridge regression on the singular directions of the features, and grouped cross-validation of its penalty.

One implementation for the model's linear skip (:class:`~hinge_sc.HINGE` with ``linear_skip=True``) and the
benchmark's ridge probes (:class:`~hinge_sc.benchmark.RidgeProbe`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

logger = logging.getLogger(__name__)

_RCOND = 1e-7
#: Default grid of ridge penalties searched with ``alpha="cv"``.
DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-2, 5, 15))


def _ridge_basis(
    x: np.ndarray, y: np.ndarray, n_components: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    r"""Centre ``x (n, D)`` and ``y (n, G)`` and decompose :math:`X_c = U S V^\top` (top ``n_components``).

    Returns ``x_mean, y_mean, s (k,), vt (k, D), uty (k, G)`` with ``uty`` :math:`= U^\top Y_c`: all a ridge path
    needs. Keeping the top ``k`` singular directions is PCA to ``k`` components fitted on these rows. For tall
    ``x`` (:math:`n > D`) the decomposition comes from the eigenvectors of :math:`X_c^\top X_c = V S^2 V^\top`
    and :math:`U^\top Y_c = S^{-1} V^\top X_c^\top Y_c` (several times faster than the SVD; singular values
    below :data:`_RCOND` :math:`s_\max` count as 0).
    """
    x64, y64 = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    x_mean, y_mean = x64.mean(0), y64.mean(0)
    xc, yc = x64 - x_mean, y64 - y_mean
    if len(xc) > xc.shape[1]:
        eigval, v = np.linalg.eigh(xc.T @ xc)
        order = np.argsort(eigval)[::-1]
        s, vt = np.sqrt(np.clip(eigval[order], 0, None)), v[:, order].T
        if n_components is not None:
            s, vt = s[:n_components], vt[:n_components]
        inv = np.divide(1.0, s, out=np.zeros_like(s), where=s > s.max(initial=0.0) * _RCOND)
        return x_mean, y_mean, s, vt, inv[:, None] * (vt @ (xc.T @ yc))  # U^T Y_c = S^-1 V^T X_c^T Y_c
    u, s, vt = np.linalg.svd(xc, full_matrices=False)
    if n_components is not None:
        u, s, vt = u[:, :n_components], s[:n_components], vt[:n_components]
    return x_mean, y_mean, s, vt, u.T @ yc


def _ridge_coef(s: np.ndarray, vt: np.ndarray, uty: np.ndarray, alpha: float) -> np.ndarray:
    r"""Ridge coefficients ``(D, G)`` from the SVD of the centred features.

    .. math::

        \hat W_\alpha = V \operatorname{diag}\!\Big(\frac{s_j}{s_j^2 + \alpha}\Big) U^\top Y_c

    (directions with :math:`s_j = 0` are dropped, so :math:`\alpha = 0` is the minimum-norm least-squares fit).
    With the top ``k`` directions only, this is ridge on the ``k`` PCA scores :math:`Z = X_c V_k^\top = U_k S_k`
    mapped back to the features.
    """
    return vt.T @ (_shrinkage(s, alpha)[:, None] * uty)


def _shrinkage(s: np.ndarray, alpha: float) -> np.ndarray:
    """:math:`s_j / (s_j^2 + \\alpha)` per singular value, 0 for (numerically) null directions."""
    return np.divide(s, s**2 + alpha, out=np.zeros_like(s), where=s > s.max(initial=0.0) * _RCOND)


def _cv_folds(spots: np.ndarray, groups: np.ndarray | None, n_splits: int) -> tuple[list, str]:
    """K-fold splits that never split a section (with ≥ 2 sections) or else a spot; returns ``(folds, by)``."""
    from sklearn.model_selection import GroupKFold

    if groups is not None and len(np.unique(groups)) >= 2:
        labels, by = groups, "section"
    else:
        labels, by = spots, "spot"
    n_groups = len(np.unique(labels))
    if n_groups < 2:
        raise ValueError(f"Cross-validation needs at least 2 training {by}s, found {n_groups}; pass a float `alpha`.")
    splitter = GroupKFold(n_splits=min(n_splits, n_groups))
    return list(splitter.split(np.zeros((len(labels), 1)), groups=labels)), by


def fit_ridge_cv(
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray | None = None,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    n_splits: int = 5,
) -> tuple[np.ndarray, np.ndarray, float]:
    r"""Ridge from ``x (n, D)`` to ``y (n, G)`` with the penalty chosen by K-fold cross-validation.

    Folds never split a group (a section) when there are ≥ 2 groups, else they hold out spots. The penalty of
    lowest out-of-fold squared error, each gene's error divided by its variance and averaged over genes, is kept.

    Returns
    -------
    ``coef (D, G)``, ``intercept (G,)`` (predict :math:`x\,W + b`) and the chosen ``alpha``.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    var = y.var(0)
    informative = var > 0
    folds, by = _cv_folds(np.arange(len(x)), groups, n_splits)
    error = np.zeros(len(alphas))
    for train, test in folds:
        x_mean, y_mean, s, vt, uty = _ridge_basis(x[train], y[train], None)
        scores = (x[test] - x_mean) @ vt.T
        for a, alpha in enumerate(alphas):
            err = ((scores * _shrinkage(s, alpha)) @ uty + y_mean - y[test]) ** 2
            error[a] += np.mean(err.mean(0)[informative] / var[informative]) if informative.any() else 0.0
    alpha = float(alphas[int(np.argmin(error))])
    logger.info("Linear skip: ridge alpha %.3g chosen by %d-fold CV over %ss.", alpha, len(folds), by)
    x_mean, y_mean, s, vt, uty = _ridge_basis(x, y, None)
    coef = _ridge_coef(s, vt, uty, alpha)
    return coef, y_mean - x_mean @ coef, alpha
