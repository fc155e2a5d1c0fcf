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


def cv_fold_ids(n: int, groups: np.ndarray | None, n_splits: int = 5) -> tuple[np.ndarray, str]:
    """Fold of each of ``n`` spots for :func:`fit_ridge_cv`: whole sections per fold (≥ 2 sections), else spots.

    Returns ``(fold (n,), by)`` with ``by`` ``"section"`` or ``"spot"``.
    """
    folds, by = _cv_folds(np.arange(n), groups, n_splits)
    fold = np.empty(n, dtype=np.int64)
    for k, (_, test) in enumerate(folds):
        fold[test] = k
    return fold, by


class RidgeMoments:
    r"""Sufficient statistics of a ridge fit, accumulated fold by fold over chunks of spots.

    Per fold :math:`k`: the spot count :math:`n_k`, :math:`\sum x`, :math:`\sum y`, :math:`\sum y^2`,
    :math:`X_k^\top X_k` ``(D, D)`` and :math:`X_k^\top Y_k` ``(D, G)``, in float64. The training spots never have
    to be in memory together: :meth:`add` takes them a section (or any chunk) at a time, which is how a model
    trained on a :class:`~hinge_sc.io.SectionCollection` fits its linear skip. The fits are those of
    :func:`fit_ridge_cv` on the concatenated rows.

    Parameters
    ----------
    n_folds
        Number of cross-validation folds.
    """

    def __init__(self, n_folds: int):
        self.n_folds = int(n_folds)
        self._stats: list[dict[str, np.ndarray | float]] | None = None

    def add(self, x: np.ndarray, y: np.ndarray, fold: np.ndarray) -> None:
        """Add spots ``x (n, D)``, ``y (n, G)`` whose folds are ``fold (n,)`` (integers in ``[0, n_folds)``)."""
        x, y, fold = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64), np.asarray(fold)
        if self._stats is None:
            d, g = x.shape[1], y.shape[1]
            self._stats = [
                {"n": 0.0, "sx": np.zeros(d), "sy": np.zeros(g), "syy": np.zeros(g), "xx": np.zeros((d, d)),
                 "xy": np.zeros((d, g))}
                for _ in range(self.n_folds)
            ]  # fmt: skip
        for k in np.unique(fold):
            rows = fold == k
            xk, yk, st = x[rows], y[rows], self._stats[int(k)]
            st["n"] += float(rows.sum())
            st["sx"] += xk.sum(0)
            st["sy"] += yk.sum(0)
            st["syy"] += (yk**2).sum(0)
            st["xx"] += xk.T @ xk
            st["xy"] += xk.T @ yk

    def _total(self, folds: list[int]) -> dict[str, np.ndarray | float]:
        if self._stats is None:
            raise ValueError("No spots were added to the ridge fit.")
        return {key: sum(self._stats[k][key] for k in folds) for key in self._stats[0]}

    @staticmethod
    def _basis(st: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``x_mean, y_mean, s, vt, uty`` of :func:`_ridge_basis` from the moments of the rows."""
        n = st["n"]
        x_mean, y_mean = st["sx"] / n, st["sy"] / n
        xx = st["xx"] - n * np.outer(x_mean, x_mean)
        xy = st["xy"] - n * np.outer(x_mean, y_mean)
        eigval, v = np.linalg.eigh(xx)
        order = np.argsort(eigval)[::-1]
        s, vt = np.sqrt(np.clip(eigval[order], 0, None)), v[:, order].T
        inv = np.divide(1.0, s, out=np.zeros_like(s), where=s > s.max(initial=0.0) * _RCOND)
        return x_mean, y_mean, s, vt, inv[:, None] * (vt @ xy)

    def fit_cv(self, alphas: Sequence[float] = DEFAULT_ALPHAS, *, by: str = "fold") -> tuple[np.ndarray, np.ndarray, float]:
        r"""Penalty by cross-validation over the folds, then the fit on all spots; see :func:`fit_ridge_cv`.

        A held-out fold's squared error is computed from its moments about the training folds' means
        (:math:`\sum_i ((x_i - \bar x) W + \bar y - y_i)^2 = \operatorname{diag}(W^\top C_{xx} W) - 2\,
        \operatorname{diag}(W^\top C_{xy}) + c_{yy}`).
        """
        total = self._total(list(range(self.n_folds)))
        n = total["n"]
        var = total["syy"] / n - (total["sy"] / n) ** 2
        informative = var > 1e-12 * np.maximum(1.0, (total["sy"] / n) ** 2)
        error = np.zeros(len(alphas))
        for k in range(self.n_folds):
            test = self._stats[k]
            if test["n"] == 0:
                continue
            x_mean, y_mean, s, vt, uty = self._basis(self._total([j for j in range(self.n_folds) if j != k]))
            nt = test["n"]
            cxx = test["xx"] - np.outer(test["sx"], x_mean) - np.outer(x_mean, test["sx"]) + nt * np.outer(x_mean, x_mean)
            cxy = test["xy"] - np.outer(test["sx"], y_mean) - np.outer(x_mean, test["sy"]) + nt * np.outer(x_mean, y_mean)
            cyy = test["syy"] - 2 * y_mean * test["sy"] + nt * y_mean**2
            for a, alpha in enumerate(alphas):
                w = _ridge_coef(s, vt, uty, alpha)
                err = (np.einsum("dg,de,eg->g", w, cxx, w) - 2 * np.einsum("dg,dg->g", w, cxy) + cyy) / nt
                error[a] += np.mean(err[informative] / var[informative]) if informative.any() else 0.0
        alpha = float(alphas[int(np.argmin(error))])
        logger.info("Linear skip: ridge alpha %.3g chosen by %d-fold CV over %ss.", alpha, self.n_folds, by)
        x_mean, y_mean, s, vt, uty = self._basis(total)
        coef = _ridge_coef(s, vt, uty, alpha)
        return coef, y_mean - x_mean @ coef, alpha


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
    The fit goes through :class:`RidgeMoments`, as a fit over chunks of spots does.

    Returns
    -------
    ``coef (D, G)``, ``intercept (G,)`` (predict :math:`x\,W + b`) and the chosen ``alpha``.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    fold, by = cv_fold_ids(len(x), groups, n_splits)
    moments = RidgeMoments(int(fold.max()) + 1)
    moments.add(x, y, fold)
    return moments.fit_cv(alphas, by=by)
