"""Common fit / predict interface of the baselines; predictions are written like :func:`hinge_sc.tl.generate`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import pandas as pd

from .._counts import panel_counts
from .._scales import check_scale, to_model_scale
from .._validators import check_counts, check_genes, check_genes_given, check_n_obs, check_obsm
from ..model import Prediction
from ..tl._write import prepare_target, write_prediction

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anndata import AnnData

logger = logging.getLogger(__name__)


class Baseline:
    """Base class of the baselines: image features → panel expression, with one interface for all.

    ``fit`` reads raw counts and image features from a training AnnData, puts the panel counts on the
    target scale (as :class:`~hinge_sc.HINGE` does: ``log2(count + 1)`` by default, spots without panel counts
    dropped with a warning) and standardises the features with the training mean and s.d. With ``views_key``
    every augmented view is a training sample with the spot's target. ``predict`` embeds the identity-view
    features of new spots and writes ``obsm[key_added]`` (and ``_std`` / ``_samples`` where the method has
    a spread) and ``uns[key_added]["params"]``, so that :func:`hinge_sc.tl.evaluate` and :mod:`hinge_sc.pl`
    treat every method the same way. Subclasses implement ``_fit`` and ``_predict``.

    Parameters
    ----------
    seed
        Seed of the method's randomness (recorded; deterministic methods ignore it).
    """

    #: Default ``key_added`` and the name in tables.
    name: ClassVar[str] = "baseline"
    #: Whether results depend on ``seed``.
    stochastic: ClassVar[bool] = False

    def __init__(self, *, seed: int = 0):
        self.seed = int(seed)
        self.is_fitted_ = False

    # ------------------------------------------------------------------ to implement
    def _fit(self, x: np.ndarray, y: np.ndarray, spots: np.ndarray, groups: np.ndarray | None = None) -> None:
        """Fit on standardised features ``x (n, D)`` and targets ``y (n, G)``.

        ``spots (n,)`` is the spot of each row (views of a spot share it); ``groups (n,)`` the tissue section of
        each row (``obs[section_key]`` as strings) or ``None`` when :meth:`fit` got no ``section_key``.
        """
        raise NotImplementedError

    def _predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Standardised features ``(n, D)`` → mean ``(n, G)``, s.d. or ``None``, samples ``(n, S, G)`` or ``None``."""
        raise NotImplementedError

    def _hyperparameters(self) -> dict[str, Any]:
        return {}

    def _fit_results(self) -> dict[str, Any]:
        """What ``_fit`` chose from the data (plain types), recorded in ``fit_params_`` and ``uns[key]["params"]``."""
        return {}

    # ------------------------------------------------------------------ public
    def fit(
        self,
        adata: AnnData,
        *,
        genes: Sequence[str] | None = None,
        features_key: str = "X_histology",
        views_key: str | None = None,
        section_key: str | None = None,
        layer: str | None = None,
        target_scale: Literal["log2p1", "log1p_cp10k"] = "log2p1",
        allow_non_integer: bool = False,
    ) -> Baseline:
        r"""Fit on the spots of ``adata``.

        Parameters
        ----------
        adata
            Training spots: raw counts (``layer`` or ``X``) and image features.
        genes
            Panel genes to predict (default: all ``var_names``).
        features_key
            ``obsm`` key of the ``(n_spots, D)`` features.
        views_key
            Optional ``obsm`` key of ``(n_spots, V, D)`` augmented views, each a training sample.
        section_key
            Optional ``obs`` column naming the tissue section of each spot. Baselines that choose
            hyper-parameters by cross-validation then hold out whole sections (views repeat their spot's
            section); ``None`` gives them only the spots.
        layer
            Layer with raw counts; ``None`` uses ``X``.
        target_scale
            ``"log2p1"`` (:math:`\log_2(x+1)`) or ``"log1p_cp10k"`` (library = all genes of the spot).
        allow_non_integer
            Accept non-negative non-integer counts: for corrected non-integer counts, e.g. ambient-RNA corrected.

        Returns
        -------
        The fitted baseline.

        Raises
        ------
        KeyError
            If a key or gene is missing, or ``section_key`` is not a column of ``adata.obs``.
        ValueError
            If ``adata`` has no spots, ``genes`` is empty, ``obs[section_key]`` has missing values, ``target_scale``
            is unknown, the counts are not raw integer counts (unless ``allow_non_integer``), or no spot has panel
            counts.
        """
        check_scale(target_scale)
        check_n_obs(adata)
        check_genes_given(genes, argument="genes")
        if layer is not None and layer not in adata.layers:
            raise KeyError(f"`layer={layer!r}` is not in `adata.layers` (available: {list(adata.layers)}).")
        genes = list(adata.var_names) if genes is None else [str(g) for g in genes]
        check_genes(genes, adata.var_names, argument="genes", where="`adata.var_names`")
        feats = check_obsm(adata, features_key, argument="features_key", ndim=2)
        views = check_obsm(adata, views_key, argument="views_key", ndim=3) if views_key is not None else None
        if views is not None and views.shape[2] != feats.shape[1]:
            raise ValueError(
                f"`adata.obsm[{views_key!r}]` has width {views.shape[2]} but `adata.obsm[{features_key!r}]` has "
                f"{feats.shape[1]}; pass views of the same encoder."
            )
        sections = self._sections(adata, section_key)
        x = adata.X if layer is None else adata.layers[layer]
        where = f"`adata.{'X' if layer is None else f'layers[{layer!r}]'}`"
        check_counts(x, where=where, allow_non_integer=allow_non_integer)
        panel = panel_counts(x, adata.var_names, genes, purpose="fitting", stacklevel=4)
        keep, library = panel.keep, panel.library
        y = to_model_scale(panel.counts, target_scale, library_size=library)
        if views is not None:
            n_views = views.shape[1]
            xs = views[keep].reshape(-1, views.shape[2])
            y, spots = np.repeat(y, n_views, axis=0), np.repeat(keep, n_views)
        else:
            xs, spots = feats[keep], keep
        groups = None if sections is None else sections[spots]
        self.feature_mean_ = xs.mean(0)
        sd = xs.std(0)
        self.feature_std_ = np.where(sd > 0, sd, 1.0)
        self.genes_, self.features_key_, self.target_scale_ = genes, features_key, target_scale
        self.n_features_ = feats.shape[1]
        self._fit(self._standardise(xs), y, spots, groups)
        self.fit_params_ = {
            "n_spots": len(keep),
            "n_samples": len(xs),
            "views_key": views_key,
            "section_key": section_key,
            "layer": layer,
            **self._fit_results(),
        }
        self.is_fitted_ = True
        logger.info("Fitted %s on %d spots (%d samples) × %d genes.", self.name, len(keep), len(xs), len(genes))
        return self

    @staticmethod
    def _sections(adata: AnnData, section_key: str | None) -> np.ndarray | None:
        if section_key is None:
            return None
        if section_key not in adata.obs:
            raise KeyError(f"`section_key={section_key!r}` is not a column of `adata.obs`; pass one, or None.")
        sections = adata.obs[section_key]
        if sections.isna().any():
            raise ValueError(
                f"`adata.obs[{section_key!r}]` has {int(sections.isna().sum())} missing values; name the section of "
                "every spot, or pass `section_key=None`."
            )
        return sections.astype(str).to_numpy()

    def _standardise(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, dtype=np.float64) - self.feature_mean_) / self.feature_std_).astype(np.float32)

    def _features(self, adata: AnnData, features_key: str | None) -> np.ndarray:
        if not self.is_fitted_:
            raise RuntimeError(f"This {type(self).__name__} is not fitted; call `.fit(adata_train, genes=...)` first.")
        check_n_obs(adata)
        key = features_key or self.features_key_
        feats = check_obsm(adata, key, argument="features_key", ndim=2)
        if feats.shape[1] != self.n_features_:
            raise ValueError(
                f"`adata.obsm[{key!r}]` has {feats.shape[1]} features; the baseline was fitted on {self.n_features_}. "
                "Compute the features with the same encoder."
            )
        return self._standardise(feats)

    def generate(self, adata: AnnData, *, features_key: str | None = None) -> Prediction:
        """Predict panel expression of the spots of ``adata`` from their image features (as :meth:`HINGE.generate`).

        Parameters
        ----------
        adata
            Spots with ``obsm[features_key]`` (measured genes are not needed).
        features_key
            Default: the key used in :meth:`fit`.

        Returns
        -------
        :class:`~hinge_sc.model.Prediction` labelled with ``adata.obs_names`` and the panel genes (``std`` and
        ``samples`` ``None`` for a point estimator).
        """
        mean, std, samples = self._predict(self._features(adata, features_key))
        index, columns = pd.Index(adata.obs_names), pd.Index(self.genes_)
        return Prediction(
            mean=pd.DataFrame(mean, index=index, columns=columns),
            std=None if std is None else pd.DataFrame(std, index=index, columns=columns),
            samples=samples,
            seed=self.seed if self.stochastic else None,
        )

    def get_expression(
        self,
        adata: AnnData,
        *,
        features_key: str | None = None,
        gene_list: Sequence[str] | None = None,
        return_std: bool = False,
        return_samples: bool = False,
    ) -> pd.DataFrame | tuple:
        """Predicted expression, returned as :meth:`hinge_sc.HINGE.get_expression` returns it.

        Parameters
        ----------
        adata, features_key
            As :meth:`generate`.
        gene_list
            Only these panel genes (default: the panel).
        return_std, return_samples
            Also return the s.d. (``None`` for a point estimator) and the ``(n_spots, S, G)`` samples.

        Returns
        -------
        ``mean`` (spots × genes DataFrame), or the tuple ``(mean, std)``, ``(mean, samples)`` or
        ``(mean, std, samples)``.
        """
        out = self.generate(adata, features_key=features_key)
        genes = list(self.genes_) if gene_list is None else list(gene_list)
        absent = [g for g in genes if g not in out.mean.columns]
        if absent:
            raise KeyError(f"`gene_list` has genes the baseline does not predict: {absent[:20]}.")
        columns = out.mean.columns.get_indexer(genes)
        result: list = [out.mean.iloc[:, columns]]
        if return_std:
            result.append(None if out.std is None else out.std.iloc[:, columns])
        if return_samples:
            result.append(None if out.samples is None else out.samples[:, :, columns])
        return result[0] if len(result) == 1 else tuple(result)

    def predict(
        self,
        adata: AnnData,
        *,
        features_key: str | None = None,
        key_added: str | None = None,
        save_samples: bool = False,
        overwrite: bool = False,
        copy: bool = False,
    ) -> AnnData | None:
        """Write predictions into ``adata`` the way :func:`hinge_sc.tl.generate` does.

        Parameters
        ----------
        adata
            Spots to predict.
        features_key
            ``obsm`` key of the features (default: the key used in :meth:`fit`).
        key_added
            Prefix of the keys written; default the method's :attr:`name`.
        save_samples
            Also write ``obsm[key_added + "_samples"]`` (methods with samples only).
        overwrite
            Replace existing keys.
        copy
            Work on a copy and return it.

        Returns
        -------
        The AnnData if ``copy=True``, else ``None``. Writes ``obsm[key_added]`` (DataFrame, spots × panel
        genes, model scale), ``obsm[key_added + "_std"]`` when the method has a spread,
        ``obsm[key_added + "_samples"]`` with ``save_samples``, and ``uns[key_added]["params"]`` (method,
        hyper-parameters, seed, ``target_scale``, genes).

        Raises
        ------
        KeyError
            If a key exists and ``overwrite`` is false.
        """
        key_added = self.name if key_added is None else key_added
        adata = prepare_target(adata, key_added, overwrite=overwrite, copy=copy)
        out = self.generate(adata, features_key=features_key)
        params = {
            "method": self.name,
            **self._hyperparameters(),
            "seed": self.seed,
            "features_key": features_key or self.features_key_,
            "target_scale": self.target_scale_,
            "genes": list(self.genes_),
            **self.fit_params_,
        }
        write_prediction(adata, out, key_added, params=params, save_samples=save_samples and out.samples is not None)
        return adata if copy else None

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self._hyperparameters().items())
        return f"{type(self).__name__}({params})"
