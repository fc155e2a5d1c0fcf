"""Write generated expression into AnnData."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hinge_sc._scales import SCALE_FLOOR
from hinge_sc._validators import check_key_free
from hinge_sc.model import GenerationConfig
from hinge_sc.pp._spatialdata import is_spatialdata

from ._new_slide import to_new_slide
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
    level_sd: float | pd.Series | None = None,
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
    level_sd
        On log2(count + 1): each gene's level on this slide is unknown too, beyond the depth — patients differ in
        tissue composition (her2st: immunoglobulin genes are :math:`e^5` times rarer in A1 than in patient C, whose
        plasma cells a model trained on C learned). Each sample draws, per gene, one log-normal factor of this s.d.
        shared by all spots, applied to the counts with the depth (thinned or scaled); the mean is not moved.
        ``None`` (default) or 0: off — the variance scale, fitted on a held-out section of the training patient,
        already covers how the levels of that patient's sections differ. For a slide of another patient use
        ``hs.tl.level_spread(reference)`` (a Series of s.d. by gene, from sequenced sections of several patients;
        genes it lacks get its median) or one number for every gene. Recorded (median, range) in
        ``uns[key_added]["params"]["library_size"]["level_sd"]``; docs/method.md §6.2.
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
    out, depth = to_new_slide(model, adata, out, library_size=library_size, depth_sd=depth_sd, level_sd=level_sd,
                              n_samples=config.n_samples)  # fmt: skip
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
