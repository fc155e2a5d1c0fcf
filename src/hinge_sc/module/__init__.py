"""The method: masked-diffusion schedule and masks, the sampler, the loss (pure torch; tensors in, tensors out)."""

from __future__ import annotations

from ._calibration import correction_weight, spread_scale
from ._config import DEFAULT_GENERATION, SAMPLING_STEPS, GenerationConfig, ModuleConfig
from ._generation import batch_bounds, iter_batches, resolve_batch_size, sample_batch
from ._hinge import HINGEModule, expression_target
from ._likelihood import (
    LIKELIHOODS,
    GaussianLikelihood,
    Likelihood,
    PointLikelihood,
    build_likelihood,
    rectified_mean,
    register_likelihood,
)
from ._negative_binomial import NegativeBinomialLikelihood  # registers the "nb" likelihood
from ._sampler import reverse_step_grid, sample_incremental, sample_masked
from ._schedule import (
    curriculum_max_step,
    hidden_schedule,
    permutation_ranks,
    poly_auto_exponent,
    ranks_of,
    visibility,
    warm_start_cap,
)

__all__ = [
    "DEFAULT_GENERATION",
    "LIKELIHOODS",
    "SAMPLING_STEPS",
    "GaussianLikelihood",
    "GenerationConfig",
    "HINGEModule",
    "Likelihood",
    "ModuleConfig",
    "NegativeBinomialLikelihood",
    "PointLikelihood",
    "batch_bounds",
    "build_likelihood",
    "iter_batches",
    "rectified_mean",
    "register_likelihood",
    "resolve_batch_size",
    "sample_batch",
    "curriculum_max_step",
    "expression_target",
    "hidden_schedule",
    "permutation_ranks",
    "poly_auto_exponent",
    "ranks_of",
    "reverse_step_grid",
    "sample_incremental",
    "sample_masked",
    "spread_scale",
    "correction_weight",
    "visibility",
    "warm_start_cap",
]


def __getattr__(name: str):
    if name == "mask_counts":
        from hinge_sc._deprecation import warn_renamed

        warn_renamed("hinge_sc.module.mask_counts", "hinge_sc.module.hidden_schedule")
        return hidden_schedule
    raise AttributeError(f"module 'hinge_sc.module' has no attribute {name!r}")
