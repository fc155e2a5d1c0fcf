"""HINGE module: expression-space masked diffusion around an adapted, frozen backbone."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch

from hinge_sc._constants import MODULE_KEYS
from hinge_sc._random import Noise
from hinge_sc._scales import check_scale, to_model_scale
from hinge_sc.nn import AdaptedBackbone, IncrementalDenoiser

from ._base import DiffusionModule, LossOutput
from ._config import SAMPLING_STEPS, ModuleConfig
from ._likelihood import LIKELIHOODS, build_likelihood
from ._sampler import reverse_step_grid, sample_incremental, sample_masked
from ._schedule import hidden_schedule, ranks_of, visibility

if TYPE_CHECKING:
    from hinge_sc.nn import Backbone

TargetScale = Literal["log2p1", "log1p_cp10k"]


def expression_target(counts: torch.Tensor, library: torch.Tensor, scale: TargetScale) -> torch.Tensor:
    r"""Model-scale target from raw counts (docs/method.md §1).

    .. math::

        x_0 = \log_2(\text{count} + 1) \quad\text{or}\quad \log(1 + 10^4\,\text{count}/\text{library})

    The one definition of both scales is :func:`hinge_sc._scales.to_model_scale` (spots with library 0 give 0).

    Parameters
    ----------
    counts
        ``(B, G)`` raw panel counts.
    library
        ``(B,)`` total counts of each spot over all genes (only used for ``log1p_cp10k``).
    """
    check_scale(scale)
    return to_model_scale(counts, scale, library)


class HINGEModule(DiffusionModule):
    r"""Masked-diffusion denoiser around a frozen, SoftAdaLN-adapted backbone.

    Training step (§5): draw ``t`` in ``1..t_max`` and one permutation per sample, build
    :math:`x_t = m_t \odot x_0 + (1 - m_t) \odot \epsilon`, predict the outputs of the likelihood at every gene and
    take its loss over the genes revealed at this step, :math:`d_t = m_{t-1} - m_t` (or over every hidden gene with
    ``loss_on="hidden"``); with the paper's point likelihood that is

    .. math::

        \mathcal L = \frac{\sum_{b,g} d_{t,bg}\,(\hat x_{0,bg} - x_{0,bg})^2}{\sum_{b,g} d_{t,bg}}

    Parameters
    ----------
    backbone
        Frozen sc-FM.
    token_ids
        ``(G,)`` backbone token ids of the panel genes.
    n_features
        Image-feature width ``D``.
    config
        Architecture, adaptation and diffusion (:class:`~hinge_sc.module.ModuleConfig`; default: its defaults).
    **overrides
        Fields of ``config`` to change for this module.

    Attributes
    ----------
    likelihood
        The :class:`~hinge_sc.module.Likelihood` of ``config.likelihood``: the denoiser's output heads, the loss,
        and what a reveal step writes.

    Notes
    -----
    Image features are standardised per dimension before the conditioning network,
    :math:`(f - \mu) / \sigma`, with buffers ``feature_mean`` and ``feature_scale`` (identity until
    :meth:`set_feature_stats` is called; :class:`~hinge_sc.HINGE` sets them from its training spots). With
    ``config.linear_skip`` a fixed linear function of the standardised features is added to the predicted mean,
    :math:`\hat x_0 \mathrel{+}= \tilde f W + b` (buffers ``skip_weight (D, G)``, ``skip_bias (G,)``, zero until
    :meth:`set_linear_skip`; the training plan fits them by ridge when training starts).
    """

    def __init__(
        self,
        backbone: Backbone,
        token_ids: torch.Tensor,
        n_features: int,
        config: ModuleConfig | None = None,
        **overrides: Any,
    ):
        super().__init__()
        config = (config or ModuleConfig()).replace(**overrides)
        self.config = config
        self.n_genes = int(token_ids.numel())
        self.n_features = int(n_features)
        self.diffusion_steps = config.diffusion_steps
        self.mask_fill, self.loss_on, self.target_scale = config.mask_fill, config.loss_on, config.target_scale
        self.backbone_dropout = config.backbone_dropout
        self.register_buffer("token_ids", token_ids.long().clone())
        k = hidden_schedule(self.n_genes, self.diffusion_steps, config.schedule, config.schedule_power)
        self.register_buffer("n_hidden", torch.as_tensor(k, dtype=torch.long))  # k(t), t = 0 … T
        self.register_buffer("feature_mean", torch.zeros(self.n_features))
        self.register_buffer("feature_scale", torch.ones(self.n_features))
        # c: generated samples are spread c times as far around their mean (1: as sampled; see `spread_scale`)
        self.register_buffer("spread_scale", torch.ones(()))
        self.linear_skip = self.resolve_linear_skip(config)
        if self.linear_skip:
            self.register_buffer("skip_weight", torch.zeros(self.n_features, self.n_genes))
            self.register_buffer("skip_bias", torch.zeros(self.n_genes))
            # w: per-gene weight of the learned correction to the skip (1: as learned; see `correction_weight`)
            self.register_buffer("correction_weight", torch.ones(self.n_genes))
        self.likelihood = build_likelihood(config.likelihood, self.n_genes, config.target_scale)
        self.denoiser = AdaptedBackbone(
            backbone,
            n_features,
            self.n_genes,
            config.conditioning,
            config.head_rank,
            config.mask_mechanism,
            freeze_backbone=config.freeze_backbone,
            lora_rank=config.lora_rank,
            heads=self.likelihood.heads,
            readout=config.readout,
        )

    #: Whether this module can carry a linear skip (the Gaussian-diffusion ablation cannot).
    supports_linear_skip: bool = True

    @classmethod
    def resolve_linear_skip(cls, config: ModuleConfig) -> bool:
        """``config.linear_skip``; ``None``: on for likelihoods on the model scale, off for count likelihoods."""
        if config.linear_skip is not None:
            return bool(config.linear_skip)
        return cls.supports_linear_skip and not LIKELIHOODS[config.likelihood].uses_counts

    @property
    def backbone(self) -> Backbone:
        """The frozen backbone."""
        return self.denoiser.backbone

    def train(self, mode: bool = True):
        """Set training mode; the frozen backbone stays in eval mode unless ``backbone_dropout``."""
        super().train(mode)
        if mode and not self.backbone_dropout:
            self.denoiser.backbone.eval()
        return self

    # ------------------------------------------------------------------ pieces of the forward process
    @torch.no_grad()
    def set_feature_stats(self, mean: torch.Tensor, std: torch.Tensor, eps: float = 1e-6) -> None:
        """Set the per-feature standardisation; ``(D,)`` mean and s.d. (constant features get scale 1)."""
        if mean.shape != (self.n_features,) or std.shape != (self.n_features,):
            raise ValueError(
                f"Feature statistics must have shape ({self.n_features},), got {tuple(mean.shape)} and "
                f"{tuple(std.shape)}."
            )
        self.feature_mean.copy_(mean)
        self.feature_scale.copy_(torch.where(std > eps, std, torch.ones_like(std)))

    def standardize(self, features: torch.Tensor) -> torch.Tensor:
        r"""``(B, D)`` image features → :math:`(f - \mu) / \sigma` with the stored statistics."""
        return (features - self.feature_mean) / self.feature_scale

    def condition_vector(self, t: torch.Tensor, features: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """Conditioning vector from step ``t (B,)``, raw image features ``(B, D)`` (standardised here) and mask."""
        return self.denoiser.condition_embedding(t, self.standardize(features), visible)

    @torch.no_grad()
    def set_linear_skip(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Set the linear skip: ``weight (D, G)`` and ``bias (G,)`` on the standardised features."""
        if not self.linear_skip:
            raise ValueError("This module has no linear skip; build it with `linear_skip=True`.")
        if weight.shape != self.skip_weight.shape or bias.shape != self.skip_bias.shape:
            raise ValueError(
                f"The linear skip needs weight {tuple(self.skip_weight.shape)} and bias {tuple(self.skip_bias.shape)}, "
                f"got {tuple(weight.shape)} and {tuple(bias.shape)}."
            )
        self.skip_weight.copy_(weight)
        self.skip_bias.copy_(bias)

    def skip_term(self, features: torch.Tensor) -> torch.Tensor | None:
        r"""``(B, G)`` linear skip :math:`\tilde f W + b` of raw features ``(B, D)``; ``None`` without a skip."""
        if not self.linear_skip:
            return None
        return self.standardize(features) @ self.skip_weight + self.skip_bias

    def fill(self, x: torch.Tensor, visible: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        r""":math:`m \odot x + (1 - m) \odot \epsilon`, :math:`\epsilon` = ``noise`` (N(0, 1)) or 0 (``"zero"``)."""
        if self.mask_fill == "zero":
            return x * visible
        return x * visible + noise.to(x.device) * (1.0 - visible)

    def _get_inference_input(self, tensors: dict[str, torch.Tensor], **kwargs) -> dict[str, torch.Tensor]:
        return {
            MODULE_KEYS.COUNTS: tensors[MODULE_KEYS.COUNTS],
            MODULE_KEYS.LIBRARY: tensors[MODULE_KEYS.LIBRARY],
            MODULE_KEYS.FEATURES: tensors[MODULE_KEYS.FEATURES],
        }

    def inference(
        self,
        counts: torch.Tensor,
        library: torch.Tensor,
        features: torch.Tensor,
        t_max: int | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Draw a step and nested masks per sample, corrupt the target and build the condition.

        Parameters
        ----------
        counts, library, features
            ``(B, G)``, ``(B,)``, ``(B, D)``.
        t_max
            Largest step drawn (``t ~ U{1..t_max}``); ``None`` means ``T``. The warm-start curriculum
            passes ``t_cap`` here.
        generator
            Optional generator (validation uses a fixed one so its loss is comparable across epochs).
        """
        t_max = self.diffusion_steps if t_max is None else int(t_max)
        b, device = counts.shape[0], counts.device
        x0 = expression_target(counts, library, self.target_scale)
        gen_device = generator.device if generator is not None else device
        t = torch.randint(1, t_max + 1, (b,), generator=generator, device=gen_device).to(device)
        noise = Noise.shared(generator, b, device)
        ranks = ranks_of(noise.rand(self.n_genes))
        visible = visibility(ranks, self.n_hidden[t])
        visible_prev = visibility(ranks, self.n_hidden[t - 1])
        x_t = self.fill(x0, visible, noise.randn(self.n_genes))
        c = self.condition_vector(t, features, visible_prev)
        return {
            MODULE_KEYS.TARGET: x0,
            MODULE_KEYS.X_T: x_t,
            MODULE_KEYS.STEP: t,
            MODULE_KEYS.VISIBLE: visible,
            MODULE_KEYS.VISIBLE_PREV: visible_prev,
            MODULE_KEYS.CONDITION: c,
            MODULE_KEYS.SKIP: self.skip_term(features),
        }

    def _get_generative_input(self, tensors, inference_outputs, **kwargs) -> dict[str, torch.Tensor]:
        keys = (MODULE_KEYS.X_T, MODULE_KEYS.VISIBLE, MODULE_KEYS.CONDITION, MODULE_KEYS.SKIP)
        return {k: inference_outputs.get(k) for k in keys}

    def generative(
        self, x_t: torch.Tensor, visible: torch.Tensor, condition: torch.Tensor, linear_skip: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Run the adapted backbone: ``{"mean": (B, G), <head>: (B, G)}`` for the likelihood's heads, with the
        ``(B, G)`` ``linear_skip`` term added to the mean when given."""
        out = self.denoiser(x_t, visible, condition, self.token_ids)
        if linear_skip is not None:
            out[MODULE_KEYS.PREDICTION] = out[MODULE_KEYS.PREDICTION] + linear_skip
        return out

    def loss(self, tensors, inference_outputs, generative_outputs) -> LossOutput:
        """The likelihood's loss over the revealed (or all hidden) entries, averaged over the entries of the batch."""
        x0 = inference_outputs[MODULE_KEYS.TARGET]
        visible = inference_outputs[MODULE_KEYS.VISIBLE]
        if self.loss_on == "revealed":
            weight = inference_outputs[MODULE_KEYS.VISIBLE_PREV] - visible
        else:
            weight = 1.0 - visible
        loss, metrics = self.likelihood.loss(
            generative_outputs, x0, weight, counts=tensors.get(MODULE_KEYS.COUNTS), library=tensors.get(MODULE_KEYS.LIBRARY)
        )
        metrics = {"n_loss_entries": weight.sum().detach(), **metrics}
        return LossOutput(loss=loss, n_obs_minibatch=x0.shape[0], extra_metrics=metrics)

    # ------------------------------------------------------------------ reverse process
    def resolve_reveal(self, reveal: Literal["mean", "sample"] | None) -> str | None:
        """The reveal rule :meth:`sample` uses: ``reveal``, or by default ``"sample"`` for a likelihood that draws."""
        if reveal == "sample" and not self.likelihood.draws:
            raise ValueError(
                f"`reveal='sample'` needs a likelihood that draws; this model's is {self.likelihood.name!r} (a point "
                "value per gene). Use `reveal='mean'`, or train with `likelihood='gaussian'` or `'nb'`."
            )
        return reveal or ("sample" if self.likelihood.draws else "mean")

    def sampling_steps(self, n_steps: int | None) -> int:
        """Reverse steps of a generation: ``n_steps``, or ``min(SAMPLING_STEPS, T)`` for ``None``."""
        return min(SAMPLING_STEPS, self.diffusion_steps) if n_steps is None else int(n_steps)

    @torch.inference_mode()
    def sample(
        self,
        features: torch.Tensor,
        n_samples: int = 8,
        n_steps: int | None = None,
        generator: torch.Generator | None = None,
        *,
        noise: Noise | None = None,
        reveal: Literal["mean", "sample"] | None = None,
        incremental: bool = True,
        return_expected: bool = False,
        library: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        r"""Generate expression for a batch of spots.

        Parameters
        ----------
        features
            ``(B, D)`` image features.
        n_samples
            Samples ``S`` per spot.
        n_steps
            Reverse steps (≤ ``T``); ``None`` uses :data:`~hinge_sc.module.SAMPLING_STEPS` (10, or ``T`` if smaller).
        generator
            Seeded generator for every random number of the batch (used when ``noise`` is not given).
        noise
            Per-spot random streams, ``Noise.per_spot(seeds, n_samples)``: each spot's samples then depend only on
            its seed, not on the other spots of the batch.
        reveal
            ``"mean"`` (the paper: revealed genes get the likelihood's point value) or ``"sample"`` (a draw from the
            likelihood); ``None``: ``"sample"`` for a likelihood that draws.
        incremental
            Use the incremental sampler (:func:`~hinge_sc.module.sample_incremental`: revealed genes keep their
            token embedding, only revealed genes are decoded; same values up to float rounding). ``False``, or a
            module in training mode or with LoRA adapters, runs the reference :func:`~hinge_sc.module.sample_masked`.
        return_expected
            Also return each gene's expected value at its reveal step (see
            :func:`~hinge_sc.module.sample_masked`): a lower-variance estimate of the conditional mean.
        library
            ``(B,)`` library sizes to generate at, for count likelihoods (``None``: the training depth).

        Returns
        -------
        ``(B, S, G)`` samples on the model scale, and with ``return_expected`` the ``(B, S, G)`` expected values.
        """
        b = features.shape[0]
        noise = noise if noise is not None else Noise.shared(generator, b * n_samples, features.device)
        if noise.n_rows != b * n_samples:
            raise ValueError(f"`noise` has {noise.n_rows} rows, expected spots × samples = {b * n_samples}.")
        feats = features.repeat_interleave(n_samples, dim=0)
        rows_library = None if library is None else library.repeat_interleave(n_samples, dim=0)
        reveal = self.resolve_reveal(reveal)

        def condition(t, visible_prev):
            return self.condition_vector(t, feats, visible_prev)

        skip = self.skip_term(feats)

        def denoise(x_t, visible, t, visible_prev):
            return self.generative(x_t, visible, condition(t, visible_prev), skip)

        grid = reverse_step_grid(self.diffusion_steps, self.sampling_steps(n_steps))
        common = {"grid": grid, "noise": noise, "likelihood": self.likelihood, "reveal": reveal,
                  "return_expected": return_expected, "library": rows_library}  # fmt: skip
        if incremental and IncrementalDenoiser.supports(self.denoiser):
            cache = IncrementalDenoiser(self.denoiser, self.token_ids)
            out = sample_incremental(cache, condition, self.n_hidden, self.n_genes, mask_fill=self.mask_fill,
                                     mean_offset=skip, **common)  # fmt: skip
        else:
            out = sample_masked(denoise, self.fill, self.n_hidden, self.n_genes, **common)
        if return_expected:
            return out[0].view(b, n_samples, self.n_genes), out[1].view(b, n_samples, self.n_genes)
        return out.view(b, n_samples, self.n_genes)

    @torch.no_grad()
    def calibrate_likelihood(
        self, batches, *, n_repeats: int = 4, generator: torch.Generator | None = None
    ) -> float | None:
        r"""Fit the likelihood's calibration on held-out spots (docs/method.md §5.5).

        For each batch and repeat, draw a step and masks as in training and predict the revealed genes; the
        likelihood fits its calibration on those entries (:meth:`~hinge_sc.module.Likelihood.calibrate`; for the
        Gaussian the variance scale :math:`\tau^2 = \sum d\,(x_0 - \hat x_0)^2/\sigma^2 / \sum d`, the scale that
        maximises the likelihood of the held-out residuals: the variance head is fit on training spots, whose
        residuals are smaller than a new spot's).

        Parameters
        ----------
        batches
            Iterable of held-out batches (dicts with counts, library and features, as the data loaders give).
        n_repeats
            Draws of step and masks per batch.
        generator
            Seeded generator of the steps and masks.

        Returns
        -------
        The fitted calibration (e.g. :math:`\tau^2`), or ``None`` for a likelihood without one.
        """
        was_training = self.training
        self.eval()
        outputs = []
        for batch in batches:
            for _ in range(n_repeats):
                inf = self.inference(batch[MODULE_KEYS.COUNTS], batch[MODULE_KEYS.LIBRARY],
                                     batch[MODULE_KEYS.FEATURES], generator=generator)  # fmt: skip
                gen = self.generative(**self._get_generative_input(batch, inf))
                weight = inf[MODULE_KEYS.VISIBLE_PREV] - inf[MODULE_KEYS.VISIBLE]
                outputs.append((gen, inf[MODULE_KEYS.TARGET], weight))
        self.train(was_training)
        return self.likelihood.calibrate(outputs)
