"""A trained HINGE model as a LazySlide feature-prediction model (``zs.tl.feature_prediction(wsi, adapter)``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from hinge_sc.model import HINGE

logger = logging.getLogger(__name__)


class LazySlideAdapter:
    """Generate expression of LazySlide tiles with a trained HINGE model, from LazySlide's tile features.

    Follows LazySlide's ``FeaturePredictionModel`` interface (``lazyslide_models.base``: ``name``, ``model``,
    ``features_model_name``, ``needs_coords``, ``whole_slide``, ``predict(features, coords)``, ``to``,
    ``get_transform``, ``try_compile``), so ``zs.tl.feature_prediction(wsi, adapter, feature_key)`` writes the
    generated mean and s.d. of each panel gene to ``wsi.tables[key_added]`` (LazySlide's table of tile features; one
    column per output: ``"ERBB2"`` the mean, ``"ERBB2_std"`` the s.d., on the model scale, e.g. log2(count + 1)).

    The model must have been trained on the same kind of features as the tiles carry (e.g. UNI features of 55 µm
    spots for LazySlide's ``"uni"`` table of tiles of that size); a feature dimension that differs is an error.
    ``whole_slide`` is set: LazySlide then passes every tile in one call, and each tile draws its random numbers
    from a stream seeded by ``(seed, tile index)``, so values do not depend on LazySlide's batching (the model batches
    internally with ``batch_size``).

    Parameters
    ----------
    model
        A trained :class:`hinge_sc.HINGE`.
    name
        Name LazySlide gives the output table (``f"{name}_{tile_key}"`` unless ``key_added`` is given).
    features_model_name
        LazySlide's name of the vision model whose features the HINGE model was trained on (e.g. ``"uni"``); lets
        ``feature_prediction`` find the feature table without ``feature_key``.
    seed
        Seed of the sampler (recorded in :attr:`params_`).
    return_std
        Also output ``f"{gene}_std"`` columns.
    **generation
        Generation settings (:class:`hinge_sc.GenerationConfig` fields: ``n_samples``, ``n_steps``, ``batch_size``
        …) or ``config=``.

    Attributes
    ----------
    params_
        Provenance of the last prediction (the generation's settings, seed, model and backbone, units, number of
        tiles); store it next to LazySlide's table, e.g. ``wsi.tables[key].uns["hinge_sc"] = adapter.params_``.

    Examples
    --------
    >>> import lazyslide as zs
    >>> zs.pp.find_tissues(wsi); zs.pp.tile_tissues(wsi, tile_px=224, mpp=0.5); zs.tl.feature_extraction(wsi, "uni")
    >>> adapter = hs.tl.LazySlideAdapter(model, features_model_name="uni", n_samples=8)
    >>> zs.tl.feature_prediction(wsi, adapter, key_added="hinge")
    >>> wsi.tables["hinge"].uns["hinge_sc"] = adapter.params_
    """

    needs_coords = True
    whole_slide = True

    def __init__(
        self,
        model: HINGE,
        *,
        name: str = "hinge",
        features_model_name: str | None = None,
        seed: int = 0,
        return_std: bool = True,
        **generation: Any,
    ):
        from hinge_sc.model import HINGE

        if not isinstance(model, HINGE):
            raise TypeError(f"`model`: expected a trained hinge_sc.HINGE, got {type(model).__name__}.")
        if not model.is_trained_:
            raise ValueError("`model` is not trained: call `model.train()` (or load a trained model) first.")
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
            raise TypeError(f"`seed`: expected an integer, got {seed!r}.")
        model.generation_config(**generation)  # unknown or invalid generation settings fail here, not in LazySlide
        self.hinge = model
        self.model = model.module  # LazySlide's `model` attribute: the torch module it may move
        self.name = str(name)
        self.features_model_name = features_model_name
        self.seed = int(seed)
        self.return_std = bool(return_std)
        self.generation = dict(generation)
        self.params_: dict[str, Any] = {}

    def get_transform(self) -> None:
        """No image transform: the adapter reads tile features, not pixels."""
        return None

    def to(self, device: Any) -> LazySlideAdapter:
        """Move the model to ``device`` (LazySlide calls it before predicting)."""
        self.model.to(device)
        return self

    def try_compile(self, **compile_kws: Any) -> None:
        """Not compiled: the reverse process runs a variable number of steps (LazySlide's compilation is optional)."""
        logger.info("LazySlideAdapter: torch.compile is not used for HINGE's reverse process.")

    def predict(self, features: Any, coords: Any = None) -> dict[str, np.ndarray]:
        """Generated mean (and s.d.) of every panel gene for each tile.

        Parameters
        ----------
        features
            ``(n_tiles, D)`` tile features (dense or sparse), in LazySlide's tile order.
        coords
            ``(n_tiles, 2)`` tile origins (px of the slide's full-resolution level), recorded with the tiles.

        Returns
        -------
        ``{gene: (n_tiles,) mean, f"{gene}_std": (n_tiles,) s.d.}`` on the model scale, float32.
        """
        import anndata as ad
        import pandas as pd
        from scipy import sparse

        x = features.toarray() if sparse.issparse(features) else np.asarray(features)
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"`features`: expected a non-empty (n_tiles, D) matrix, found shape {x.shape}.")
        names = pd.Index([f"tile_{i}" for i in range(x.shape[0])])
        tiles = ad.AnnData(obs=pd.DataFrame(index=names))
        key = self.hinge.setup_args["features_key"]
        tiles.obsm[key] = x.astype(np.float32, copy=False)
        if coords is not None:
            tiles.obsm["spatial"] = np.asarray(coords, dtype=np.float64)
        out = self.hinge.generate(tiles, features_key=key, seed=self.seed, show_progress_bar=False, **self.generation)
        result = {str(g): out.mean[g].to_numpy(np.float32) for g in out.mean.columns}
        if self.return_std and out.std is not None:
            result.update({f"{g}_std": out.std[g].to_numpy(np.float32) for g in out.std.columns})
        module = self.hinge.module
        self.params_ = {
            "method": "HINGE via LazySlide feature_prediction",
            "n_tiles": int(x.shape[0]),
            "seed": int(out.seed),
            "randomness": "per tile: (seed, tile index)",
            "features_model_name": self.features_model_name,
            "target_scale": module.target_scale,
            "columns": "<gene>: generated mean; <gene>_std: s.d. over samples (both on target_scale)",
            "likelihood": module.likelihood.name,
            "generation": self.hinge.generation_config(**self.generation).to_dict(),
            "genes": list(self.hinge.panel_genes_),
            "backbone": dict(self.hinge.backbone_info_),
        }
        return result
