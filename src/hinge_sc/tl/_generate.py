"""Write generated expression into AnnData."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hinge_sc._random import spot_seeds
from hinge_sc._scales import (
    SCALE_FLOOR,
    depth_log_sd,
    depth_sd_of_values,
    shift_depth,
    shift_depth_std,
    thin_to_depth,
    thinning_sd,
)
from hinge_sc._validators import check_key_free
from hinge_sc.model import GenerationConfig
from hinge_sc.pp._spatialdata import is_spatialdata

from ._to_adata import generated_table
from ._write import prepare_target, write_prediction

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anndata import AnnData
    from spatialdata import SpatialData

    from hinge_sc.model import HINGE, Prediction

logger = logging.getLogger(__name__)


def generate(
    model: HINGE,
    adata: AnnData | SpatialData | None = None,
    *,
    table_key: str | None = None,
    key_added: str = "hinge",
    save_samples: bool = False,
    overwrite: bool = False,
    copy: bool = False,
    library_size: float | str | Sequence[float] | np.ndarray | None = None,
    depth_sd: float | None = None,
    config: GenerationConfig | None = None,
    **kwargs: Any,
) -> AnnData | None:
    r"""Generate spot expression from histology with a trained :class:`~hinge_sc.HINGE` model.

    Works for sequenced sections and for H&E-only slides alike: only ``adata.obsm[features_key]`` is read.

    Parameters
    ----------
    model
        Trained model.
    adata
        Spots to generate (default: the model's AnnData), or a SpatialData object whose table holds the spots
        (results are written into that table).
    table_key
        SpatialData: the table with the spots (default: the table registered with the model, or the only one).
    key_added
        Prefix of the keys written.
    save_samples
        Also write the ``(n_spots, n_samples, n_genes)`` samples.
    overwrite
        Replace existing keys (and, with ``store``, a store hinge_sc wrote).
    copy
        Work on a copy of ``adata`` and return it.
    library_size
        Sequencing depth (total UMI per spot) to generate at, for a model on log2(count + 1), whose levels depend on
        depth: ``None`` — the median of the training spots (``model.train_params_["median_library_size"]``); a
        number — that depth for every spot; ``"observed"`` — each spot's measured total counts in ``adata.X`` (when
        the slide was sequenced); or one value per spot. Values are moved from the training depth with
        :func:`hinge_sc._scales.shift_depth`; recorded in ``uns[key_added]["params"]["library_size"]``. Patients
        differ in depth (her2st: A1 ≈ 4.3k, patient C 8.5k–12.4k UMI per spot) and no image tells it, so on a new
        patient give the depth when it is known, or compare on the depth-normalised scale
        (``hs.tl.evaluate(..., scale="log1p_cp10k")``), which this does not change.
    depth_sd
        With ``library_size=None`` on log2(count + 1): the slide's depth is unknown, and the samples and s.d. include
        that uncertainty — the depth is taken log-normal around the training median with this s.d. of
        :math:`\ln(L_\text{slide} / L_\text{train})`, one factor per sample shared by all spots (a section-wide
        depth; the mean is not moved). Default: ``model.train_params_["depth_log_sd"]``, the spread of the
        training sections' median depths (patient C: 0.17). For a slide of another patient use the spread between
        patients, e.g. ``hs.tl.depth_spread(reference)`` of sequenced sections of several patients (her2st C–H:
        0.73); 0 turns it off. Ignored when ``library_size`` is given. Recorded in
        ``uns[key_added]["params"]["library_size"]["depth_sd"]``.
    config
        Generation settings (:class:`~hinge_sc.model.GenerationConfig`).
    **kwargs
        Fields of ``config`` (``n_samples`` (8), ``n_steps`` (10 reverse steps), ``batch_size``, ``precision``,
        ``reveal``, ``clip``, ``mean_estimate``) and the other arguments of :meth:`hinge_sc.HINGE.generate`:
        ``features_key``, ``seed`` (drawn and recorded when ``None``), ``show_progress_bar``, ``store`` (a zarr store
        written block by block, for whole slides; resumable with ``resume=True``), ``devices``/``strategy``
        (several processes).

    Returns
    -------
    The AnnData with generated expression if ``copy=True``, else ``None``. Writes

    - ``adata.obsm[key_added]``: DataFrame, spots × panel genes, mean over samples (model scale, e.g. log2(count+1));
    - ``adata.obsm[f"{key_added}_std"]``: DataFrame, s.d. over samples;
    - ``adata.obsm[f"{key_added}_samples"]``: ``(n_spots, n_samples, n_genes)``, if ``save_samples``;
    - ``adata.uns[key_added]["params"]``: the arguments, the seed used and the model's settings.

    For a SpatialData object (``copy=False``) also ``sdata.tables[key_added]``: :func:`hinge_sc.tl.to_adata` of the
    table, annotating the same shapes (spatialdata's ``TableModel``), so that spatialdata-plot can colour the spots
    by a generated gene (``table_name=key_added``).

    Keys of an earlier run under ``key_added`` that this run does not write (e.g. ``_samples``) are removed, so
    the stored mean, s.d. and samples always come from one run.

    Raises
    ------
    KeyError
        A key of ``key_added`` (mean, ``_std``, ``_samples``, ``uns`` or, for SpatialData, the table) exists and
        ``overwrite=False``.

    Examples
    --------
    >>> hs.tl.generate(model, adata_new, n_samples=8, seed=0)
    >>> adata_new.obsm["hinge"]["ERBB2"]
    """
    if adata is None:
        adata = model.adata
        if adata is None:
            raise ValueError("Pass `adata`: this model has no AnnData attached.")
    sdata = adata if is_spatialdata(adata) and not copy else None
    adata = prepare_target(adata, key_added, table_key=table_key, model_cls=type(model), overwrite=overwrite, copy=copy)
    if sdata is not None:
        if sdata.tables.get(key_added) is adata:
            raise ValueError(
                f"`key_added={key_added!r}` is the name of the table with the spots; the generated table would "
                "replace it. Pass another `key_added`."
            )
        check_key_free(sdata.tables, key_added, where="sdata.tables", overwrite=overwrite)
    fields, rest = GenerationConfig.split(kwargs)
    config = model.generation_config(config, **fields)
    out = model.generate(adata, config=config, return_samples=save_samples, overwrite=overwrite, **rest)
    out, depth = _at_depth(model, adata, out, library_size)
    if library_size is None:
        out, depth = _unknown_depth(model, out, depth, depth_sd, config.n_samples)
    module = model.module
    store = rest.get("store")
    params = {
        "library_size": depth,
        "features_key": rest.get("features_key") or model.setup_args["features_key"],
        "n_samples": config.n_samples,
        "std_n_samples": config.n_samples,  # obsm[key + "_std"] is the s.d. (ddof 0) of these samples
        "n_steps": module.sampling_steps(config.n_steps),
        "n_steps_train": module.diffusion_steps,
        "seed": out.seed,
        "randomness": "per spot: (seed, obs name)",
        "batch_size": config.batch_size,
        "store": None if store is None else str(store),
        "precision": config.precision,
        "target_scale": module.target_scale,
        "mask_fill": module.mask_fill,
        "likelihood": module.likelihood.name,
        "reveal": module.resolve_reveal(config.reveal),
        "clipped_at": SCALE_FLOOR[module.target_scale] if config.clip else None,
        "mean_estimate": config.mean_estimate,
        "variance_scale": model.train_params_.get("variance_scale"),
        "mask_mechanism": module.denoiser.mask_mechanism,
        "genes": list(model.panel_genes_),
        "backbone": dict(model.backbone_info_),
    }
    write_prediction(adata, out, key_added, params=params, save_samples=save_samples)
    if sdata is not None:
        table = generated_table(adata, key_added)
        if table is not None:
            sdata.tables[key_added] = table
            logger.info("Wrote sdata.tables[%r] (spots × %d generated genes)", key_added, table.n_vars)
    return adata if copy else None


def _unknown_depth(
    model: HINGE, out: Prediction, record: dict, depth_sd: float | None, n_samples: int
) -> tuple[Prediction, dict]:
    """``out`` with the uncertainty of an unknown depth (see ``depth_sd`` of :func:`generate`), and its record."""
    if depth_sd is None:
        depth_sd = model.train_params_.get("depth_log_sd") or 0.0
    if isinstance(depth_sd, bool) or not isinstance(depth_sd, int | float) or not np.isfinite(depth_sd) or depth_sd < 0:
        raise ValueError(f"`depth_sd` must be a number ≥ 0 (s.d. of the log depth ratio), found {depth_sd!r}.")
    record = {**record, "depth_sd": float(depth_sd)}
    if depth_sd == 0 or model.module.target_scale != "log2p1" or model.train_params_.get("median_library_size") is None:
        return out, record
    record["source"] = f"training median, unknown: log-normal with s.d. {depth_sd:.3g} of the log ratio"
    ratio = np.exp(depth_sd * np.random.default_rng([out.seed, n_samples, 1]).standard_normal(n_samples))  # per sample
    if out.samples is not None:
        return _moved(out, out.mean.to_numpy(), ratio[None, :]), record
    mean = out.mean.to_numpy(dtype=np.float64)
    thinning = sum(thinning_sd(mean, r) ** 2 for r in ratio) / n_samples  # one (n_spots, G) array at a time
    extra = depth_sd_of_values(mean, depth_sd) ** 2 + thinning
    std = np.sqrt(out.std.to_numpy(dtype=np.float64) ** 2 + extra).astype(np.float32)
    return out._replace(std=pd.DataFrame(std, index=out.mean.index, columns=out.mean.columns)), record


def _moved(out: Prediction, mean: np.ndarray, ratio: np.ndarray) -> Prediction:
    """``out`` with samples thinned or scaled to ``ratio`` × the training depth
    (:func:`~hinge_sc._scales.thin_to_depth`, per-spot seeds), the s.d. of those samples and the given ``mean``."""
    seeds = spot_seeds(out.seed, [f"{name}|depth" for name in out.mean.index])
    samples = thin_to_depth(out.samples, ratio, seeds)
    index, columns = out.mean.index, out.mean.columns
    mean, std = (pd.DataFrame(v.astype(np.float32), index=index, columns=columns) for v in (mean, samples.std(axis=1)))
    return out._replace(mean=mean, std=std, samples=samples)


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
    if section_key not in adata.obs:
        raise KeyError(f"`section_key={section_key!r}` is not a column of `adata.obs`; name the section column.")
    x = adata.X if layer is None else adata.layers[layer]
    library = np.asarray(x.sum(axis=1), dtype=np.float64).ravel()
    sd = depth_log_sd(library, adata.obs[section_key].astype(str).to_numpy())
    if sd is None:
        raise ValueError(
            f"`adata` must have at least two sections with counts in `obs[{section_key!r}]` to measure a spread, "
            f"found {adata.obs[section_key].nunique()}."
        )
    return sd


def _at_depth(model: HINGE, adata: AnnData, out: Prediction, library_size: Any) -> tuple[Prediction, dict]:
    """``out`` moved from the training depth to ``library_size`` (see :func:`generate`), and the record of it."""
    train_depth = model.train_params_.get("median_library_size")
    record: dict[str, Any] = {"training_median": train_depth}
    if library_size is None:
        record["source"] = "training median"
        return out, record
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
        return out, record
    if train_depth is None:
        raise ValueError("`library_size` needs a model trained with this version (no training depth is recorded).")
    ratio = depth / float(train_depth)
    mean = shift_depth(out.mean.to_numpy(), ratio)
    if out.samples is not None:  # thinned to a shallower depth: the sampling noise of that depth (docs §6.1)
        r = np.broadcast_to(ratio, (len(mean),)) if np.ndim(ratio) == 0 else ratio
        return _moved(out, mean, r[:, None]), record
    std = np.sqrt(shift_depth_std(out.mean.to_numpy(), out.std.to_numpy(), ratio) ** 2
                  + thinning_sd(out.mean.to_numpy(), ratio) ** 2)  # fmt: skip
    index, columns = out.mean.index, out.mean.columns
    mean, std = (pd.DataFrame(v.astype(np.float32), index=index, columns=columns) for v in (mean, std))
    return out._replace(mean=mean, std=std), record
