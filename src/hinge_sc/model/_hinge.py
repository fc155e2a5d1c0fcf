"""The HINGE model class (scvi-tools style): AnnData in, arrays to the module, results as DataFrames."""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from scvi.model.base import BaseModelClass
from scvi.train import TrainRunner

from hinge_sc._constants import REGISTRY_KEYS
from hinge_sc._deprecation import renamed_argument
from hinge_sc._random import global_numpy_rng_kept, seeded
from hinge_sc._validators import check_positive_int, check_seed
from hinge_sc.module import DEFAULT_GENERATION, GenerationConfig, HINGEModule, ModuleConfig
from hinge_sc.pp._spatialdata import resolve_table
from hinge_sc.train import HINGEDataModule, HINGETrainingPlan, TrainingRecipe, resolve_recipe

from ._collection import CollectionMixin
from ._expression import ExpressionMixin
from ._generation import generation_inputs, run_generation, stored_seed
from ._hub import HubMixin
from ._panel import select_panel
from ._persistence import SaveLoadMixin
from ._prediction import Prediction
from ._setup import SetupMixin
from ._training import trainer_settings, training_arrays, training_record, validation_groups

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from anndata import AnnData
    from spatialdata import SpatialData

    from hinge_sc.nn import Backbone

logger = logging.getLogger(__name__)


class HINGE(SetupMixin, CollectionMixin, ExpressionMixin, SaveLoadMixin, HubMixin, BaseModelClass):
    """HINGE: histology-conditioned generation of spot expression with a frozen sc-FM :cite:p:`Fang2026`.

    The model is described by a :class:`~hinge_sc.module.ModuleConfig` (architecture, adaptation, diffusion,
    likelihood), trained with a :class:`~hinge_sc.train.TrainingRecipe` and generates with a
    :class:`~hinge_sc.module.GenerationConfig`; keyword arguments naming their fields override them. The paper's
    configuration is :attr:`PAPER_PRESET`::

        model = hs.HINGE(adata, backbone, **hs.HINGE.PAPER_PRESET["model"])
        model.train(**hs.HINGE.PAPER_PRESET["train"])
        model.generate(**hs.HINGE.PAPER_PRESET["generate"])

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`, or a SpatialData object whose table was registered with
        :meth:`setup_spatialdata`.
    backbone
        Frozen single-cell foundation model, e.g. :meth:`hinge_sc.Backbone.random` or a loaded checkpoint.
    genes
        Panel genes (a subset of ``adata.var_names``); default: every registered gene, of which those absent
        from the backbone vocabulary are dropped and reported. Explicit ``genes`` absent from the vocabulary
        raise, unless ``drop_missing_genes=True``.
    config
        The model's :class:`~hinge_sc.module.ModuleConfig` (default: its defaults: the Gaussian likelihood, a
        per-gene readout, standardised features, ``T = 50``).
    drop_missing_genes
        Drop explicit ``genes`` that are not in the backbone vocabulary (with a warning) instead of raising.
    seed
        Seed of the initialisation of every trainable part (drawn from a generator derived from it, never from
        the global RNG, which is left as it was): two models built with the same arguments are identical.
    registry
        Used by :meth:`load` to build a model without data.
    **overrides
        Fields of ``config`` (``likelihood="nb"``, ``readout=False``, ``diffusion_steps=50`` …). ``n_steps`` and
        ``condition`` are the deprecated spellings of ``diffusion_steps`` and ``conditioning``.

    Examples
    --------
    >>> hs.HINGE.setup_anndata(adata, features_key="X_histology", section_key="section")
    >>> model = hs.HINGE(adata, backbone=hs.Backbone.random(adata.var_names, d_model=128))
    >>> model.train()
    >>> hs.tl.generate(model, adata_new)
    """

    #: The paper's configuration (HINGE, CVPR 2026), as arguments of the constructor, :meth:`train` and
    #: :meth:`generate`: squared error on the revealed genes, the predicted mean written into each revealed gene,
    #: the mean of the samples as the point prediction, ``T = 50`` reverse steps, 40 epochs at ``lr = 1e-4``.
    PAPER_PRESET: dict[str, dict] = {
        "model": {"likelihood": "mse", "readout": False, "linear_skip": False, "diffusion_steps": 50},
        "train": {"max_epochs": 40, "lr": 1e-4, "calibrate_variance": False},
        "generate": {"reveal": "mean", "mean_estimate": "samples", "n_steps": 50},
    }

    _module_cls = HINGEModule
    _training_plan_cls = HINGETrainingPlan
    _data_splitter_cls = HINGEDataModule
    _train_runner_cls = TrainRunner
    #: The configuration a model of this class is built with unless told otherwise.
    _default_config = ModuleConfig()
    #: Set by :meth:`from_collection`: the sections :meth:`train` streams from disk (``None``: ``adata``).
    collection_source_ = None

    def __init__(
        self,
        adata: AnnData | None = None,
        backbone: Backbone | None = None,
        genes: Sequence[str] | None = None,
        *,
        config: ModuleConfig | None = None,
        drop_missing_genes: bool = False,
        seed: int = 0,
        registry: dict | None = None,
        **overrides: Any,
    ):
        for old, new in (("n_steps", "diffusion_steps"), ("condition", "conditioning")):
            if old in overrides:
                overrides[new] = renamed_argument(old, overrides.pop(old), new, overrides.get(new))
        check_seed(seed)
        config = (config or self._default_config).replace(**overrides)
        adata = resolve_table(type(self), adata)  # a SpatialData object: its registered table
        super().__init__(adata, registry=registry)
        if backbone is None:
            raise ValueError("`backbone` is required, e.g. `hs.Backbone.random(adata.var_names)`.")
        var_names = pd.Index(self.registry_["field_registries"][REGISTRY_KEYS.X_KEY]["state_registry"]["column_names"])
        self.panel_genes_ = select_panel(var_names, genes, backbone, drop_missing_genes=drop_missing_genes)
        token_ids, _ = backbone.token_ids(self.panel_genes_)
        n_features = int(self.summary_stats[f"n_{REGISTRY_KEYS.FEATURES_KEY}"])
        with seeded(seed):
            self.module = self._module_cls(backbone, token_ids, n_features, config)
        if config.standardize_features and self.adata is not None:
            self._set_feature_stats()
        pretrained_scale = backbone.provenance.target_scale
        if pretrained_scale is not None and pretrained_scale != config.target_scale:
            warnings.warn(
                f"The backbone was pre-trained on the {pretrained_scale!r} scale but `target_scale="
                f"{config.target_scale!r}`; its prior fits best on the scale it was trained on.",
                UserWarning,
                stacklevel=2,
            )
        self.config = config
        self.init_params_ = {"kwargs": {}, "non_kwargs": {"genes": list(self.panel_genes_), **config.to_dict(),
                                                          "drop_missing_genes": drop_missing_genes, "seed": seed}}
        self.backbone_info_ = {"name": backbone.config.name, "checksum": backbone.checksum()}
        self.train_params_: dict = {}
        self._model_summary_string = (
            f"HINGE: {len(self.panel_genes_)} genes, {n_features} image features, T={config.diffusion_steps}, "
            f"{config.likelihood} likelihood, backbone {backbone.config.name!r} (d={backbone.config.d_model}, "
            f"L={backbone.config.n_layers})"
        )

    def _set_feature_stats(self) -> None:
        """Per-feature mean and s.d. over the registered spots' features and views → the module's standardisation."""
        import numpy as np

        feats = np.asarray(self.adata_manager.get_from_registry(REGISTRY_KEYS.FEATURES_KEY), dtype=np.float64)
        if REGISTRY_KEYS.VIEWS_KEY in self.adata_manager.data_registry:
            views = np.asarray(self.adata_manager.get_from_registry(REGISTRY_KEYS.VIEWS_KEY), dtype=np.float64)
            feats = np.concatenate([feats, views.reshape(-1, views.shape[-1])])
        self.module.set_feature_stats(
            torch.as_tensor(feats.mean(0), dtype=torch.float32), torch.as_tensor(feats.std(0), dtype=torch.float32)
        )

    @property
    def setup_args(self) -> dict:
        """Arguments :meth:`setup_anndata` was called with."""
        return dict(self.registry_["setup_args"])

    # ------------------------------------------------------------------ training
    def train(
        self,
        max_epochs: int | None = None,
        *,
        recipe: TrainingRecipe | None = None,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        strategy: str | None = None,
        seed: int = 0,
        show_progress_bar: bool = True,
        buffer_sections: int = 2,
        **kwargs: Any,
    ) -> None:
        r"""Train the SoftAdaLN adaptation with the masked-diffusion objective (docs/method.md §5–6).

        Every training setting comes from ``recipe`` (:data:`~hinge_sc.model.DEFAULT_RECIPE` unless given): the
        same object ``hinge-sc train``, ``hinge-sc demo`` and the benchmarks use. A keyword argument that names a
        field of :class:`~hinge_sc.model.TrainingRecipe` (``lr=``, ``batch_size=``, ``validation=`` …) overrides it
        for this call; the recipe run is recorded in ``train_params_["recipe"]``. The steps before and after the
        epochs (the linear skip's fit, the calibration on the validation spots) are the training plan's
        (:class:`~hinge_sc.train.HINGETrainingPlan`).

        Parameters
        ----------
        max_epochs
            Override of ``recipe.max_epochs``.
        recipe
            The training recipe; :data:`~hinge_sc.model.PAPER_RECIPE` is the paper's schedule.
        accelerator, devices, strategy
            Passed to Lightning, e.g. ``accelerator="gpu", devices=4, strategy="ddp"``.
        seed
            Seed of the validation split, the shuffling, dropout, the masks and the calibration; recorded. Global
            RNGs are left as they were.
        show_progress_bar
            Show Lightning's progress bar.
        buffer_sections
            For a model built with :meth:`from_collection`: training sections read into memory at once (their
            spots are shuffled together); memory grows with it, and so does the mixing of sections in a batch.
        **kwargs
            Fields of :class:`~hinge_sc.model.TrainingRecipe` to override; any other keyword goes to
            :class:`~scvi.train.Trainer` / :class:`lightning.pytorch.Trainer`. scvi-tools' ``plan_config`` and
            ``trainer_config`` (mappings) are accepted too: their recipe fields override the recipe, the rest go
            to the Trainer.
        """
        recipe, trainer_kwargs = resolve_recipe(recipe, max_epochs, kwargs)
        check_seed(seed)
        check_positive_int(buffer_sections, argument="buffer_sections")
        source = self.collection_source_
        if source is not None:
            data = source.datamodule(recipe, seed, buffer_sections)
            validation = "section" if data.n_val else "none"
        else:
            arrays = training_arrays(self)
            groups, validation = validation_groups(arrays, recipe)
            data = self._data_splitter_cls(
                arrays["counts"], arrays["library"], arrays["features"], arrays.get("views"),
                validation_size=recipe.validation_size, batch_size=recipe.batch_size, seed=seed, groups=groups,
                views_per_epoch=recipe.views_per_epoch, sections=arrays["sections"], spot_names=arrays["obs_names"],
            )  # fmt: skip
        plan = self._training_plan_cls(self.module, recipe, seed=seed)
        settings = trainer_settings(recipe, has_val=data.n_val > 0, n_steps=self.module.diffusion_steps,
                                    strategy=strategy, show_progress_bar=show_progress_bar,
                                    trainer_kwargs=trainer_kwargs)  # fmt: skip
        runner = self._train_runner_cls(self, training_plan=plan, data_splitter=data, accelerator=accelerator,
                                        devices=devices, **settings)  # fmt: skip
        with seeded(seed), global_numpy_rng_kept(), warnings.catch_warnings():  # the caller's global RNGs stay
            # a streamed collection is read in this process (no workers), so its length is exact
            warnings.filterwarnings("ignore", message="Your `IterableDataset` has `__len__` defined")
            runner()
        # the logger keeps 0-d values with dtype object; give users numeric columns
        self.history_ = {k: v.apply(pd.to_numeric, errors="coerce") for k, v in (self.history_ or {}).items()}
        if source is not None:  # positions in `collection.obs`
            self.train_indices_ = source.obs_indices(data.training_sections)
            self.validation_indices_ = source.obs_indices(data.validation_sections)
        else:
            obs_idx = arrays["obs_indices"]
            self.train_indices_, self.validation_indices_ = obs_idx[data.train_idx], obs_idx[data.val_idx]
        self.train_params_ = training_record(recipe, plan, data, validation=validation, seed=seed,
                                             epochs_run=runner.trainer.current_epoch)  # fmt: skip
        if any(p.requires_grad for p in self.module.backbone.parameters()):
            # fine-tuned: the model's backbone is now its own (a copy of the one passed in)
            self.backbone_info_ = {"name": self.backbone_info_["name"], "checksum": self.module.backbone.checksum()}
        if plan.results["restored"]:
            logger.info(
                "Restored the weights of epoch %d (validation loss %.4f)", plan.best_epoch, plan.best_validation_loss
            )
        self.module.eval()

    def trainable_parameters(self) -> pd.Series:
        """Number of trainable parameters per part of the adaptation (the backbone is frozen)."""
        parts = self.module.denoiser.trainable_parameters()
        likelihood = sum(p.numel() for p in self.module.likelihood.parameters() if p.requires_grad)
        if likelihood:
            parts["likelihood"] = likelihood
        parts["backbone (frozen)"] = sum(p.numel() for p in self.module.backbone.parameters())
        return pd.Series(parts, name="n_parameters")

    # ------------------------------------------------------------------ generation
    @property
    def device(self) -> torch.device:
        """Device of the module."""
        return next(self.module.parameters()).device

    def generation_config(self, config: GenerationConfig | None = None, **overrides: Any) -> GenerationConfig:
        """``config`` (default :data:`~hinge_sc.module.DEFAULT_GENERATION`) with ``overrides``, checked."""
        if config is not None and not isinstance(config, GenerationConfig):
            raise TypeError(f"`config` must be a hinge_sc.model.GenerationConfig, found {type(config).__name__}.")
        config = (config or DEFAULT_GENERATION).replace(**overrides)
        self.module.resolve_reveal(config.reveal)  # a draw needs a likelihood that draws
        return config

    def generate(
        self,
        adata: AnnData | SpatialData | None = None,
        *,
        config: GenerationConfig | None = None,
        features_key: str | None = None,
        seed: int | None = None,
        return_samples: bool = False,
        store: str | Path | None = None,
        resume: bool = False,
        overwrite: bool = False,
        show_progress_bar: bool = True,
        distributed: Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> Prediction:
        """Generate panel expression from image features with the reverse masked-diffusion process.

        Works on any AnnData with image features, including H&E-only slides with no measured genes. Each spot draws
        its random numbers from a stream seeded by ``(seed, obs name)``, so its values do not depend on
        ``batch_size``, on the other spots generated with it, on resuming or sharding, or on the device type (float
        rounding aside).

        Parameters
        ----------
        adata
            Spots to generate (an AnnData, or a SpatialData object whose table holds them); default: the registered
            data.
        config
            Generation settings (:class:`~hinge_sc.module.GenerationConfig`: ``n_samples`` (8), ``n_steps`` (10
            reverse steps, chosen on validation spots of the training sections), ``batch_size``, ``precision``,
            ``reveal``, ``clip``, ``mean_estimate``); keyword arguments naming its fields override it.
        features_key
            ``obsm`` key with ``(n_spots, D)`` features; default: the key used in :meth:`setup_anndata`.
        seed
            Seed of the sampler; ``None`` draws one and records it in the output (or reuses a resumed store's).
        return_samples
            Also return the ``(n_spots, S, G)`` samples (with ``store``: also write them there).
        store, resume, overwrite
            Write the results block by block into a zarr store (about 256 spots at a time: memory stays bounded for
            whole slides); ``resume=True`` continues an interrupted run with its settings; ``overwrite=True``
            replaces a store written by hinge_sc (anything else at the path is refused and left as it is).
        show_progress_bar
            Progress bar over the spots.
        distributed
            ``{"devices": 2, "strategy": "ddp", "accelerator": "auto"}``: generate in several processes or devices
            with Lightning's ``Trainer.predict``; each process generates a shard and the shards are gathered back in
            spot order on every process (the values equal a one-process run). ``None``: this process.
        **overrides
            Fields of ``config``; ``accelerator=``, ``devices=``, ``strategy=`` as keywords are the entries of
            ``distributed`` (``devices`` or ``strategy`` turns it on).

        Returns
        -------
        :class:`~hinge_sc.model.Prediction` with the per-spot mean and standard deviation (DataFrames indexed by
        ``obs_names`` with the panel genes as columns, model scale) and optionally the samples.
        """
        extra = {k: overrides.pop(k) for k in ("accelerator", "devices", "strategy") if k in overrides}
        if distributed is None and (extra.get("devices") is not None or extra.get("strategy") is not None):
            distributed = {}
        if distributed is not None:
            given = {k: v for k, v in extra.items() if v is not None}
            distributed = {"accelerator": "auto", "devices": "auto", "strategy": None, **dict(distributed), **given}
        config = self.generation_config(config, **overrides)
        if seed is None:
            seed = stored_seed(store, resume)
        inputs = generation_inputs(self, adata, config, features_key=features_key, seed=seed)
        return run_generation(self, inputs, config, return_samples=return_samples, store=store, resume=resume,
                              overwrite=overwrite, show_progress_bar=show_progress_bar,
                              distributed=distributed)  # fmt: skip
