"""The HINGE model class (scvi-tools style): AnnData in, arrays to the module, results as DataFrames."""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import torch
from scvi.data import AnnDataManager
from scvi.data.fields import LayerField, ObsmField
from scvi.model.base import BaseModelClass
from scvi.train import TrainRunner

from hinge_sc._constants import FEATURE_PROVENANCE_KEY, REGISTRY_KEYS
from hinge_sc._counts import panel_counts
from hinge_sc._deprecation import renamed_argument
from hinge_sc._random import global_numpy_rng_kept, seeded, spot_seeds
from hinge_sc._ridge import fit_ridge_cv
from hinge_sc._scales import CP10K, rescale_total, to_counts
from hinge_sc._validators import (
    check_allocation,
    check_counts,
    check_features_informative,
    check_genes_given,
    check_indices,
    check_min_spots,
    check_n_obs,
    check_obsm,
    check_positive_int,
    check_section_labels,
    check_seed,
    check_unique_obs_names,
    check_unique_var_names,
    check_views_identity,
)
from hinge_sc.module import HINGEModule, expression_target, spread_scale
from hinge_sc.pp._spatialdata import resolve_table
from hinge_sc.train._datamodule import HINGEDataModule
from hinge_sc.train._progress import EpochLines, quiet_lightning, use_epoch_lines
from hinge_sc.train._trainingplan import HINGETrainingPlan

from ._distributed import generate_distributed
from ._feature_provenance import check_generate_inputs, feature_provenance
from ._recipe import TrainingRecipe, resolve_recipe
from ._inference import batch_bounds, iter_batches, resolve_batch_size
from ._persistence import load_model, resolve_device, save_model
from ._prediction import Prediction
from ._spatialdata import setup_spatialdata

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from anndata import AnnData
    from spatialdata import SpatialData

    from hinge_sc.nn import Backbone

logger = logging.getLogger(__name__)

#: Samples per validation spot when the spread is calibrated after training (the default of `generate`).
CALIBRATION_SAMPLES = 8


class HINGE(BaseModelClass):
    """HINGE: histology-conditioned generation of spot expression with a frozen sc-FM :cite:p:`Fang2026`.

    The defaults are the configuration chosen on validation spots of the training sections (README, issue 13
    benchmark); the paper's configuration is :attr:`PAPER_PRESET`::

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
    n_steps
        Diffusion steps ``T``.
    schedule, schedule_power
        Mask-ratio schedule (``"poly_auto"``, ``"linear"``, ``"cosine"``, ``"sqrt"``, ``"power"``).
    mask_fill
        Fill of hidden genes, ``"gauss"`` (N(0, 1)) or ``"zero"``.
    loss_on
        ``"revealed"`` (genes revealed at the sampled step) or ``"hidden"`` (all hidden genes).
    target_scale
        ``"log2p1"`` = log2(count + 1) or ``"log1p_cp10k"``.
    conditioning
        ``"sum"`` (released code) or ``"concat"`` (paper text) conditioning network.
    head_rank
        Low-rank SoftAdaLN heads (``None``: full heads as in the paper).
    backbone_dropout
        Keep the frozen backbone's dropout active during training.
    mask_mechanism
        Embedding of hidden genes: ``"mask_emb"`` (CellFM's pre-training: the learned mask embedding replaces
        the value embedding) or ``"zero_emb"`` (HINGE's released code: ``zero_emb`` is added to the embedding of
        the fill value). ``None`` uses the mechanism the backbone was pre-trained with.
    freeze_backbone
        Keep the backbone frozen (HINGE). ``False`` fine-tunes it fully (an ablation; the backbone is copied).
    lora_rank
        Optional LoRA adapters of this rank on the frozen backbone's projections (off by default).
    likelihood
        ``"gaussian"`` (the default, beyond the paper: a mean and a variance per revealed gene, trained by Gaussian
        negative log-likelihood; generation draws each revealed gene from it, so the samples' spread is a
        calibrated uncertainty) or ``"mse"`` (the paper: one value per revealed gene, squared error; see
        :attr:`PAPER_PRESET`). See docs/method.md §5.
    readout
        Add a per-gene linear readout of the conditioning vector to the predicted mean (default; beyond the paper,
        which has none: ``False``). It starts at zero, so the identity initialisation holds, and gives the image a
        direct, gene-specific path to the prediction besides the modulation of the frozen backbone
        (:class:`~hinge_sc.nn.AdaptedBackbone`). On her2st it lifted co-expression consistency from about 0.1 to
        0.6 (README).
    linear_skip
        Add a fixed linear prediction from the image features to the predicted mean (beyond the paper). :meth:`train`
        fits it first, by ridge regression on the training spots with the penalty chosen by cross-validation over the
        training sections (``section_key``; else over spots), then trains the adaptation on what it misses. The
        chosen penalty is recorded in ``train_params_["linear_skip_alpha"]``.
    seed
        Seed of the initialisation of every trainable part (drawn from a generator derived from it, never from
        the global RNG, which is left as it was): two models built with the same arguments are identical.
    standardize_features
        Standardise each image feature with the mean and s.d. over the registered spots (and their views) before
        the conditioning network; the statistics are saved with the model and applied to new spots.
    drop_missing_genes
        Drop explicit ``genes`` that are not in the backbone vocabulary (with a warning) instead of raising.
    condition
        Deprecated alias of ``conditioning``.
    registry
        Used by :meth:`load` to build a model without data.

    Examples
    --------
    >>> hs.HINGE.setup_anndata(adata, features_key="X_histology", views_key="X_histology_views")
    >>> model = hs.HINGE(adata, backbone=hs.Backbone.random(adata.var_names, d_model=128))
    >>> model.train(max_epochs=10)
    >>> hs.tl.generate(model, adata_new)
    """

    #: The paper's configuration (HINGE, CVPR 2026), as arguments of the constructor, :meth:`train` and
    #: :meth:`generate`: squared error on the revealed genes, the predicted mean written into each revealed gene,
    #: the mean of the samples as the point prediction, ``T = 50`` reverse steps, 40 epochs at ``lr = 1e-4``.
    #: The defaults differ by the Gaussian likelihood, drawn reveals, the Rao–Blackwellised mean, variance
    #: calibration, the per-gene readout and 10 reverse steps (docs/method.md §4–5); the README's benchmark compares
    #: the two.
    PAPER_PRESET: dict[str, dict] = {
        "model": {"likelihood": "mse", "readout": False, "linear_skip": False, "n_steps": 50},
        "train": {"max_epochs": 40, "lr": 1e-4, "calibrate_variance": False},
        "generate": {"reveal": "mean", "mean_estimate": "samples", "n_steps": 50},
    }

    _module_cls = HINGEModule
    _training_plan_cls = HINGETrainingPlan
    _data_splitter_cls = HINGEDataModule
    _train_runner_cls = TrainRunner

    def __init__(
        self,
        adata: AnnData | None = None,
        backbone: Backbone | None = None,
        genes: Sequence[str] | None = None,
        *,
        n_steps: int = 50,
        schedule: Literal["poly_auto", "linear", "cosine", "sqrt", "power"] = "poly_auto",
        schedule_power: float | None = None,
        mask_fill: Literal["gauss", "zero"] = "gauss",
        loss_on: Literal["revealed", "hidden"] = "revealed",
        target_scale: Literal["log2p1", "log1p_cp10k"] = "log2p1",
        conditioning: Literal["sum", "concat"] = "sum",
        head_rank: int | None = None,
        backbone_dropout: bool = True,
        mask_mechanism: Literal["mask_emb", "zero_emb"] | None = None,
        freeze_backbone: bool = True,
        lora_rank: int | None = None,
        standardize_features: bool = True,
        likelihood: Literal["mse", "gaussian"] = "gaussian",
        readout: bool = True,
        linear_skip: bool = False,
        drop_missing_genes: bool = False,
        seed: int = 0,
        condition: Literal["sum", "concat"] | None = None,
        registry: dict | None = None,
    ):
        conditioning = renamed_argument("condition", condition, "conditioning", conditioning, default="sum")
        adata = resolve_table(type(self), adata)  # a SpatialData object: its registered table
        super().__init__(adata, registry=registry)
        if backbone is None:
            raise ValueError("`backbone` is required, e.g. `hs.Backbone.random(adata.var_names)`.")
        var_names = pd.Index(self.registry_["field_registries"][REGISTRY_KEYS.X_KEY]["state_registry"]["column_names"])
        self.panel_genes_ = self._select_panel(var_names, genes, backbone, drop_missing_genes=drop_missing_genes)
        token_ids, _ = backbone.token_ids(self.panel_genes_)
        n_features = int(self.summary_stats[f"n_{REGISTRY_KEYS.FEATURES_KEY}"])
        with seeded(seed):
            self.module = self._module_cls(
                backbone,
                token_ids,
                n_features,
                n_steps=n_steps,
                schedule=schedule,
                schedule_power=schedule_power,
                mask_fill=mask_fill,
                loss_on=loss_on,
                target_scale=target_scale,
                conditioning=conditioning,
                head_rank=head_rank,
                backbone_dropout=backbone_dropout,
                mask_mechanism=mask_mechanism,
                freeze_backbone=freeze_backbone,
                lora_rank=lora_rank,
                likelihood=likelihood,
                readout=readout,
                linear_skip=linear_skip,
            )
        if standardize_features and self.adata is not None:
            self._set_feature_stats()
        pretrained_scale = backbone.provenance.target_scale
        if pretrained_scale is not None and pretrained_scale != target_scale:
            warnings.warn(
                f"The backbone was pre-trained on the {pretrained_scale!r} scale but `target_scale={target_scale!r}`; "
                "its prior fits best on the scale it was trained on.",
                UserWarning,
                stacklevel=2,
            )
        init_params = self._get_init_params(locals())
        init_params["non_kwargs"].pop("backbone")
        init_params["non_kwargs"].pop("condition", None)  # deprecated spelling, resolved into `conditioning`
        init_params["non_kwargs"]["genes"] = list(self.panel_genes_)
        self.init_params_ = init_params
        self.backbone_info_ = {"name": backbone.config.name, "checksum": backbone.checksum()}
        self.train_params_: dict = {}
        self._model_summary_string = (
            f"HINGE: {len(self.panel_genes_)} genes, {n_features} image features, T={n_steps}, "
            f"backbone {backbone.config.name!r} (d={backbone.config.d_model}, L={backbone.config.n_layers})"
        )

    def _set_feature_stats(self) -> None:
        """Per-feature mean and s.d. over the registered spots' features and views → the module's standardisation."""
        feats = np.asarray(self.adata_manager.get_from_registry(REGISTRY_KEYS.FEATURES_KEY), dtype=np.float64)
        if REGISTRY_KEYS.VIEWS_KEY in self.adata_manager.data_registry:
            views = np.asarray(self.adata_manager.get_from_registry(REGISTRY_KEYS.VIEWS_KEY), dtype=np.float64)
            feats = np.concatenate([feats, views.reshape(-1, views.shape[-1])])
        self.module.set_feature_stats(
            torch.as_tensor(feats.mean(0), dtype=torch.float32), torch.as_tensor(feats.std(0), dtype=torch.float32)
        )

    @staticmethod
    def _select_panel(
        var_names: pd.Index, genes: Sequence[str] | None, backbone: Backbone, *, drop_missing_genes: bool = False
    ) -> list[str]:
        check_genes_given(genes, argument="genes")
        if genes is None:
            candidates = list(var_names)
        else:
            candidates = [str(g) for g in genes]
            absent = [g for g in candidates if g not in var_names]
            if absent:
                raise KeyError(
                    f"{len(absent)} of `genes` are not in the registered genes (adata.var_names), e.g. {absent[:10]}. "
                    "Pass genes that the data measures."
                )
            if len(set(candidates)) != len(candidates):
                raise ValueError("`genes` has duplicates.")
        _, report = backbone.match_genes(candidates)
        missing = list(report.loc[report["match"] == "none", "gene"])
        renamed = report[report["match"] == "alias"]
        if len(renamed):
            pairs = [f"{g}→{s}" for g, s in zip(renamed["gene"], renamed["symbol"], strict=True)]
            warnings.warn(
                f"{len(pairs)} genes matched the backbone vocabulary through a renamed symbol: {pairs[:20]}"
                f"{' …' if len(pairs) > 20 else ''}. Check `backbone.match_genes(genes)` if that is not wanted.",
                UserWarning,
                stacklevel=3,
            )
        if missing and genes is not None and not drop_missing_genes:
            raise KeyError(
                f"{len(missing)} of the {len(candidates)} requested `genes` are not in the backbone vocabulary "
                f"({len(backbone.genes)} genes): {missing[:20]}{' …' if len(missing) > 20 else ''}. Remove them from "
                "`genes`, or pass `drop_missing_genes=True` to drop them with a warning."
            )
        missing_set = set(missing)
        panel = [g for g in candidates if g not in missing_set]
        if not panel:
            raise ValueError(
                f"None of the {len(candidates)} genes is in the backbone vocabulary ({len(backbone.genes)} genes, "
                f"e.g. {backbone.genes[:5]}). Check the gene symbols (HGNC symbols expected) or the backbone."
            )
        if missing:
            warnings.warn(
                f"{len(missing)} of {len(candidates)} genes are not in the backbone vocabulary and were dropped "
                f"from the panel: {missing[:20]}{' …' if len(missing) > 20 else ''}",
                UserWarning,
                stacklevel=3,
            )
        unseen = backbone.unseen_in_pretraining(panel)
        if unseen:
            warnings.warn(
                f"{len(unseen)} panel genes are in the backbone vocabulary but not in its pre-training data, so their "
                f"embeddings are untrained: {unseen[:20]}{' …' if len(unseen) > 20 else ''}. Pre-train on data that "
                "measures them, or choose the panel with `hs.pp.select_genes(..., vocabulary=backbone)`.",
                UserWarning,
                stacklevel=3,
            )
        return panel

    # ------------------------------------------------------------------ registration
    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        layer: str | None = None,
        features_key: str = "X_histology",
        views_key: str | None = "auto",
        section_key: str | None = None,
        allow_non_integer: bool = False,
        **kwargs,
    ) -> None:
        """Register raw counts and image features of ``adata``.

        The settings of the features (encoder, width, patch size in µm, µm/px, context), as recorded by
        :func:`hinge_sc.pp.histology_features` in ``adata.uns[features_key]["params"]``, are kept in the registry
        and saved with the model; :meth:`generate` checks new data against them.

        Parameters
        ----------
        adata
            Spots × genes.
        layer
            Layer with raw counts; ``None`` uses ``adata.X``.
        features_key
            ``adata.obsm`` key of the image features, ``(n_spots, D)``.
        views_key
            ``adata.obsm`` key of augmented views, ``(n_spots, V, D)``; each view is a training sample with the
            spot's expression as target (docs/method.md). ``"auto"`` (default): ``f"{features_key}_views"`` when
            present, as written by :func:`hinge_sc.pp.histology_features` (logged), else no views; ``None``: no
            views even if present. The resolved key is recorded in :attr:`setup_args`.
        section_key
            Optional ``adata.obs`` column with the tissue section of each spot (recorded in the setup arguments;
            nothing is written into ``adata.obs``).
        allow_non_integer
            Accept non-negative non-integer counts: for corrected non-integer counts, e.g. ambient-RNA corrected.

        Raises
        ------
        KeyError
            A key is missing.
        TypeError
            Features of a non-numeric (object) dtype.
        ValueError
            Fewer than 3 spots, duplicated ``obs_names`` or ``var_names``, features with NaNs, the wrong shape, zero
            width or the same value in every spot, views whose identity view ``views[:, 0]`` is not the features,
            spots without a section label (NaN in ``obs[section_key]``), or counts that are negative, not finite,
            above 10⁹ or (unless ``allow_non_integer``) not integers.

        Warns
        -----
        UserWarning
            The features have a single column.
        """
        views_key = _resolve_views_key(adata, features_key, views_key)
        setup_method_args = cls._get_setup_method_args(**locals())
        check_n_obs(adata)
        check_min_spots(adata)
        check_unique_obs_names(adata)
        check_unique_var_names(adata)
        features = check_obsm(adata, features_key, argument="features_key", ndim=2)
        check_features_informative(features, features_key, argument="features_key")
        if views_key is not None:
            views = check_obsm(adata, views_key, argument="views_key", ndim=3)
            if views.shape[2] != features.shape[1]:
                raise ValueError(
                    f"`adata.obsm[{views_key!r}]` has views of width {views.shape[2]}, but the features "
                    f"`adata.obsm[{features_key!r}]` have width {features.shape[1]}; both must come from one encoder."
                )
            check_views_identity(features, views, features_key=features_key, views_key=views_key)
        if layer is not None and layer not in adata.layers:
            raise KeyError(f"`layer={layer!r}` is not in `adata.layers` (available: {list(adata.layers)}).")
        if section_key is not None and section_key not in adata.obs:
            raise KeyError(f"`section_key={section_key!r}` is not a column of `adata.obs`.")
        if section_key is not None:
            check_section_labels(adata, section_key)
        check_counts(
            adata.X if layer is None else adata.layers[layer],
            where=f"`adata.{'X' if layer is None else f'layers[{layer!r}]'}`",
            allow_non_integer=allow_non_integer,
        )
        fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=not allow_non_integer),
            ObsmField(REGISTRY_KEYS.FEATURES_KEY, features_key),
        ]
        if views_key is not None:
            fields.append(ObsmField(REGISTRY_KEYS.VIEWS_KEY, views_key))
        adata_manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        with global_numpy_rng_kept():  # hinge_sc leaves global RNGs alone; scvi-tools' count check samples from it
            adata_manager.register_fields(adata, **kwargs)
        adata_manager.registry[FEATURE_PROVENANCE_KEY] = feature_provenance(adata, features_key)
        cls.register_manager(adata_manager)

    @classmethod
    def setup_spatialdata(
        cls,
        sdata: SpatialData,
        table_key: str = "table",
        image_key: str | Mapping[str, str] | None = None,
        shapes_key: str | Sequence[str] | None = None,
        layer: str | None = None,
        features_key: str = "X_histology",
        views_key: str | None = "auto",
        section_key: str | None = None,
        histology_kwargs: Mapping | None = None,
        allow_non_integer: bool = False,
        **kwargs,
    ) -> None:
        """Register the table of a SpatialData object (spots = shapes annotated by the table).

        If the table has no ``obsm[features_key]``, the features are computed first from the image with
        :func:`hinge_sc.pp.histology_features` (``histology_kwargs`` are passed to it; with its default 8 views,
        ``views_key="auto"`` registers ``f"{features_key}_views"``). Then the table is registered as by
        :meth:`setup_anndata`, so that ``HINGE(sdata, ...)``, :meth:`train` and ``hs.tl.generate(model, sdata)``
        work on it and write their results into it.

        Parameters
        ----------
        sdata
            SpatialData object with an image, a shapes element of spots and a table annotating it.
        table_key
            The table whose rows are the spots (counts in ``X`` or ``layers[layer]``).
        image_key, shapes_key
            The image (or a dict region → image) and shapes element(s); default: inferred, see
            :func:`hinge_sc.pp.extract_patches`.
        layer
            Layer of the table with raw counts; ``None`` uses ``X``.
        features_key
            ``obsm`` key of the image features, ``(n_spots, D)``.
        views_key
            ``obsm`` key of augmented views, ``(n_spots, V, D)``; ``"auto"``: ``f"{features_key}_views"`` when
            present; ``None``: none (see :meth:`setup_anndata`).
        section_key
            Optional ``obs`` column with the tissue section of each spot.
        histology_kwargs
            Arguments of :func:`hinge_sc.pp.histology_features` (``encoder``, ``patch_size_um``, ``views`` …), used
            only when the features are computed here.
        allow_non_integer
            Accept non-negative non-integer counts (corrected counts, e.g. ambient-RNA corrected).

        Raises
        ------
        TypeError
            ``sdata`` is not a SpatialData object.
        KeyError, ValueError
            As :meth:`setup_anndata` and :func:`hinge_sc.pp.histology_features`.

        Examples
        --------
        >>> hs.HINGE.setup_spatialdata(sdata, table_key="table", histology_kwargs={"encoder": "handcrafted"})
        >>> model = hs.HINGE(sdata, backbone)
        """
        setup_spatialdata(
            cls, sdata, table_key=table_key, image_key=image_key, shapes_key=shapes_key, layer=layer,
            features_key=features_key, views_key=views_key, section_key=section_key,
            histology_kwargs=histology_kwargs, allow_non_integer=allow_non_integer, **kwargs,
        )  # fmt: skip

    @property
    def setup_args(self) -> dict:
        """Arguments :meth:`setup_anndata` was called with."""
        return dict(self.registry_["setup_args"])

    # ------------------------------------------------------------------ training
    def _training_arrays(self) -> dict[str, np.ndarray]:
        """Panel counts, library sizes, features and views of the registered spots with some panel counts."""
        x = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        var_names = pd.Index(self.adata_manager.get_state_registry(REGISTRY_KEYS.X_KEY).column_names)
        panel = panel_counts(x, var_names, self.panel_genes_, purpose="training", stacklevel=5)
        keep = panel.keep
        arrays = {
            "obs_indices": keep,
            "counts": panel.counts,
            "library": panel.library,
            "features": np.asarray(self.adata_manager.get_from_registry(REGISTRY_KEYS.FEATURES_KEY))[keep],
        }
        if REGISTRY_KEYS.VIEWS_KEY in self.adata_manager.data_registry:
            arrays["views"] = np.asarray(self.adata_manager.get_from_registry(REGISTRY_KEYS.VIEWS_KEY))[keep]
        return arrays

    def _fit_linear_skip(self, arrays: dict[str, np.ndarray], train_idx: np.ndarray) -> float:
        """Fit the module's linear skip by ridge on the training spots (identity view); returns the penalty."""
        module = self.module
        feats = torch.as_tensor(arrays["features"][train_idx], dtype=torch.float32)
        x = module.standardize(feats.to(module.feature_mean.device)).cpu().numpy()
        y = expression_target(torch.as_tensor(arrays["counts"][train_idx], dtype=torch.float32),
                              torch.as_tensor(arrays["library"][train_idx], dtype=torch.float32),
                              module.target_scale).numpy()  # fmt: skip
        section_key = self.setup_args.get("section_key")
        groups = None
        if section_key is not None:
            groups = self.adata.obs[section_key].to_numpy()[arrays["obs_indices"][train_idx]]
        coef, intercept, alpha = fit_ridge_cv(x, y, groups)
        device = module.skip_weight.device
        module.set_linear_skip(torch.as_tensor(coef, dtype=torch.float32, device=device),
                               torch.as_tensor(intercept, dtype=torch.float32, device=device))  # fmt: skip
        return alpha

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
        **kwargs,
    ) -> None:
        r"""Train the SoftAdaLN adaptation with the masked-diffusion objective (docs/method.md §5–6).

        Every training setting comes from ``recipe`` (:data:`~hinge_sc.model.DEFAULT_RECIPE` unless given): the
        same object ``hinge-sc train``, ``hinge-sc demo`` and the benchmarks use. A keyword argument that names a
        field of :class:`~hinge_sc.model.TrainingRecipe` (``lr=``, ``batch_size=``, ``validation=`` …) overrides it
        for this call; the recipe run is recorded in ``train_params_["recipe"]``.

        Parameters
        ----------
        max_epochs
            Override of ``recipe.max_epochs``.
        recipe
            The training recipe; :data:`~hinge_sc.model.PAPER_RECIPE` is the paper's schedule.
        accelerator, devices, strategy
            Passed to Lightning, e.g. ``accelerator="gpu", devices=4, strategy="ddp"``.
        seed
            Seed of the validation split, the shuffling, dropout and the masks; recorded. Global RNGs are left as
            they were.
        show_progress_bar
            Show Lightning's progress bar.
        **kwargs
            Fields of :class:`~hinge_sc.model.TrainingRecipe` to override; any other keyword goes to
            :class:`~scvi.train.Trainer` / :class:`lightning.pytorch.Trainer`. scvi-tools' ``plan_config`` and
            ``trainer_config`` (mappings) are accepted too: their recipe fields override the recipe, the rest go
            to the Trainer.
        """
        recipe, trainer_kwargs = resolve_recipe(recipe, max_epochs, kwargs)
        check_seed(seed)
        arrays = self._training_arrays()
        groups, validation = self._validation_groups(arrays, recipe)
        data_module = self._data_splitter_cls(
            arrays["counts"], arrays["library"], arrays["features"], arrays.get("views"),
            validation_size=recipe.validation_size, batch_size=recipe.batch_size, seed=seed, groups=groups,
            views_per_epoch=recipe.views_per_epoch,
        )  # fmt: skip
        skip_alpha = self._fit_linear_skip(arrays, data_module.train_idx) if self.module.linear_skip else None
        plan = self._training_plan_cls(
            self.module, lr=recipe.lr, weight_decay=recipe.weight_decay, warmup_epochs=recipe.warmup_epochs,
            warmup_mask_ratio=recipe.warmup_mask_ratio, lr_milestones=recipe.milestone_epochs(),
            lr_gamma=recipe.lr_gamma,
        )  # fmt: skip
        has_val = data_module.n_val > 0
        if strategy is not None:
            trainer_kwargs["strategy"] = strategy
        quiet_lightning()
        epoch_lines = use_epoch_lines(show_progress_bar)  # a log file: one line per epoch instead of the bar
        if epoch_lines:
            trainer_kwargs["callbacks"] = [*trainer_kwargs.get("callbacks", []), EpochLines(self.module.n_steps)]
        trainer_kwargs.setdefault("check_val_every_n_epoch", 1 if has_val else None)
        runner = self._train_runner_cls(
            self, training_plan=plan, data_splitter=data_module, max_epochs=recipe.max_epochs,
            accelerator=accelerator, devices=devices, early_stopping=recipe.early_stopping and has_val,
            early_stopping_monitor="validation_loss", early_stopping_patience=recipe.early_stopping_patience,
            early_stopping_warmup_epochs=recipe.warmup_epochs, gradient_clip_val=recipe.gradient_clip_val,
            enable_progress_bar=show_progress_bar and not epoch_lines, **trainer_kwargs,
        )  # fmt: skip
        with seeded(seed), global_numpy_rng_kept():  # the caller's global RNGs are left alone
            runner()
        # the logger keeps 0-d values with dtype object; give users numeric columns
        self.history_ = {k: v.apply(pd.to_numeric, errors="coerce") for k, v in (self.history_ or {}).items()}
        restored = plan.restore_best()
        variance_scale = None
        if recipe.calibrate_variance and self.module.likelihood == "gaussian" and has_val:
            device = self.device
            generator = torch.Generator(device).manual_seed(seed)
            with seeded(seed):  # iterating the loader draws a base seed from the global RNG: keep the caller's
                batches = ({k: v.to(device) for k, v in b.items()} for b in data_module.val_dataloader())
                variance_scale = self.module.calibrate_variance(batches, generator=generator)
            held_out = ", ".join(map(str, data_module.validation_sections))
            logger.info(
                "Variance scale τ² = %.3f (fitted on %d validation spots%s)", variance_scale, data_module.n_val,
                "" if groups is None else f" of the held-out section(s) {held_out}",
            )  # fmt: skip
        spread = None
        if recipe.calibrate_variance and has_val:  # the samples' spread, end to end on the validation spots
            spread = self._calibrate_spread(arrays, data_module.val_idx, seed)
        obs_idx = arrays["obs_indices"]
        self.train_indices_ = obs_idx[data_module.train_idx]
        self.validation_indices_ = obs_idx[data_module.val_idx]
        self.train_params_ = {
            **recipe.to_dict(),
            "recipe": recipe.to_dict(),
            "validation": validation,
            "validation_sections": [str(v) for v in data_module.validation_sections],
            "epochs_run": int(runner.trainer.current_epoch),
            "t_cap": plan.t_cap,
            "lr_milestone_epochs": recipe.milestone_epochs(),
            "seed": seed,
            "n_train_spots": data_module.n_train,
            "n_validation_spots": data_module.n_val,
            "n_views": int(arrays["views"].shape[1]) if "views" in arrays else 1,
            "median_library_size": float(np.median(arrays["library"][data_module.train_idx])),
            "best_epoch": plan.best_epoch,
            "best_validation_loss": plan.best_validation_loss if restored else None,
            "variance_scale": variance_scale,
            "spread_scale": spread,
            "linear_skip_alpha": skip_alpha,
        }
        if any(p.requires_grad for p in self.module.backbone.parameters()):
            # fine-tuned: the model's backbone is now its own (a copy of the one passed in)
            self.backbone_info_ = {"name": self.backbone_info_["name"], "checksum": self.module.backbone.checksum()}
        if restored:
            logger.info(
                "Restored the weights of epoch %d (validation loss %.4f)", plan.best_epoch, plan.best_validation_loss
            )
        self.module.eval()

    def _calibrate_spread(self, arrays: dict[str, np.ndarray], val_idx: np.ndarray, seed: int) -> float:
        """Generate the validation spots and fit the samples' spread so their intervals cover (docs/method.md §5.6)."""
        module = self.module
        module.spread_scale.fill_(1.0)
        module.eval()
        obs_names = self.adata.obs_names[arrays["obs_indices"][val_idx]]
        feats = arrays["features"][val_idx]
        n_samples = CALIBRATION_SAMPLES
        samples = np.zeros((len(val_idx), n_samples, module.n_genes), np.float32)
        batches = batch_bounds(len(val_idx), resolve_batch_size(None, n_samples, self.device))
        for start, stop, out, _ in iter_batches(
            module, feats, spot_seeds(seed, obs_names), batches, n_samples=n_samples, n_steps=None,
            show_progress_bar=False,
        ):  # fmt: skip
            samples[start:stop] = out
        target = expression_target(torch.as_tensor(arrays["counts"][val_idx], dtype=torch.float32),
                                   torch.as_tensor(arrays["library"][val_idx], dtype=torch.float32),
                                   module.target_scale).numpy()  # fmt: skip
        c = spread_scale(target, samples)
        module.spread_scale.fill_(c)
        logger.info("Spread scale c = %.3f (intervals of %d samples fitted on %d validation spots)", c, n_samples,
                    len(val_idx))  # fmt: skip
        return c

    def _validation_groups(
        self, arrays: dict[str, np.ndarray], recipe: TrainingRecipe
    ) -> tuple[np.ndarray | None, str]:
        """Section labels of the training spots when ``recipe`` holds out sections, and the validation used."""
        section_key = self.setup_args.get("section_key")
        sections = None
        if section_key is not None:
            labels = self.adata.obs[section_key].to_numpy()[arrays["obs_indices"]]
            if pd.isna(labels).any():
                raise ValueError(
                    f"`adata.obs[{section_key!r}]` (`section_key`) has {int(pd.isna(labels).sum())} missing labels; "
                    "give every spot its section."
                )
            sections = labels.astype(str)
        n_sections = 0 if sections is None else len(set(sections))
        if recipe.validation == "section" and n_sections < 2:
            raise ValueError(
                f"`validation='section'` needs ≥ 2 sections (`section_key` in `setup_anndata`), found {n_sections}. "
                "Pass `validation='spots'`."
            )
        spots = recipe.validation == "spots" or (recipe.validation == "auto" and n_sections < 3)
        if spots or recipe.validation_size == 0:
            if recipe.validation == "auto" and recipe.validation_size > 0:
                logger.info(
                    "Validation on random spots: %s (`validation='auto'` holds out whole sections from 3 on).",
                    "no `section_key`" if sections is None else f"only {n_sections} section(s)",
                )
            return None, "spots"
        return sections, "section"

    def trainable_parameters(self) -> pd.Series:
        """Number of trainable parameters per part of the adaptation (the backbone is frozen)."""
        parts = self.module.denoiser.trainable_parameters()
        parts["backbone (frozen)"] = sum(p.numel() for p in self.module.backbone.parameters())
        return pd.Series(parts, name="n_parameters")

    # ------------------------------------------------------------------ generation
    @property
    def device(self) -> torch.device:
        """Device of the module."""
        return next(self.module.parameters()).device

    def generate(
        self,
        adata: AnnData | None = None,
        *,
        features_key: str | None = None,
        n_samples: int = 8,
        n_steps: int | None = None,
        batch_size: int | None = None,
        seed: int | None = None,
        return_samples: bool = False,
        precision: Literal["32", "bf16"] = "32",
        reveal: Literal["mean", "sample"] | None = None,
        clip: bool = True,
        mean_estimate: Literal["expected", "samples"] = "expected",
        show_progress_bar: bool = True,
        accelerator: str = "auto",
        devices: int | list[int] | str | None = None,
        strategy: str | None = None,
    ) -> Prediction:
        """Generate panel expression from image features with the reverse masked-diffusion process.

        Works on any AnnData with image features, including H&E-only slides with no measured genes.

        Parameters
        ----------
        adata
            Spots to generate; default: the registered AnnData.
        features_key
            ``adata.obsm`` key with ``(n_spots, D)`` features; default: the key used in :meth:`setup_anndata`.
        n_samples
            Samples ``S`` per spot.
        n_steps
            Reverse steps (≤ ``T``; fewer is faster). Default: 10 (or ``T`` if smaller), chosen on validation spots
            of the training sections, where 5–50 steps gave the same PCC and coverage (README); the paper uses ``T``.
        batch_size
            Spots per batch (each batch runs ``batch_size × n_samples`` sequences); does not change the values.
            Default: ``⌈32 / n_samples⌉`` on CPU (activations stay in the CPU caches), 256 on an accelerator.
        seed
            Seed of the sampler; ``None`` draws one and records it in the output. Each spot draws its random
            numbers from a stream seeded by ``(seed, obs name)``, so its values do not depend on ``batch_size``,
            on the other spots generated with it, or on the device type (float rounding aside).
        return_samples
            Also return the ``(n_spots, S, G)`` samples.
        precision
            ``"32"`` (float32) or ``"bf16"``: the denoiser runs under bfloat16 autocast (faster on recent GPUs;
            results are returned as float32). Train with ``model.train(precision="bf16-mixed")`` to match.
        reveal
            What each reverse step writes into the genes it reveals: ``"mean"`` (the paper) or ``"sample"`` (a draw
            from the predicted distribution; needs ``likelihood="gaussian"``). ``None``: ``"sample"`` for a model
            with ``likelihood="gaussian"``, else ``"mean"``.
        clip
            Clip each sample at the floor of the model scale (0 on ``log2(count + 1)`` and on log1p CP10k: no
            counts) before the mean and s.d. are taken; ``False`` returns the sampler's raw values.
        mean_estimate
            How the returned mean is estimated from the ``S`` trajectories when genes are drawn (``reveal="sample"``):
            ``"expected"`` averages each gene's expected value at its reveal step (Rao–Blackwellised, less
            Monte-Carlo noise; docs/method.md §5.5), ``"samples"`` averages the drawn values. The same with
            ``reveal="mean"``. The standard deviation and the samples are always those of the draws.
        show_progress_bar
            Progress bar over the spots.
        accelerator, devices, strategy
            Generate in several processes or devices with Lightning's ``Trainer.predict``, e.g. ``devices=2,
            strategy="ddp"`` (like :meth:`train`): each process generates a shard of the spots and the shards are
            gathered back in spot order on every process; the values equal a one-process run for the same seed.
            ``devices=None`` (default) generates in this process on the model's device.

        Returns
        -------
        :class:`~hinge_sc.model.Prediction` with the per-spot mean and standard deviation (DataFrames indexed by
        ``adata.obs_names`` with the panel genes as columns, model scale) and optionally the samples.
        """
        adata, feats, seeds, seed = self._generation_inputs(adata, features_key, n_samples, precision, seed)
        if mean_estimate not in ("expected", "samples"):
            raise ValueError(f"`mean_estimate` must be 'expected' or 'samples', found {mean_estimate!r}.")
        batch_size = resolve_batch_size(batch_size, n_samples, self.device)
        check_positive_int(batch_size, argument="batch_size")
        kwargs = {"n_samples": n_samples, "n_steps": n_steps, "precision": precision, "reveal": reveal,
                  "mean_estimate": mean_estimate, "clip": clip}  # fmt: skip
        index, columns = pd.Index(adata.obs_names), pd.Index(self.panel_genes_)
        if devices is not None or strategy is not None:
            samples, mean = generate_distributed(
                self.module, feats, seeds, batch_size=batch_size, accelerator=accelerator,
                devices=devices if devices is not None else "auto", strategy=strategy,
                show_progress_bar=show_progress_bar, **kwargs,
            )  # fmt: skip
            std = samples.std(axis=1)
        else:  # batch by batch: only the mean and s.d. (and the samples if asked for) are kept
            n, n_genes = adata.n_obs, len(self.panel_genes_)
            mean, std = np.zeros((n, n_genes), np.float32), np.zeros((n, n_genes), np.float32)
            if return_samples:
                check_allocation(
                    4 * n * n_samples * n_genes,
                    what=f"Keeping {n:,} spots × {n_samples:,} samples × {n_genes:,} genes",
                    fix="Pass a smaller `n_samples`, `save_samples=False`, or `store=` to write them block by block.",
                )  # fmt: skip
            samples = np.zeros((n, n_samples, n_genes), np.float32) if return_samples else None
            batches = batch_bounds(n, batch_size)
            for start, stop, out, point in iter_batches(
                self.module, feats, seeds, batches, show_progress_bar=show_progress_bar, **kwargs
            ):
                mean[start:stop], std[start:stop] = point, out.std(axis=1)
                if samples is not None:
                    samples[start:stop] = out
        return Prediction(
            mean=pd.DataFrame(mean, index=index, columns=columns),
            std=pd.DataFrame(std, index=index, columns=columns),
            samples=samples if return_samples else None,
            seed=int(seed),
        )

    def _generation_inputs(
        self, adata, features_key: str | None, n_samples: int, precision: str, seed: int | None
    ) -> tuple[AnnData, np.ndarray, np.ndarray, int]:
        """Checked inputs of :meth:`generate`: the AnnData, its ``(n, D)`` features, per-spot seeds and the seed."""
        check_generate_inputs(self, adata, features_key=features_key, batch_size=1)
        adata = resolve_table(type(self), self.adata if adata is None else adata)
        if adata is None:
            raise ValueError("Pass `adata`: this model was loaded without data.")
        check_positive_int(n_samples, argument="n_samples")
        check_seed(seed)
        if not self.is_trained_:
            warnings.warn(
                "This model has not been trained: its output is the untrained network's. Call `model.train()` first.",
                UserWarning,
                stacklevel=3,
            )
        features_key = features_key or self.setup_args["features_key"]
        feats = check_obsm(adata, features_key, argument="features_key", ndim=2)
        n_features = self.module.n_features
        if feats.shape[1] != n_features:
            raise ValueError(
                f"`adata.obsm[{features_key!r}]` has {feats.shape[1]} features, the model was trained on {n_features}. "
                "Compute the features with the same encoder and settings as for training."
            )
        if precision not in ("32", "bf16"):
            raise ValueError(f"`precision` must be '32' or 'bf16', got {precision!r}.")
        if seed is None:
            seed = int(np.random.default_rng().integers(2**31 - 1))
        self.module.eval()
        n_genes = len(self.panel_genes_)
        check_allocation(
            4 * 3 * n_samples * n_genes * self.module.backbone.config.d_model,  # one spot's activations, at least
            what=f"Generating {n_samples:,} samples × {n_genes:,} genes of one spot",
            fix="Pass a smaller `n_samples` (8–32 give the mean and intervals) or `batch_size`.",
        )
        seeds = spot_seeds(seed, adata.obs_names)  # each spot's stream: independent of batches and shards
        return adata, feats, seeds, int(seed)

    def _generate_subset(
        self, adata: AnnData | SpatialData | None, indices: Sequence[int] | None, table_key: str | None, **kwargs
    ) -> Prediction:
        """:meth:`generate` on ``adata`` (or its table, or the registered data), restricted to ``indices``."""
        adata = resolve_table(type(self), self.adata if adata is None else adata, table_key)
        if adata is None:
            raise ValueError("Pass `adata`: this model was loaded without data.")
        if indices is not None:
            adata = adata[np.asarray(indices)]
        return self.generate(adata, **kwargs)

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

    def get_expression(
        self,
        adata: AnnData | SpatialData | None = None,
        indices: Sequence[int] | None = None,
        *,
        table_key: str | None = None,
        gene_list: Sequence[str] | None = None,
        features_key: str | None = None,
        n_samples: int = 8,
        n_steps: int | None = None,
        seed: int | None = None,
        batch_size: int = 64,
        return_std: bool = False,
        return_samples: bool = False,
        clip: bool = True,
        precision: Literal["32", "bf16"] = "32",
        reveal: Literal["mean", "sample"] | None = None,
        mean_estimate: Literal["expected", "samples"] = "expected",
        show_progress_bar: bool = False,
    ) -> pd.DataFrame | tuple:
        """Generated expression of each spot on the model scale, returned (nothing is written into ``adata``).

        The mean over ``n_samples`` samples of the reverse diffusion (:meth:`generate`), e.g. on log2(count + 1)
        for ``target_scale="log2p1"``. Use :func:`hinge_sc.tl.generate` to write it into the data instead.

        Parameters
        ----------
        adata
            AnnData with image features in ``obsm[features_key]``, or a SpatialData object (its table holds the
            spots); default: the registered data. Spots need no measured genes (H&E-only slides work).
        indices
            Positions of the spots to generate (default: all).
        table_key
            SpatialData: the table with the spots (default: the registered one, or the only one).
        gene_list
            Return only these panel genes (default: the whole panel, ``model.panel_genes_``).
        features_key, n_samples, n_steps, seed, batch_size, clip, precision, reveal, mean_estimate, show_progress_bar
            As :meth:`generate`.
        return_std
            Also return the s.d. over samples (spots × genes DataFrame, model scale).
        return_samples
            Also return the samples, ``(n_spots, n_samples, n_genes)`` array (model scale).

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
        if indices is not None:
            target = resolve_table(type(self), self.adata if adata is None else adata, table_key)
            if target is not None:
                indices = check_indices(indices, target.n_obs, argument="indices")
        out = self._generate_subset(
            adata, indices, table_key, features_key=features_key, n_samples=n_samples, n_steps=n_steps,
            batch_size=batch_size, seed=seed, return_samples=return_samples, precision=precision, reveal=reveal,
            clip=clip, mean_estimate=mean_estimate, show_progress_bar=show_progress_bar,
        )  # fmt: skip
        result: list = [out.mean.iloc[:, columns]]
        if return_std:
            result.append(out.std.iloc[:, columns])
        if return_samples:
            result.append(out.samples[:, :, columns])
        return result[0] if len(result) == 1 else tuple(result)

    def get_normalized_expression(
        self,
        adata: AnnData | SpatialData | None = None,
        indices: Sequence[int] | None = None,
        *,
        table_key: str | None = None,
        gene_list: Sequence[str] | None = None,
        library_size: float = CP10K,
        n_samples: int = 8,
        return_mean: bool = True,
        return_numpy: bool | None = None,
        features_key: str | None = None,
        n_steps: int | None = None,
        seed: int | None = None,
        batch_size: int = 64,
        precision: Literal["32", "bf16"] = "32",
        reveal: Literal["mean", "sample"] | None = None,
        show_progress_bar: bool = False,
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
        n_samples
            Generated samples per spot.
        return_mean
            Average over samples; ``False`` returns every sample.
        return_numpy
            Return an array instead of a DataFrame; default ``False``, except with ``return_mean=False`` and
            ``n_samples > 1`` (a 3-D result), as in scvi-tools.
        features_key, n_steps, seed, batch_size, precision, reveal, show_progress_bar
            As :meth:`generate`.

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
        out = self._generate_subset(
            adata, indices, table_key, features_key=features_key, n_samples=n_samples, n_steps=n_steps,
            batch_size=batch_size, seed=seed, return_samples=True, precision=precision, reveal=reveal,
            clip=True, show_progress_bar=show_progress_bar,
        )  # fmt: skip
        counts = to_counts(out.samples, self.module.target_scale)  # (n_spots, S, G), clipped at 0
        normalized = rescale_total(counts, float(library_size))[:, :, columns].astype(np.float32)
        if not return_mean and n_samples > 1:
            return np.moveaxis(normalized, 1, 0)
        values = normalized.mean(axis=1)
        if return_numpy:
            return values
        return pd.DataFrame(values, index=out.mean.index, columns=out.mean.columns[columns])

    # ------------------------------------------------------------------ persistence
    def save(
        self,
        dir_path: str,
        *,
        overwrite: bool = False,
        save_anndata: bool = False,
        save_backbone: bool | None = None,
    ):
        """Save the trained adaptation, the registry and the backbone (or a reference to its file) to ``dir_path``.

        Writes ``model.json`` (registry and settings), ``model.safetensors`` (adaptation weights), optionally
        ``backbone.pt`` and ``adata.h5ad``, each atomically (a temporary file renamed in one step), then
        ``manifest.json`` with the size and SHA-256 of each. No file is a pickle.

        Parameters
        ----------
        dir_path
            Output folder.
        overwrite
            Replace files of an earlier save. Without it, nothing is written if any of the files exists.
        save_anndata
            Also write the registered AnnData.
        save_backbone
            ``None`` (default): a frozen backbone read from files (:meth:`hinge_sc.Backbone.load`,
            :meth:`~hinge_sc.Backbone.from_cellfm`, :meth:`~hinge_sc.Backbone.from_pretrained`) is saved **by
            reference**: the absolute and relative path, size and SHA-256 of its files go into ``model.json`` and
            :meth:`load` reads it from there (the 800M CellFM is not copied into every model); any other backbone
            (random, pre-trained in this session, fine-tuned) is copied to ``backbone.pt``. ``True``: always copy.
            ``False``: neither; pass the same backbone to :meth:`load` (its checksum is checked).

        Raises
        ------
        FileExistsError
            A file to be written exists and ``overwrite=False`` (every such file is listed).
        """
        save_model(self, dir_path, overwrite=overwrite, save_anndata=save_anndata, save_backbone=save_backbone)

    @classmethod
    def load(
        cls,
        dir_path: str,
        adata: AnnData | None = None,
        *,
        backbone: Backbone | None = None,
        accelerator: str = "auto",
        device: int | str | torch.device = "auto",
        trust_legacy_pickle: bool = False,
    ) -> HINGE:
        """Load a model written by :meth:`save`.

        Every file is checked against ``manifest.json`` (size and SHA-256) before it is read, and nothing is
        unpickled, so a folder received from someone else cannot run code.

        Parameters
        ----------
        dir_path
            Folder written by :meth:`save`.
        adata
            Optional data to attach (set up with the saved arguments; its feature width must be the model's); not
            needed for :meth:`generate` on new data. Default: the data saved with ``save(..., save_anndata=True)``
            (``adata.h5ad``, checked against the manifest), else none.
        backbone
            The frozen backbone, if it was not saved with the model, or to use instead of the file it references
            (checked against the saved checksum).
        accelerator, device
            Where to put the model, as in Lightning / scvi-tools: ``accelerator="auto"``, ``device="auto"`` picks a
            GPU when there is one, else the CPU; e.g. ``accelerator="gpu", device=1``. ``device`` may also name a
            torch device (``"cpu"``, ``"cuda:0"``).
        trust_legacy_pickle
            Only for files you trust: read a folder written by hinge_sc 0.1.0, whose ``model.pt`` is a pickle
            (unpickling can run any code its author put in the file). Save the model again to convert it.

        Raises
        ------
        FileNotFoundError
            No model in ``dir_path``; no backbone saved and none given; or the backbone file the model references
            is not at its path (nor at the same place relative to ``dir_path``); the file is named.
        hinge_sc.FileIntegrityError
            A file is missing, truncated or changed since it was saved (the file is named), the folder is from an
            unfinished save, it is a 0.1.0 folder and ``trust_legacy_pickle=False``, the referenced backbone
            file has changed (its SHA-256 differs), or ``model.json`` records an init argument this version does
            not take (the file was edited or written by another version; the argument is named).
        ValueError
            ``backbone`` or ``adata`` does not fit the saved model.
        """
        device = resolve_device(accelerator, device)
        return load_model(
            cls, dir_path, adata=adata, backbone=backbone, device=device, trust_legacy_pickle=trust_legacy_pickle
        )


def _resolve_views_key(adata: AnnData, features_key: str, views_key: str | None) -> str | None:
    """``views_key="auto"`` → ``f"{features_key}_views"`` if ``adata.obsm`` has it (logged), else ``None``."""
    if views_key != "auto":
        return views_key
    candidate = f"{features_key}_views"
    if candidate in adata.obsm:
        logger.info("Registering the augmented views `adata.obsm[%r]` (views_key=None turns them off)", candidate)
        return candidate
    return None
