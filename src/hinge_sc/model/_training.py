"""What :meth:`hinge_sc.HINGE.train` hands to the training layer: the arrays, the validation groups, the Trainer's
settings, and the record of a run (``train_params_``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hinge_sc._constants import REGISTRY_KEYS
from hinge_sc._counts import panel_counts
from hinge_sc._scales import depth_log_sd
from hinge_sc.train._progress import EpochLines, quiet_lightning, use_epoch_lines

if TYPE_CHECKING:
    from hinge_sc.train import HINGEDataModule, HINGETrainingPlan, TrainingRecipe

logger = logging.getLogger(__name__)


def training_arrays(model: Any) -> dict[str, np.ndarray]:
    """Panel counts, library sizes, features, views, sections and names of the registered spots with panel counts."""
    manager = model.adata_manager
    x = manager.get_from_registry(REGISTRY_KEYS.X_KEY)
    var_names = pd.Index(manager.get_state_registry(REGISTRY_KEYS.X_KEY).column_names)
    panel = panel_counts(x, var_names, model.panel_genes_, purpose="training", stacklevel=6)
    keep = panel.keep
    arrays = {
        "obs_indices": keep,
        "obs_names": np.asarray(model.adata.obs_names[keep]).astype(str),
        "counts": panel.counts,
        "library": panel.library,
        "features": np.asarray(manager.get_from_registry(REGISTRY_KEYS.FEATURES_KEY))[keep],
        "sections": None,
    }
    if REGISTRY_KEYS.VIEWS_KEY in manager.data_registry:
        arrays["views"] = np.asarray(manager.get_from_registry(REGISTRY_KEYS.VIEWS_KEY))[keep]
    section_key = model.setup_args.get("section_key")
    if section_key is not None:
        labels = model.adata.obs[section_key].to_numpy()[keep]
        if pd.isna(labels).any():
            raise ValueError(
                f"`adata.obs[{section_key!r}]` (`section_key`) has {int(pd.isna(labels).sum())} missing labels; "
                "give every spot its section."
            )
        arrays["sections"] = labels.astype(str)
    return arrays


def validation_groups(arrays: dict[str, np.ndarray], recipe: TrainingRecipe) -> tuple[np.ndarray | None, str]:
    """Section labels of the training spots when ``recipe`` holds out sections, and the validation used."""
    sections = arrays["sections"]
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


def trainer_settings(
    recipe: TrainingRecipe, *, has_val: bool, n_steps: int, strategy: str | None, show_progress_bar: bool,
    trainer_kwargs: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """Keyword arguments of scvi-tools' ``TrainRunner`` (and so of the Lightning ``Trainer``) for ``recipe``."""
    kwargs = dict(trainer_kwargs)
    if strategy is not None:
        kwargs["strategy"] = strategy
    quiet_lightning()
    epoch_lines = use_epoch_lines(show_progress_bar)  # a log file: one line per epoch instead of the bar
    if epoch_lines:
        kwargs["callbacks"] = [*kwargs.get("callbacks", []), EpochLines(n_steps)]
    kwargs.setdefault("check_val_every_n_epoch", 1 if has_val else None)
    return {
        "max_epochs": recipe.max_epochs, "early_stopping": recipe.early_stopping and has_val,
        "early_stopping_monitor": "validation_loss", "early_stopping_patience": recipe.early_stopping_patience,
        "early_stopping_warmup_epochs": recipe.warmup_epochs, "gradient_clip_val": recipe.gradient_clip_val,
        "enable_progress_bar": show_progress_bar and not epoch_lines, **kwargs,
    }  # fmt: skip


def training_record(
    recipe: TrainingRecipe, plan: HINGETrainingPlan, data: HINGEDataModule, *, validation: str, epochs_run: int,
    seed: int,
) -> dict[str, Any]:  # fmt: skip
    """``train_params_`` of a run: the recipe, the split, what the plan fitted, the sections and the training depth."""
    results = plan.results
    return {
        **recipe.to_dict(),
        "recipe": recipe.to_dict(),
        "validation": validation,
        "validation_sections": [str(v) for v in data.validation_sections],
        "epochs_run": int(epochs_run),
        "t_cap": plan.t_cap,
        "lr_milestone_epochs": recipe.milestone_epochs(),
        "seed": seed,
        "n_train_spots": data.n_train,
        "n_validation_spots": data.n_val,
        "n_views": data.n_views,
        "median_library_size": float(np.median(data.training_library().numpy())),
        "depth_log_sd": depth_log_sd(data.training_library().numpy(), data.training_groups()),
        "sections": data.section_record(),
        "best_epoch": plan.best_epoch,
        "best_validation_loss": plan.best_validation_loss if results["restored"] else None,
        "variance_scale": results["variance_scale"],
        "spread_scale": results["spread_scale"],
        "correction_weight_mean": results["correction_weight"],
        "linear_skip_alpha": results["linear_skip_alpha"],
        "linear_skip_spots": results.get("skip_refit_on") or (data.n_train if results["linear_skip_alpha"] else None),
    }
