"""Linear probes of the benchmark: ridge regression with alpha chosen by grouped cross-validation, and its
probabilistic version with an out-of-fold residual spread."""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import pandas as pd

from .._ridge import DEFAULT_ALPHAS, _cv_folds, _ridge_basis, _ridge_coef, _shrinkage
from ..tl._metrics import pearson_per_gene
from ._base import Baseline

if TYPE_CHECKING:
    from collections.abc import Sequence

logger = logging.getLogger(__name__)

class RidgeProbe(Baseline):
    r"""Ridge regression on standardised image features: the linear probe of HEST-Benchmark :cite:p:`Jaume2024`.

    .. math::

        \hat W = \arg\min_W \lVert Y_c - X_c W \rVert_F^2 + \alpha \lVert W \rVert_F^2,
        \qquad \hat y = \bar y + (x - \bar x) \hat W

    (:math:`X_c, Y_c`: centred training features and targets; the intercept is not penalised). With
    ``n_components`` the features are first projected on their top principal components (PCA fitted on the
    training rows, as in HEST-Benchmark) and the ridge is fitted on the component scores.

    With ``alpha="cv"`` the penalty is chosen from ``alphas`` by K-fold cross-validation on the training samples
    (like scikit-learn's ``RidgeCV``, with explicit folds): folds hold out whole sections when :meth:`fit` got a
    ``section_key`` with at least 2 sections (``min(cv, n_sections)`` folds, i.e. leave-one-section-out for
    few sections), otherwise whole spots (all views of a spot in one fold). The PCA is refitted on the training
    part of each fold. Held-out predictions are scored per fold by

    .. math::

        \mathrm{rMSE} = \frac{1}{G} \sum_g \frac{\operatorname{MSE}_g}{\operatorname{Var}(y_g)}, \qquad
        \bar r = \frac{1}{G} \sum_g \operatorname{corr}(y_g, \hat y_g)

    (:math:`\operatorname{MSE}_g` and :math:`\operatorname{corr}` over the held-out samples of the fold,
    :math:`\operatorname{Var}(y_g)` over all training samples; genes constant in training are left out), then
    averaged over folds. ``scoring="mse"`` (default) picks the alpha of lowest rMSE: mean squared error is what a
    ridge penalty trades off, it falls to the largest alpha when the features carry no signal (a constant
    prediction is the best guess), and it gives the residuals from which :class:`ProbabilisticRidge` takes its
    spread; dividing by the gene's variance keeps highly expressed genes from dominating. Pearson r, the
    benchmark's headline metric, ignores the scale of the prediction, so it cannot tell shrinkage from signal
    (on pure noise every alpha scores :math:`\bar r \approx 0`); ``scoring="pearson"`` picks the highest
    :math:`\bar r` instead. Both scores are reported in :attr:`cv_results_`.

    Parameters
    ----------
    alpha
        L2 penalty (≥ 0), or ``"cv"`` to choose it from ``alphas`` by cross-validation.
    alphas
        Grid searched with ``alpha="cv"`` (positive); default 15 values log-spaced over :math:`[10^{-2}, 10^5]`.
    cv
        Number of folds (at most the number of sections, or of spots).
    scoring
        ``"mse"`` or ``"pearson"``: the cross-validation score that chooses alpha (see above).
    n_components
        Number of principal components of the standardised features to regress on; ``None`` uses the features.
    seed
        Recorded only (the fit and the folds are deterministic).

    Attributes
    ----------
    coef_, intercept_
        :math:`(D, G)` weights on the standardised features and the :math:`(G,)` intercept.
    alpha_
        The penalty used (chosen by cross-validation with ``alpha="cv"``).
    cv_results_
        With ``alpha="cv"``: one row per alpha with columns ``alpha``, ``rmse``, ``rmse_std``, ``pearson``,
        ``pearson_std`` (mean and s.d. over folds); else ``None``.
    """

    name: ClassVar[str] = "ridge"
    #: Whether the fit keeps the per-gene out-of-fold residual s.d. (runs the folds even for a fixed alpha).
    _needs_oof_residuals: ClassVar[bool] = False

    def __init__(
        self,
        alpha: float | Literal["cv"] = 10.0,
        *,
        alphas: Sequence[float] | None = None,
        cv: int = 5,
        scoring: Literal["mse", "pearson"] = "mse",
        n_components: int | None = None,
        seed: int = 0,
    ):
        super().__init__(seed=seed)
        if isinstance(alpha, str):
            if alpha != "cv":
                raise ValueError(f"`alpha` must be a float ≥ 0 or 'cv', found {alpha!r}.")
        elif alpha < 0:
            raise ValueError(f"`alpha` must be ≥ 0, found {alpha}.")
        grid = np.asarray(DEFAULT_ALPHAS if alphas is None else alphas, dtype=np.float64)
        if grid.ndim != 1 or grid.size == 0 or not np.all(np.isfinite(grid)) or np.any(grid <= 0):
            raise ValueError(f"`alphas` must be a non-empty sequence of positive floats, found {alphas!r}.")
        if int(cv) < 2:
            raise ValueError(f"`cv` must be an integer ≥ 2, found {cv}.")
        if scoring not in ("mse", "pearson"):
            raise ValueError(f"`scoring` must be one of ['mse', 'pearson'], found {scoring!r}.")
        if n_components is not None and int(n_components) < 1:
            raise ValueError(f"`n_components` must be a positive integer or None, found {n_components}.")
        self.alpha = alpha if isinstance(alpha, str) else float(alpha)
        self.alphas = tuple(float(a) for a in grid)
        self.cv, self.scoring = int(cv), scoring
        self.n_components = None if n_components is None else int(n_components)

    def _hyperparameters(self) -> dict[str, Any]:
        params: dict[str, Any] = {"alpha": self.alpha}
        if self.alpha == "cv" or self._needs_oof_residuals:
            params |= {"alphas": list(self.alphas) if self.alpha == "cv" else None, "cv": self.cv,
                       "scoring": self.scoring}  # fmt: skip
        return params | {"n_components": self.n_components}

    def _fit_results(self) -> dict[str, Any]:
        out: dict[str, Any] = {"alpha_selected": self.alpha_}
        if self.cv_results_ is not None:
            out |= {"cv_by": self.cv_by_, "cv_n_folds": self.cv_n_folds_,
                    "cv_results": {c: self.cv_results_[c].tolist() for c in self.cv_results_.columns}}  # fmt: skip
        return out

    def _fit(self, x: np.ndarray, y: np.ndarray, spots: np.ndarray, groups: np.ndarray | None = None) -> None:
        if self.n_components is not None and self.n_components > x.shape[1]:
            raise ValueError(
                f"`n_components={self.n_components}` exceeds the {x.shape[1]} image features; pass at most "
                f"{x.shape[1]} or None."
            )
        self.cv_results_, self.cv_residual_std_ = None, None
        if self.alpha == "cv" or self._needs_oof_residuals:
            grid = self.alphas if self.alpha == "cv" else (float(self.alpha),)
            if groups is not None and len(np.unique(groups)) < 2:
                warnings.warn(
                    "`section_key` names a single training section, so the cross-validation folds hold out spots "
                    "of that section: neighbouring spots are alike, so the held-out error is optimistic.",
                    UserWarning,
                    stacklevel=3,
                )
            self.alpha_ = self._cross_validate(x, y, spots, groups, grid)
        else:
            self.alpha_ = float(self.alpha)
        x_mean, self.intercept_, s, vt, uty = _ridge_basis(x, y, self.n_components)
        self.coef_ = _ridge_coef(s, vt, uty, self.alpha_)
        self.intercept_ = self.intercept_ - x_mean @ self.coef_

    def _cross_validate(
        self, x: np.ndarray, y: np.ndarray, spots: np.ndarray, groups: np.ndarray | None, grid: Sequence[float]
    ) -> float:
        folds, self.cv_by_ = _cv_folds(spots, groups, self.cv)
        self.cv_n_folds_ = len(folds)
        y = np.asarray(y, dtype=np.float64)
        var = y.var(0)
        informative = var > 0
        rmse = np.full((len(grid), len(folds)), np.nan)
        pearson = np.full((len(grid), len(folds)), np.nan)
        squared = np.zeros((len(grid), y.shape[1]))  # out-of-fold squared residuals, summed over samples
        for f, (train, test) in enumerate(folds):
            x_mean, y_mean, s, vt, uty = _ridge_basis(x[train], y[train], self.n_components)
            scores = (np.asarray(x[test], dtype=np.float64) - x_mean) @ vt.T  # held-out rows on the k directions
            for a, alpha in enumerate(grid):
                pred = (scores * _shrinkage(s, alpha)) @ uty + y_mean
                err = (y[test] - pred) ** 2
                squared[a] += err.sum(0)
                if informative.any():
                    rmse[a, f] = np.mean(err.mean(0)[informative] / var[informative])
                    r = pearson_per_gene(y[test], pred)
                    pearson[a, f] = np.nanmean(r) if np.isfinite(r).any() else np.nan
        self.cv_results_ = pd.DataFrame({
            "alpha": np.asarray(grid, dtype=np.float64),
            "rmse": rmse.mean(1), "rmse_std": rmse.std(1),
            "pearson": pearson.mean(1), "pearson_std": pearson.std(1),
        })  # fmt: skip
        score = self.cv_results_["rmse" if self.scoring == "mse" else "pearson"].to_numpy()
        if not np.isfinite(score).any():
            raise ValueError(
                f"Cross-validation scores ({self.scoring}) are undefined: every gene is constant in the training "
                "folds or their predictions. Pass a float `alpha`."
            )
        best = int(np.nanargmin(score) if self.scoring == "mse" else np.nanargmax(score))
        self.cv_residual_std_ = np.sqrt(squared[best] / len(y))
        logger.info("Ridge alpha chosen by %d-fold CV over %ss: %.3g.", len(folds), self.cv_by_, grid[best])
        return float(grid[best])

    def _predict(self, x: np.ndarray):
        return np.asarray(x, dtype=np.float64) @ self.coef_ + self.intercept_, None, None


class ProbabilisticRidge(RidgeProbe):
    r"""The tuned ridge probe with a Gaussian spread per gene, so intervals and CRPS can be scored as for HINGE.

    .. math::

        y_g \mid x \sim \mathcal N\big(\bar y_g + (x - \bar x) \hat w_g,\ \hat\sigma_g^2\big), \qquad
        \hat\sigma_g^2 = \frac{1}{n} \sum_{i=1}^{n} \big(y_{ig} - \hat y^{(-k(i))}_{ig}\big)^2,

    where :math:`\hat w_g` is :class:`RidgeProbe`'s fit at the chosen :math:`\alpha` and
    :math:`\hat y^{(-k(i))}` is the prediction for training sample :math:`i` by the ridge fitted without its fold
    :math:`k(i)` (the same folds that choose alpha: whole sections with ``section_key``, else whole spots). Training
    residuals would understate :math:`\sigma_g` (the fit has seen those samples); out-of-fold residuals measure
    the error on unseen spots, or unseen sections, including the between-section shift when folds hold out
    sections. The spread is homoscedastic (the same for every spot) and ignores the uncertainty of
    :math:`\hat w_g`. Fold models see fewer samples than the final fit, so :math:`\hat\sigma_g` leans slightly
    high.

    ``predict`` writes the mean, ``_std`` (:math:`\hat\sigma_g` for every spot) and, with ``save_samples``,
    ``n_samples`` draws :math:`\hat y + \hat\sigma_g \varepsilon`, :math:`\varepsilon \sim \mathcal N(0, 1)`,
    from a generator seeded with ``seed`` (the same draws on every call). The empirical central 90% interval of
    ``S`` draws covers about :math:`0.9 (S - 1) / (S + 1)` (≈ 85% for 32 draws); the Gaussian interval from
    ``_std`` has no such bias.

    Parameters
    ----------
    alpha
        ``"cv"`` (default) to choose the penalty from ``alphas``, or a fixed float ≥ 0 (the folds still run, for
        the residuals).
    alphas, cv, scoring, n_components
        As in :class:`RidgeProbe`.
    n_samples
        Gaussian draws per spot (recorded as ``n_draws`` in ``uns[key]["params"]``, where ``n_samples`` is the
        number of training samples).
    seed
        Seed of the draws.

    Attributes
    ----------
    residual_std_
        :math:`(G,)` out-of-fold residual s.d. :math:`\hat\sigma_g` (model scale).
    """

    name: ClassVar[str] = "ridge_prob"
    stochastic: ClassVar[bool] = True
    _needs_oof_residuals: ClassVar[bool] = True

    def __init__(
        self,
        alpha: float | Literal["cv"] = "cv",
        *,
        alphas: Sequence[float] | None = None,
        cv: int = 5,
        scoring: Literal["mse", "pearson"] = "mse",
        n_components: int | None = None,
        n_samples: int = 32,
        seed: int = 0,
    ):
        super().__init__(alpha, alphas=alphas, cv=cv, scoring=scoring, n_components=n_components, seed=seed)
        if int(n_samples) < 1:
            raise ValueError(f"`n_samples` must be a positive integer, found {n_samples}.")
        self.n_samples = int(n_samples)

    def _hyperparameters(self) -> dict[str, Any]:
        # recorded as "n_draws": "n_samples" in the params is the number of training samples (see `Baseline.fit`)
        return super()._hyperparameters() | {"n_draws": self.n_samples}

    def _fit_results(self) -> dict[str, Any]:
        return super()._fit_results() | {"residual_std": self.residual_std_.tolist()}

    def _fit(self, x: np.ndarray, y: np.ndarray, spots: np.ndarray, groups: np.ndarray | None = None) -> None:
        super()._fit(x, y, spots, groups)
        self.residual_std_ = self.cv_residual_std_

    def _predict(self, x: np.ndarray):
        mean, _, _ = super()._predict(x)
        std = np.broadcast_to(self.residual_std_, mean.shape).copy()
        noise = np.random.default_rng(self.seed).standard_normal((len(mean), self.n_samples, mean.shape[1]))
        return mean, std, mean[:, None, :] + self.residual_std_ * noise
