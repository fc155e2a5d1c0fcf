"""Training: the Lightning training plan and data module of HINGE, and pre-training of backbones."""

from __future__ import annotations

from ._datamodule import HINGEDataModule, split_sections, split_spots
from ._pretrain import pretrain_backbone
from ._stream import BlockStream, StreamingDataModule
from ._recipe import DEFAULT_RECIPE, PAPER_RECIPE, RECIPES, TrainingRecipe, resolve_recipe
from ._trainingplan import HINGETrainingPlan

__all__ = [
    "BlockStream",
    "DEFAULT_RECIPE",
    "HINGEDataModule",
    "HINGETrainingPlan",
    "PAPER_RECIPE",
    "RECIPES",
    "StreamingDataModule",
    "TrainingRecipe",
    "pretrain_backbone",
    "resolve_recipe",
    "split_sections",
    "split_spots",
]

_MOVED_TO_MODULE = {
    "curriculum_max_step": "curriculum_max_step",
    "mask_counts": "hidden_schedule",
    "permutation_ranks": "permutation_ranks",
    "poly_auto_exponent": "poly_auto_exponent",
    "visibility": "visibility",
    "warm_start_cap": "warm_start_cap",
}


def __getattr__(name: str):
    # the schedule is part of the method and moved to `hinge_sc.module` (0.2)
    if name in _MOVED_TO_MODULE:
        import hinge_sc.module
        from hinge_sc._deprecation import warn_renamed

        new = _MOVED_TO_MODULE[name]
        warn_renamed(f"hinge_sc.train.{name}", f"hinge_sc.module.{new}")
        return getattr(hinge_sc.module, new)
    raise AttributeError(f"module 'hinge_sc.train' has no attribute {name!r}")
