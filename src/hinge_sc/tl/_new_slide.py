"""Generated expression moved to a new slide: its sequencing depth and its genes' levels (docs/method.md §6.1–6.2).

A model trained on some sections generates at their depth and composition. A new slide differs in both, by amounts
its image does not show: the depth is given when the slide was sequenced (``library_size``), or taken as unknown
with a spread (``depth_sd``); each gene's level may also differ by a factor of unknown size (``level_sd``). The
spreads are measured on sequenced sections, with or without images (:func:`depth_spread`, :func:`level_spread`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hinge_sc._random import spot_seeds
from hinge_sc._scales import (
    depth_log_sd,
    depth_sd_of_values,
    level_log_sd,
    shift_depth,
    shift_depth_std,
    thin_to_depth,
    thinning_sd,
)

if TYPE_CHECKING:
    from anndata import AnnData

    from hinge_sc.model import HINGE, Prediction

logger = logging.getLogger(__name__)


def to_new_slide(
    model: HINGE, adata: AnnData, out: Prediction, *, library_size: Any, depth_sd: Any, level_sd: Any, n_samples: int
) -> tuple[Prediction, dict]:
    """``out`` moved to the depth and gene levels of the slide ``adata`` (see :func:`hinge_sc.tl.generate`), and
    the record of it for ``uns[key]["params"]["library_size"]``."""
    ratio, record = _given_depth(model, adata, library_size)
    sample_ratio = None
    if library_size is None:
        sample_ratio, depth_sd, record = _unknown_depth(model, record, depth_sd, out.seed, n_samples)
    level, sigma, record = _unknown_level(model, record, level_sd, out, n_samples)
    if ratio is None and sample_ratio is None and level is None:
        return out, record
    mean0 = out.mean.to_numpy(dtype=np.float64)
    mean = mean0 if ratio is None else shift_depth(mean0, ratio)
    if out.samples is not None:  # thinned to a shallower depth: the sampling noise of that depth (docs §6.1)
        n = len(mean)
        full = np.ones((1, 1, 1))
        if ratio is not None:
            full = full * np.broadcast_to(np.asarray(ratio, dtype=np.float64), (n,))[:, None, None]
        if sample_ratio is not None:
            full = full * sample_ratio[None, :, None]
        if level is not None:
            full = full * level[None]
        return _moved(out, mean, full), record
    var = np.zeros_like(mean0)
    std = out.std.to_numpy(dtype=np.float64)
    if ratio is not None:
        var += shift_depth_std(mean0, std, ratio) ** 2 + thinning_sd(mean0, ratio) ** 2
    else:
        var += std**2
    if sample_ratio is not None:
        var += depth_sd_of_values(mean0, depth_sd) ** 2
        var += sum(thinning_sd(mean0, r) ** 2 for r in sample_ratio) / n_samples  # one (n_spots, G) array at a time
    if sigma is not None:
        var += depth_sd_of_values(mean, sigma[None, :]) ** 2
    index, columns = out.mean.index, out.mean.columns
    mean_df, std_df = (pd.DataFrame(v.astype(np.float32), index=index, columns=columns) for v in (mean, np.sqrt(var)))
    return out._replace(mean=mean_df, std=std_df), record


def _given_depth(model: HINGE, adata: AnnData, library_size: Any) -> tuple[np.ndarray | None, dict]:
    """The ratio of the slide's depth to the training depth (``library_size`` of :func:`generate`; ``None`` when
    not given or not applicable), and its record."""
    train_depth = model.train_params_.get("median_library_size")
    record: dict[str, Any] = {"training_median": train_depth}
    if library_size is None:
        record["source"] = "training median"
        return None, record
    if isinstance(library_size, str):
        if library_size != "observed":
            raise ValueError(
                f"`library_size` must be None, a number, 'observed' or one value per spot, found {library_size!r}."
            )
        if adata.n_vars == 0:
            raise ValueError("`library_size='observed'` needs measured counts in `adata.X`; this slide has no genes.")
        depth = np.asarray(adata.X.sum(axis=1), dtype=np.float64).ravel()
        record["source"] = "observed (total counts of adata.X)"
    else:
        depth = np.asarray(library_size, dtype=np.float64)
        if depth.ndim > 1 or (depth.ndim == 1 and len(depth) != adata.n_obs):
            raise ValueError(
                f"`library_size` must be one number or one value per spot ({adata.n_obs}), found shape {depth.shape}."
            )
        record["source"] = "given"
    if not np.isfinite(depth).all() or (depth <= 0).any():
        raise ValueError("`library_size` must be finite and > 0 for every spot (total UMI per spot).")
    record["median"] = float(np.median(depth))
    if model.module.target_scale != "log2p1":
        record["note"] = f"not applied: the {model.module.target_scale} scale is depth-normalised"
        return None, record
    if train_depth is None:
        raise ValueError("`library_size` needs a model trained with this version (no training depth is recorded).")
    return depth / float(train_depth), record


def _unknown_depth(
    model: HINGE, record: dict, depth_sd: Any, seed: int, n_samples: int
) -> tuple[np.ndarray | None, float, dict]:
    """One log-normal depth factor per sample (``depth_sd`` of :func:`generate`; ``None`` when off), the s.d. used
    and the record."""
    if depth_sd is None:
        depth_sd = model.train_params_.get("depth_log_sd") or 0.0
    if isinstance(depth_sd, bool) or not isinstance(depth_sd, int | float) or not np.isfinite(depth_sd) or depth_sd < 0:
        raise ValueError(f"`depth_sd` must be a number ≥ 0 (s.d. of the log depth ratio), found {depth_sd!r}.")
    record = {**record, "depth_sd": float(depth_sd)}
    if depth_sd == 0 or model.module.target_scale != "log2p1" or model.train_params_.get("median_library_size") is None:
        return None, float(depth_sd), record
    record["source"] = f"training median, unknown: log-normal with s.d. {depth_sd:.3g} of the log ratio"
    ratio = np.exp(depth_sd * np.random.default_rng([seed, n_samples, 1]).standard_normal(n_samples))
    return ratio, float(depth_sd), record


def _unknown_level(
    model: HINGE, record: dict, level_sd: Any, out: Prediction, n_samples: int
) -> tuple[np.ndarray | None, np.ndarray | None, dict]:
    """``(S, G)`` log-normal factors of each gene's level per sample (``level_sd`` of :func:`generate`), the
    ``(G,)`` s.d. and the record; ``None``, ``None`` when off."""
    genes = list(out.mean.columns)
    sigma = _level_sigma(level_sd, genes)
    if sigma is None:
        return None, None, record
    record = {**record, "level_sd": {"median": float(np.median(sigma)), "min": float(sigma.min()),
                                     "max": float(sigma.max())}}  # fmt: skip
    if model.module.target_scale != "log2p1":
        record["level_sd"]["note"] = f"not applied on the {model.module.target_scale} scale"
        return None, None, record
    z = np.random.default_rng([out.seed, n_samples, 2]).standard_normal((n_samples, len(genes)))
    return np.exp(sigma[None, :] * z), sigma, record


def _level_sigma(level_sd: Any, genes: list[str]) -> np.ndarray | None:
    """``level_sd`` as one s.d. per gene of ``genes``, or ``None`` when it is off."""
    if level_sd is None:
        return None
    if isinstance(level_sd, dict):
        level_sd = pd.Series(level_sd, dtype=np.float64)
    if isinstance(level_sd, pd.Series):
        found = level_sd.reindex(genes)
        missing = int(found.isna().sum())
        known = found.dropna()
        if len(known) == 0:
            raise ValueError(
                "`level_sd` names none of the model's genes; give one s.d. per gene indexed by gene name "
                f"(e.g. hs.tl.level_spread(reference)), found index {list(level_sd.index[:5])}…"
            )
        if missing:
            logger.warning("level_sd: %d of %d genes have no value; they get the median, %.3g", missing, len(genes),
                           float(known.median()))  # fmt: skip
        sigma = found.fillna(known.median()).to_numpy(dtype=np.float64)
    elif isinstance(level_sd, bool) or not isinstance(level_sd, int | float):
        raise TypeError(
            f"`level_sd` must be None, a number ≥ 0 or a pandas Series of s.d. by gene "
            f"(hs.tl.level_spread(reference)), found {type(level_sd).__name__}."
        )
    else:
        sigma = np.full(len(genes), float(level_sd))
    if not np.isfinite(sigma).all() or (sigma < 0).any():
        raise ValueError("`level_sd` must be finite and ≥ 0 for every gene (s.d. of the log level factor).")
    return None if not sigma.any() else sigma


def _moved(out: Prediction, mean: np.ndarray, ratio: np.ndarray) -> Prediction:
    """``out`` with samples thinned or scaled to ``ratio`` × the training depth
    (:func:`~hinge_sc._scales.thin_to_depth`, per-spot seeds), the s.d. of those samples and the given ``mean``."""
    seeds = spot_seeds(out.seed, [f"{name}|depth" for name in out.mean.index])
    samples = thin_to_depth(out.samples, ratio, seeds)
    index, columns = out.mean.index, out.mean.columns
    mean, std = (pd.DataFrame(v.astype(np.float32), index=index, columns=columns) for v in (mean, samples.std(axis=1)))
    return out._replace(mean=mean, std=std, samples=samples)


def _counts(adata: AnnData, section_key: str, layer: str | None):
    if section_key not in adata.obs:
        raise KeyError(f"`section_key={section_key!r}` is not a column of `adata.obs`; name the section column.")
    x = adata.X if layer is None else adata.layers[layer]
    return x, np.asarray(x.sum(axis=1), dtype=np.float64).ravel(), adata.obs[section_key].astype(str).to_numpy()


def _too_few(adata: AnnData, section_key: str) -> ValueError:
    return ValueError(
        f"`adata` must have at least two sections with counts in `obs[{section_key!r}]` to measure a spread, "
        f"found {adata.obs[section_key].nunique()}."
    )


def depth_spread(adata: AnnData, *, section_key: str = "section", layer: str | None = None) -> float:
    r"""The spread of sequencing depth between the sections of ``adata``, for ``depth_sd`` of :func:`generate`.

    The s.d. of :math:`\ln` of each section's median total count per spot (:func:`hinge_sc._scales.depth_log_sd`).
    Any sequenced sections serve, with or without images: give sections of several patients to get the spread a
    slide of a new patient may have.

    Parameters
    ----------
    adata
        Spots with raw counts in ``X`` (or ``layer``), over all measured genes.
    section_key
        Column of ``obs`` with the section of each spot.
    layer
        Layer with the counts; ``None`` uses ``X``.

    Returns
    -------
    The s.d. in natural-log units (her2st patient C: 0.17; sections of patients C–H: 0.73).

    Examples
    --------
    >>> reference = hs.datasets.her2st(["C1", "D1", "E1", "F1", "G2", "H1"], images=False)
    >>> hs.tl.generate(model, adata_new_patient, depth_sd=hs.tl.depth_spread(reference))
    """
    _, library, sections = _counts(adata, section_key, layer)
    sd = depth_log_sd(library, sections)
    if sd is None:
        raise _too_few(adata, section_key)
    return sd


def level_spread(
    adata: AnnData, *, section_key: str = "section", layer: str | None = None, pseudocount: float = 0.5
) -> pd.Series:
    r"""The spread of each gene's level between the sections of ``adata``, for ``level_sd`` of :func:`generate`.

    Per gene, the s.d. over sections of :math:`\ln` of the share of the section's counts the gene takes
    (:func:`hinge_sc._scales.level_log_sd`): how much a gene's level differs between slides when depth is set
    aside — tissue composition, patient, protocol. Any sequenced sections serve, with or without images: sections of
    several patients give the spread a slide of a new patient may have (her2st sections of patients C–H: median
    0.53 over the genes of a 200-gene panel of patient C).

    Parameters
    ----------
    adata
        Spots with raw counts in ``X`` (or ``layer``), over all measured genes (the share is of the spot's total).
    section_key
        Column of ``obs`` with the section of each spot.
    layer
        Layer with the counts; ``None`` uses ``X``.
    pseudocount
        Counts added to a gene's total in each section (a gene absent from a section keeps a finite level).

    Returns
    -------
    s.d. in natural-log units, indexed by gene (``adata.var_names``), named ``"level_sd"``.

    Examples
    --------
    >>> reference = hs.datasets.her2st(["C1", "D1", "E1", "F1", "G2", "H1"], images=False)
    >>> hs.tl.generate(model, adata_new_patient, depth_sd=hs.tl.depth_spread(reference),
    ...                level_sd=hs.tl.level_spread(reference))
    """
    if isinstance(pseudocount, bool) or not isinstance(pseudocount, int | float) or not pseudocount > 0:
        raise ValueError(f"`pseudocount` must be a number > 0 (counts), found {pseudocount!r}.")
    x, library, sections = _counts(adata, section_key, layer)
    sd = level_log_sd(x, library, sections, pseudocount=float(pseudocount))
    if np.isnan(sd).all() and adata.n_vars:
        raise _too_few(adata, section_key)
    return pd.Series(sd, index=adata.var_names.copy(), name="level_sd")
