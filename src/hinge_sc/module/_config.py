"""Configuration objects of the method: the denoiser and diffusion (:class:`ModuleConfig`) and generation
(:class:`GenerationConfig`). Frozen dataclasses, validated when built, passed down instead of restated."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from hinge_sc._scales import check_scale
from hinge_sc._validators import check_positive_int

from ._likelihood import LIKELIHOODS
from ._schedule import check_n_steps


def _choice(value: Any, argument: str, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"`{argument}` must be one of {list(allowed)}, found {value!r}.")


def _optional_positive_int(value: Any, argument: str) -> None:
    if value is not None:
        check_positive_int(value, argument=argument)


class _Config:
    """Shared helpers of the configuration dataclasses."""

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Names of the fields."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain (JSON-ready) dict."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any):
        """A copy with ``changes`` (``self`` when nothing changes); unknown names raise ``TypeError``."""
        unknown = sorted(set(changes) - set(self.field_names()))
        if unknown:
            raise TypeError(
                f"{type(self).__name__} has no field(s) {', '.join(map(repr, unknown))}; its fields are "
                f"{list(self.field_names())}."
            )
        if all(getattr(self, k) == v for k, v in changes.items()):
            return self
        return dataclasses.replace(self, **changes)

    @classmethod
    def split(cls, kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """``kwargs`` → (the fields of this config, the rest)."""
        names = set(cls.field_names())
        return {k: v for k, v in kwargs.items() if k in names}, {k: v for k, v in kwargs.items() if k not in names}


@dataclass(frozen=True)
class ModuleConfig(_Config):
    """Architecture, adaptation and diffusion of a HINGE model (docs/method.md §2–5).

    Attributes
    ----------
    diffusion_steps
        Diffusion steps ``T`` of the forward process (the reverse steps of a generation are
        :attr:`GenerationConfig.n_steps`).
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
        Embedding of hidden genes, ``"mask_emb"`` or ``"zero_emb"``; ``None``: the backbone's own.
    freeze_backbone
        Keep the backbone frozen (HINGE); ``False`` fine-tunes it (an ablation; the backbone is copied).
    lora_rank
        Optional LoRA adapters of this rank on the frozen backbone's projections.
    likelihood
        Name of a registered likelihood (:data:`hinge_sc.module.LIKELIHOODS`): ``"gaussian"`` (default: mean and
        variance), ``"mse"`` (the paper: a point value), ``"nb"`` (negative binomial on raw counts).
    readout
        Per-gene linear readout of the condition added to the predicted mean (zero at initialisation).
    linear_skip
        A fixed ridge prediction from the image features added to the mean, fitted when training starts (penalty by
        cross-validation over the training sections); the network learns the correction to it, and after training
        the correction is weighed per gene on the validation sections (:func:`~hinge_sc.module.correction_weight`).
        ``None`` (default): on for likelihoods on the model scale (``"gaussian"``, ``"mse"``), off for count
        likelihoods (``"nb"``). Chosen on held-out training sections (README "Recipe": PCC-50 +0.029 on log2).
    standardize_features
        Standardise each image feature with the training spots' mean and s.d. before the conditioning network.
    """

    diffusion_steps: int = 50
    schedule: Literal["poly_auto", "linear", "cosine", "sqrt", "power"] = "poly_auto"
    schedule_power: float | None = None
    mask_fill: Literal["gauss", "zero"] = "gauss"
    loss_on: Literal["revealed", "hidden"] = "revealed"
    target_scale: Literal["log2p1", "log1p_cp10k"] = "log2p1"
    conditioning: Literal["sum", "concat"] = "sum"
    head_rank: int | None = None
    backbone_dropout: bool = True
    mask_mechanism: Literal["mask_emb", "zero_emb"] | None = None
    freeze_backbone: bool = True
    lora_rank: int | None = None
    likelihood: str = "gaussian"
    readout: bool = True
    linear_skip: bool | None = None
    standardize_features: bool = True

    def __post_init__(self):
        check_n_steps(self.diffusion_steps, argument="diffusion_steps")
        _choice(self.mask_fill, "mask_fill", ("gauss", "zero"))
        _choice(self.loss_on, "loss_on", ("revealed", "hidden"))
        check_scale(self.target_scale)
        _choice(self.conditioning, "conditioning", ("sum", "concat"))
        _choice(self.mask_mechanism, "mask_mechanism", (None, "mask_emb", "zero_emb"))
        _optional_positive_int(self.head_rank, "head_rank")
        _optional_positive_int(self.lora_rank, "lora_rank")
        _choice(self.likelihood, "likelihood", tuple(LIKELIHOODS))


#: Reverse steps of generation when none are given (at most ``T``). Chosen on validation spots of the training
#: sections (README, ``benchmarks/her2st_recipe.py``): 5, 10, 25 and 50 steps gave the same PCC and interval coverage,
#: one step worse coverage; the paper samples all ``T = 50`` (``HINGE.PAPER_PRESET``).
SAMPLING_STEPS = 10


@dataclass(frozen=True)
class GenerationConfig(_Config):
    """How expression is generated from image features (docs/method.md §5).

    Attributes
    ----------
    n_samples
        Samples ``S`` per spot; the point prediction is their mean and the uncertainty their s.d.
    n_steps
        Reverse steps (≤ ``T``); ``None``: :data:`SAMPLING_STEPS` (10, or ``T`` if smaller).
    batch_size
        Spots per batch (does not change the values); ``None``: ``⌈32 / S⌉`` on CPU, 256 on an accelerator.
    precision
        ``"32"`` or ``"bf16"`` (the denoiser under bfloat16 autocast).
    reveal
        What a reverse step writes into the genes it reveals: ``"mean"`` (the paper) or ``"sample"`` (a draw from
        the likelihood); ``None``: ``"sample"`` for a likelihood that draws, else ``"mean"``.
    clip
        Clip each sample at the floor of the model scale (0: no counts) before the mean and s.d. are taken.
    mean_estimate
        ``"expected"`` (each gene's expected value at its reveal step, averaged: Rao–Blackwellised) or
        ``"samples"`` (the drawn values averaged).
    """

    n_samples: int = 8
    n_steps: int | None = None
    batch_size: int | None = None
    precision: Literal["32", "bf16"] = "32"
    reveal: Literal["mean", "sample"] | None = None
    clip: bool = True
    mean_estimate: Literal["expected", "samples"] = "expected"

    def __post_init__(self):
        check_positive_int(self.n_samples, argument="n_samples")
        _optional_positive_int(self.n_steps, "n_steps")  # ≤ T is checked against the model by the sampler
        _optional_positive_int(self.batch_size, "batch_size")
        _choice(self.precision, "precision", ("32", "bf16"))
        _choice(self.reveal, "reveal", (None, "mean", "sample"))
        _choice(self.mean_estimate, "mean_estimate", ("expected", "samples"))


#: The generation settings used when none are given.
DEFAULT_GENERATION = GenerationConfig()
