"""Training: the masked-diffusion schedule, the curriculum, data splitting and the training plan."""

from __future__ import annotations

from ._schedule import (
    curriculum_max_step,
    mask_counts,
    permutation_ranks,
    poly_auto_exponent,
    visibility,
    warm_start_cap,
)

__all__ = [
    "HINGEDataModule",
    "HINGETrainingPlan",
    "curriculum_max_step",
    "mask_counts",
    "permutation_ranks",
    "poly_auto_exponent",
    "visibility",
    "warm_start_cap",
]


def __getattr__(name: str):
    # the Lightning pieces import scvi-tools; keep the schedule importable without it
    if name == "HINGETrainingPlan":
        from ._trainingplan import HINGETrainingPlan

        return HINGETrainingPlan
    if name == "HINGEDataModule":
        from ._datamodule import HINGEDataModule

        return HINGEDataModule
    raise AttributeError(name)
