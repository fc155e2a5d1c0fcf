"""Write generated expression into AnnData."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

from ._write import prepare_target, write_prediction

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

    from hinge_sc.model import HINGE

logger = logging.getLogger(__name__)


def generate(
    model: HINGE,
    adata: AnnData | SpatialData | None = None,
    *,
    table_key: str | None = None,
    features_key: str | None = None,
    n_samples: int = 8,
    n_steps: int | None = None,
    key_added: str = "hinge",
    save_samples: bool = False,
    overwrite: bool = False,
    copy: bool = False,
    seed: int | None = None,
    batch_size: int = 64,
    precision: Literal["32", "bf16"] = "32",
    reveal: Literal["mean", "sample"] | None = None,
    mean_estimate: Literal["expected", "samples"] = "expected",
    show_progress_bar: bool = True,
) -> AnnData | None:
    """Generate spot expression from histology with a trained :class:`~hinge_sc.HINGE` model.

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
    features_key
        ``obsm`` key of the ``(n_spots, D)`` image features (default: the key the model was set up with).
    n_samples
        Samples per spot; the point prediction is their mean and the uncertainty their s.d.
    n_steps
        Reverse diffusion steps (≤ the model's ``n_steps``).
    key_added
        Prefix of the keys written.
    save_samples
        Also write the ``(n_spots, n_samples, n_genes)`` samples.
    overwrite
        Replace existing keys.
    copy
        Work on a copy of ``adata`` and return it.
    seed
        Sampler seed (drawn and recorded when ``None``).
    batch_size
        Spots per batch.
    precision
        ``"bf16"`` runs the denoiser under bfloat16 autocast (see :meth:`hinge_sc.HINGE.generate`).
    reveal
        ``"mean"`` or ``"sample"`` (see :meth:`hinge_sc.HINGE.generate`); ``None`` picks by the model's likelihood.
    mean_estimate
        ``"expected"`` (Rao–Blackwellised) or ``"samples"`` (see :meth:`hinge_sc.HINGE.generate`).
    show_progress_bar
        Show a progress bar.

    Returns
    -------
    The AnnData with generated expression if ``copy=True``, else ``None``. Writes

    - ``adata.obsm[key_added]``: DataFrame, spots × panel genes, mean over samples (model scale, e.g. log2(count+1));
    - ``adata.obsm[f"{key_added}_std"]``: DataFrame, s.d. over samples;
    - ``adata.obsm[f"{key_added}_samples"]``: ``(n_spots, n_samples, n_genes)``, if ``save_samples``;
    - ``adata.uns[key_added]["params"]``: the arguments, the seed used and the model's settings.

    Keys of an earlier run under ``key_added`` that this run does not write (e.g. ``_samples``) are removed, so
    the stored mean, s.d. and samples always come from one run.

    Raises
    ------
    KeyError
        A key of ``key_added`` (mean, ``_std``, ``_samples`` or ``uns``) exists and ``overwrite=False``.

    Examples
    --------
    >>> hs.tl.generate(model, adata_new, n_samples=8, seed=0)
    >>> adata_new.obsm["hinge"]["ERBB2"]
    """
    if adata is None:
        adata = model.adata
        if adata is None:
            raise ValueError("Pass `adata`: this model has no AnnData attached.")
    adata = prepare_target(adata, key_added, table_key=table_key, model_cls=type(model), overwrite=overwrite, copy=copy)
    out = model.generate(
        adata,
        features_key=features_key,
        n_samples=n_samples,
        n_steps=n_steps,
        batch_size=batch_size,
        seed=seed,
        return_samples=save_samples,
        precision=precision,
        reveal=reveal,
        mean_estimate=mean_estimate,
        show_progress_bar=show_progress_bar,
    )
    module = model.module
    params = {
        "features_key": features_key or model.setup_args["features_key"],
        "n_samples": n_samples,
        "n_steps": n_steps if n_steps is not None else module.n_steps,
        "n_steps_train": module.n_steps,
        "seed": out.seed,
        "randomness": "per spot: (seed, obs name)",
        "batch_size": batch_size,
        "precision": precision,
        "target_scale": module.target_scale,
        "mask_fill": module.mask_fill,
        "likelihood": module.likelihood,
        "reveal": module.resolve_reveal(reveal),
        "mean_estimate": mean_estimate,
        "variance_scale": model.train_params_.get("variance_scale"),
        "mask_mechanism": module.denoiser.mask_mechanism,
        "genes": list(model.panel_genes_),
        "backbone": dict(model.backbone_info_),
    }
    write_prediction(adata, out, key_added, params=params, save_samples=save_samples)
    return adata if copy else None
