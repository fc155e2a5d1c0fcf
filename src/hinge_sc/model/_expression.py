"""What a trained model returns without writing into the data: scvi-tools' ``get_*`` and posterior predictive samples.

:class:`ExpressionMixin` gives :class:`~hinge_sc.HINGE` the methods scvi-tools users call on a model —
``get_expression``, ``get_normalized_expression`` and ``posterior_predictive_sample`` (with scvi-tools' meaning: counts,
spots × genes × samples, so :class:`scvi.criticism.PosteriorPredictiveCheck` runs on a HINGE model) — all through
:meth:`HINGE.generate`, the one generation path.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hinge_sc._scales import CP10K, rescale_total, to_counts
from hinge_sc._validators import check_genes_given, check_indices
from hinge_sc.pp._spatialdata import resolve_table

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anndata import AnnData
    from spatialdata import SpatialData

    from hinge_sc.module import GenerationConfig

    from ._prediction import Prediction

logger = logging.getLogger(__name__)


class ExpressionMixin:
    """``get_expression``, ``get_normalized_expression`` and ``posterior_predictive_sample`` of a generator."""

    def _gene_columns(self, gene_list: Sequence[str] | None) -> list[int]:
        """Column indices of ``gene_list`` in the panel (all panel genes for ``None``)."""
        if gene_list is None:
            return list(range(len(self.panel_genes_)))
        check_genes_given(gene_list, argument="gene_list")
        panel = pd.Index(self.panel_genes_)
        absent = [g for g in gene_list if g not in panel]
        if absent:
            raise KeyError(
                f"`gene_list` has genes the model does not generate: {absent[:20]}. The panel is `model.panel_genes_` "
                f"({len(panel)} genes, e.g. {list(panel[:5])})."
            )
        return list(panel.get_indexer(list(gene_list)))

    def _spots(self, adata: AnnData | SpatialData | None, indices: Sequence[int] | None, table_key: str | None):
        """The spots to generate: ``adata`` (or its table, or the registered data), restricted to ``indices``."""
        adata = resolve_table(type(self), self.adata if adata is None else adata, table_key)
        if adata is None:
            raise ValueError("Pass `adata`: this model was loaded without data.")
        if indices is not None:
            adata = adata[check_indices(indices, adata.n_obs, argument="indices")]
        return adata

    def get_expression(
        self,
        adata: AnnData | SpatialData | None = None,
        indices: Sequence[int] | None = None,
        *,
        table_key: str | None = None,
        gene_list: Sequence[str] | None = None,
        return_std: bool = False,
        return_samples: bool = False,
        config: GenerationConfig | None = None,
        **kwargs: Any,
    ) -> pd.DataFrame | tuple:
        """Generated expression of each spot on the model scale, returned (nothing is written into ``adata``).

        The mean over the samples of the reverse diffusion (:meth:`generate`), e.g. on log2(count + 1) for
        ``target_scale="log2p1"``. Use :func:`hinge_sc.tl.generate` to write it into the data instead.

        Parameters
        ----------
        adata
            AnnData with image features, or a SpatialData object (its table holds the spots); default: the
            registered data. Spots need no measured genes (H&E-only slides work).
        indices
            Positions of the spots to generate (default: all).
        table_key
            SpatialData: the table with the spots (default: the registered one, or the only one).
        gene_list
            Return only these panel genes (default: the whole panel, ``model.panel_genes_``).
        return_std
            Also return the s.d. over samples (spots × genes DataFrame, model scale).
        return_samples
            Also return the samples, ``(n_spots, n_samples, n_genes)`` array (model scale).
        config, **kwargs
            Generation settings and the other arguments of :meth:`generate` (``n_samples``, ``n_steps``, ``seed``,
            ``features_key``, ``show_progress_bar`` (default ``False`` here) …).

        Returns
        -------
        ``mean``: DataFrame, spots (``obs_names``) × genes; with ``return_std`` and/or ``return_samples`` the
        tuple ``(mean, std)``, ``(mean, samples)`` or ``(mean, std, samples)``, in that order.

        Raises
        ------
        IndexError
            A position in ``indices`` is out of range for the data (the message names it and the number of spots).

        Examples
        --------
        >>> mean = model.get_expression(adata_new, n_samples=8, seed=0)
        >>> mean, std = model.get_expression(adata_new, gene_list=["ERBB2"], return_std=True)
        """
        columns = self._gene_columns(gene_list)
        kwargs.setdefault("show_progress_bar", False)
        out = self.generate(self._spots(adata, indices, table_key), config=config, return_samples=return_samples,
                            **kwargs)  # fmt: skip
        result: list = [out.mean.iloc[:, columns]]
        if return_std:
            result.append(out.std.iloc[:, columns])
        if return_samples:
            result.append(out.samples[:, :, columns])
        return result[0] if len(result) == 1 else tuple(result)

    def _samples(self, adata, indices, table_key, config, kwargs) -> Prediction:
        kwargs.setdefault("show_progress_bar", False)
        config = (config or self.generation_config()).replace(clip=True)
        return self.generate(self._spots(adata, indices, table_key), config=config, return_samples=True, **kwargs)

    def get_normalized_expression(
        self,
        adata: AnnData | SpatialData | None = None,
        indices: Sequence[int] | None = None,
        *,
        table_key: str | None = None,
        gene_list: Sequence[str] | None = None,
        library_size: float = CP10K,
        return_mean: bool = True,
        return_numpy: bool | None = None,
        config: GenerationConfig | None = None,
        **kwargs: Any,
    ) -> pd.DataFrame | np.ndarray:
        """Expected expression of each spot's panel, rescaled to a common library size (scvi-tools' meaning).

        As :meth:`scvi.model.SCVI.get_normalized_expression`: each generated sample is taken back from the model
        scale to counts (``2^v − 1`` for log2(count + 1), ``e^v − 1`` for log1p CP10k; clipped at 0), divided by
        its total over the **panel** genes (HINGE models only the panel) and multiplied by ``library_size``; the
        result is on the counts scale (not logged) and averaged over samples with ``return_mean``. Spots whose
        samples are all zero get 0. Nothing is written into ``adata``.

        Parameters
        ----------
        adata, indices, table_key
            As :meth:`get_expression`.
        gene_list
            Return only these panel genes (they are normalised over the whole panel first, as in scvi-tools).
        library_size
            Total each spot's panel is rescaled to (scvi-tools' default is 1, frequencies; here 10⁴, CP10k).
        return_mean
            Average over samples; ``False`` returns every sample.
        return_numpy
            Return an array instead of a DataFrame; default ``False``, except with ``return_mean=False`` and
            ``n_samples > 1`` (a 3-D result), as in scvi-tools.
        config, **kwargs
            As :meth:`get_expression` (``n_samples``, ``seed`` …).

        Returns
        -------
        DataFrame spots × genes (or its array), or with ``return_mean=False`` and ``n_samples > 1`` an array
        ``(n_samples, n_spots, n_genes)`` (samples first, as in scvi-tools).
        """
        if isinstance(library_size, bool) or not isinstance(library_size, int | float) or not library_size > 0:
            raise ValueError(
                f"`library_size` must be a positive number (e.g. 1e4 for counts per 10,000), found {library_size!r}."
            )
        columns = self._gene_columns(gene_list)
        out = self._samples(adata, indices, table_key, config, kwargs)
        counts = to_counts(out.samples, self.module.target_scale)  # (n_spots, S, G), clipped at 0
        normalized = rescale_total(counts, float(library_size))[:, :, columns].astype(np.float32)
        if not return_mean and normalized.shape[1] > 1:
            return np.moveaxis(normalized, 1, 0)
        values = normalized.mean(axis=1)
        if return_numpy:
            return values
        return pd.DataFrame(values, index=out.mean.index, columns=out.mean.columns[columns])

    def posterior_predictive_sample(
        self,
        adata: AnnData | SpatialData | None = None,
        indices: Sequence[int] | None = None,
        n_samples: int = 1,
        gene_list: Sequence[str] | None = None,
        batch_size: int | None = None,
        *,
        table_key: str | None = None,
        config: GenerationConfig | None = None,
        **kwargs: Any,
    ):
        r"""Counts drawn from the model for each spot: ``(n_spots, n_genes, n_samples)``, scvi-tools' meaning.

        As :meth:`scvi.model.SCVI.posterior_predictive_sample`, so :class:`scvi.criticism.PosteriorPredictiveCheck`
        compares them with the measured counts. Each generated sample is taken from the model scale back to counts
        (:func:`hinge_sc._scales.to_counts`; for ``log1p_cp10k`` at the training median depth) and rounded; with
        ``likelihood="nb"`` the reveal steps draw counts, so these are the model's own count samples. The counts are
        at the depth the model generates at (the training spots' median library size): compare them with measured
        counts on a depth-normalised statistic, or give ``library_size`` to :func:`hinge_sc.tl.generate`.

        Parameters
        ----------
        adata, indices, table_key
            As :meth:`get_expression`.
        n_samples
            Samples per spot.
        gene_list
            Only these panel genes (default: the panel).
        batch_size
            Spots per batch (does not change the values).
        config, **kwargs
            Other generation settings (``seed``, ``n_steps`` …).

        Returns
        -------
        :class:`sparse.GCXS` ``(n_spots, n_genes, n_samples)`` of integer counts (a 2-D array for ``n_samples=1``
        is not squeezed: scvi-tools' criticism reads 3-D samples), as scvi-tools returns.
        """
        import sparse

        columns = self._gene_columns(gene_list)
        config = (config or self.generation_config()).replace(n_samples=n_samples, batch_size=batch_size)
        out = self._samples(adata, indices, table_key, config, kwargs)
        counts = np.rint(to_counts(out.samples, self.module.target_scale) * self._depth_factor())[:, :, columns]
        return sparse.GCXS.from_numpy(np.moveaxis(counts, 1, 2).astype(np.float32, copy=False))

    def _depth_factor(self) -> float:
        """Counts per unit of :func:`~hinge_sc._scales.to_counts` (the training median depth / 10⁴ on log1p CP10k)."""
        if self.module.target_scale == "log1p_cp10k":
            return float(self.train_params_.get("median_library_size") or CP10K) / CP10K
        return 1.0
