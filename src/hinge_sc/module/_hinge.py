"""HINGE module: expression-space masked diffusion around an adapted, frozen backbone."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch

from hinge_sc._constants import MODULE_KEYS
from hinge_sc._random import Noise
from hinge_sc._scales import check_scale, to_model_scale
from hinge_sc.nn import AdaptedBackbone, IncrementalDenoiser

from ._base import DiffusionModule, LossOutput
from ._sampler import reverse_step_grid, sample_incremental, sample_masked
from ._schedule import check_n_steps, hidden_schedule, ranks_of, visibility

if TYPE_CHECKING:
    from hinge_sc.nn import Backbone

TargetScale = Literal["log2p1", "log1p_cp10k"]
MaskFill = Literal["gauss", "zero"]
LossOn = Literal["revealed", "hidden"]
Likelihood = Literal["mse", "gaussian"]


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


#: Reverse steps of generation when none are given (at most ``T``). Chosen on validation spots of the training
#: sections (README, ``benchmarks/her2st_recipe.py``): 5, 10, 25 and 50 steps gave the same PCC and interval coverage,
#: one step worse coverage; the paper samples all ``T = 50`` (``HINGE.PAPER_PRESET``).
SAMPLING_STEPS = 10


class HINGEModule(DiffusionModule):
    r"""Masked-diffusion denoiser around a frozen, SoftAdaLN-adapted backbone.

    Training step (§5): draw ``t`` in ``1..t_max`` and one permutation per sample, build
    :math:`x_t = m_t \odot x_0 + (1 - m_t) \odot \epsilon`, predict :math:`\hat x_0` and take the
    squared error over the genes revealed at this step, :math:`d_t = m_{t-1} - m_t`
    (or over every hidden gene with ``loss_on="hidden"``):

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
    n_steps
        Diffusion steps ``T``.
    schedule, schedule_power
        Mask-ratio schedule, see :func:`~hinge_sc.module.hidden_schedule`.
    mask_fill
        Fill of hidden entries: N(0, 1) noise or zeros (same in training and sampling).
    loss_on
        Entries in the loss.
    target_scale
        Expression scale of the targets.
    conditioning, head_rank
        See :class:`~hinge_sc.nn.AdaptedBackbone`.
    backbone_dropout
        Keep the frozen backbone's dropout active while training (as the released code does).
    mask_mechanism, freeze_backbone, lora_rank
        See :class:`~hinge_sc.nn.AdaptedBackbone`.
    likelihood
        ``"mse"``: the denoiser predicts a point value per gene, trained by squared error (the paper).
        ``"gaussian"`` (beyond the paper): it also predicts a log-variance :math:`\log\sigma^2` per gene (a
        :class:`~hinge_sc.nn.VarianceHead`), trained by the Gaussian negative log-likelihood of the residual of the
        (detached) mean, so the mean is trained exactly as with ``"mse"``; the sampler can then draw each revealed
        gene (``sample(..., reveal="sample")``).
    readout
        Per-gene linear readout of the condition added to the predicted mean (zero at initialisation; see
        :class:`~hinge_sc.nn.AdaptedBackbone`).
    linear_skip
        Add a fixed linear function of the standardised image features to the predicted mean,
        :math:`\hat x_0 \mathrel{+}= \tilde f W + b` (buffers ``skip_weight (D, G)`` and ``skip_bias (G,)``, zero
        until :meth:`set_linear_skip`; :class:`~hinge_sc.HINGE` fits them by ridge on its training spots before
        training). The adaptation then learns what the image's linear prediction misses.

    Notes
    -----
    Image features are standardised per dimension before the conditioning network,
    :math:`(f - \mu) / \sigma`, with buffers ``feature_mean`` and ``feature_scale`` (identity until
    :meth:`set_feature_stats` is called; :class:`~hinge_sc.HINGE` sets them from its training spots).
    """

    def __init__(
        self,
        backbone: Backbone,
        token_ids: torch.Tensor,
        n_features: int,
        *,
        n_steps: int = 50,
        schedule: str = "poly_auto",
        schedule_power: float | None = None,
        mask_fill: MaskFill = "gauss",
        loss_on: LossOn = "revealed",
        target_scale: TargetScale = "log2p1",
        conditioning: Literal["sum", "concat"] = "sum",
        head_rank: int | None = None,
        backbone_dropout: bool = True,
        mask_mechanism: Literal["mask_emb", "zero_emb"] | None = None,
        freeze_backbone: bool = True,
        lora_rank: int | None = None,
        likelihood: Likelihood = "mse",
        readout: bool = False,
        linear_skip: bool = False,
    ):
        super().__init__()
        if likelihood not in ("mse", "gaussian"):
            raise ValueError(f"`likelihood` must be 'mse' or 'gaussian', got {likelihood!r}.")
        self.likelihood = likelihood
        if mask_fill not in ("gauss", "zero"):
            raise ValueError(f"`mask_fill` must be 'gauss' or 'zero', got {mask_fill!r}.")
        if loss_on not in ("revealed", "hidden"):
            raise ValueError(f"`loss_on` must be 'revealed' or 'hidden', got {loss_on!r}.")
        expression_target(torch.zeros(1, 1), torch.ones(1), target_scale)  # validates the name
        self.n_genes = int(token_ids.numel())
        self.n_features = int(n_features)
        self.n_steps = check_n_steps(n_steps)
        self.mask_fill, self.loss_on, self.target_scale = mask_fill, loss_on, target_scale
        self.backbone_dropout = backbone_dropout
        self.register_buffer("token_ids", token_ids.long().clone())
        k = hidden_schedule(self.n_genes, self.n_steps, schedule, schedule_power)
        self.register_buffer("n_hidden", torch.as_tensor(k, dtype=torch.long))  # k(t), t = 0 … T
        self.register_buffer("feature_mean", torch.zeros(self.n_features))
        self.register_buffer("feature_scale", torch.ones(self.n_features))
        # log τ² added to the predicted log-variance when sampling (0: as trained; see `calibrate_variance`)
        self.register_buffer("log_variance_offset", torch.zeros(()))
        # c: generated samples are spread c times as far around their mean (1: as sampled; see `spread_scale`)
        self.register_buffer("spread_scale", torch.ones(()))
        self.linear_skip = bool(linear_skip)
        if self.linear_skip:
            self.register_buffer("skip_weight", torch.zeros(self.n_features, self.n_genes))
            self.register_buffer("skip_bias", torch.zeros(self.n_genes))
        self.denoiser = AdaptedBackbone(
            backbone,
            n_features,
            self.n_genes,
            conditioning,
            head_rank,
            mask_mechanism,
            freeze_backbone=freeze_backbone,
            lora_rank=lora_rank,
            variance_head=likelihood == "gaussian",
            readout=readout,
        )

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
        t_max = self.n_steps if t_max is None else int(t_max)
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
        """Run the adapted backbone: ``x0_hat (B, G)`` (and its ``log_variance`` with ``likelihood="gaussian"``),
        plus the ``(B, G)`` ``linear_skip`` term when given."""
        skip = 0.0 if linear_skip is None else linear_skip
        if self.likelihood == "mse":
            return {MODULE_KEYS.PREDICTION: self.denoiser(x_t, visible, condition, self.token_ids) + skip}
        mean, log_var = self.denoiser(x_t, visible, condition, self.token_ids, return_log_variance=True)
        return {MODULE_KEYS.PREDICTION: mean + skip, MODULE_KEYS.LOG_VARIANCE: log_var}

    def loss(self, tensors, inference_outputs, generative_outputs) -> LossOutput:
        r"""Masked MSE over the revealed (or all hidden) entries, averaged over the entries of the batch.

        With ``likelihood="gaussian"`` the Gaussian negative log-likelihood of the detached residual is added:

        .. math::

            \mathcal L = \frac{\sum d\,(\hat x_0 - x_0)^2}{\sum d}
            + \frac{\sum d\,\tfrac12\big(\log\sigma^2 + \mathrm{sg}(\hat x_0 - x_0)^2 / \sigma^2\big)}{\sum d}
        """
        x0 = inference_outputs[MODULE_KEYS.TARGET]
        visible = inference_outputs[MODULE_KEYS.VISIBLE]
        if self.loss_on == "revealed":
            weight = inference_outputs[MODULE_KEYS.VISIBLE_PREV] - visible
        else:
            weight = 1.0 - visible
        sq_err = (generative_outputs[MODULE_KEYS.PREDICTION] - x0) ** 2
        n_entries = weight.sum()
        denominator = n_entries.clamp_min(1.0)  # steps revealing no gene give 0, not NaN
        mse = (sq_err * weight).sum() / denominator
        metrics = {"n_loss_entries": n_entries.detach()}
        loss = mse
        if self.likelihood == "gaussian":
            log_var = generative_outputs[MODULE_KEYS.LOG_VARIANCE]
            nll = 0.5 * (log_var + sq_err.detach() * torch.exp(-log_var))
            nll = (nll * weight).sum() / denominator
            loss = mse + nll
            metrics.update({"mse": mse.detach(), "nll": nll.detach()})
        return LossOutput(loss=loss, n_obs_minibatch=x0.shape[0], extra_metrics=metrics)

    # ------------------------------------------------------------------ reverse process
    def resolve_reveal(self, reveal: Literal["mean", "sample"] | None) -> str | None:
        """The reveal rule :meth:`sample` uses: ``reveal``, or by default ``"sample"`` with a variance head."""
        return reveal or ("sample" if self.likelihood == "gaussian" else "mean")

    def sampling_steps(self, n_steps: int | None) -> int:
        """Reverse steps of a generation: ``n_steps``, or ``min(SAMPLING_STEPS, T)`` for ``None``."""
        return min(SAMPLING_STEPS, self.n_steps) if n_steps is None else int(n_steps)

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
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        r"""Generate expression for a batch of spots.

        Parameters
        ----------
        features
            ``(B, D)`` image features.
        n_samples
            Samples ``S`` per spot.
        n_steps
            Reverse steps (≤ ``T``); ``None`` uses :data:`SAMPLING_STEPS` (10, or ``T`` if smaller).
        generator
            Seeded generator for every random number of the batch (used when ``noise`` is not given).
        noise
            Per-spot random streams, ``Noise.per_spot(seeds, n_samples)``: each spot's samples then depend only on
            its seed, not on the other spots of the batch.
        reveal
            ``"mean"`` (the paper: revealed genes get the predicted mean) or ``"sample"`` (a draw from the predicted
            Gaussian, needs ``likelihood="gaussian"``); ``None``: ``"sample"`` when the module predicts a variance.
            Drawn values use the calibrated variance :math:`\tau^2\sigma^2` (:meth:`calibrate_variance`).
        incremental
            Use the incremental sampler (:func:`~hinge_sc.module.sample_incremental`: revealed genes keep their
            token embedding, only revealed genes are decoded; same values up to float rounding). ``False``, or a
            module in training mode or with LoRA adapters, runs the reference :func:`~hinge_sc.module.sample_masked`.
        return_expected
            Also return each gene's expected value at its reveal step (see
            :func:`~hinge_sc.module.sample_masked`): a lower-variance estimate of the conditional mean.

        Returns
        -------
        ``(B, S, G)`` samples on the model scale, and with ``return_expected`` the ``(B, S, G)`` expected values.
        """
        b = features.shape[0]
        noise = noise if noise is not None else Noise.shared(generator, b * n_samples, features.device)
        if noise.n_rows != b * n_samples:
            raise ValueError(f"`noise` has {noise.n_rows} rows, expected spots × samples = {b * n_samples}.")
        feats = features.repeat_interleave(n_samples, dim=0)

        reveal = self.resolve_reveal(reveal)
        with_variance = reveal == "sample"

        def condition(t, visible_prev):
            return self.condition_vector(t, feats, visible_prev)

        skip = self.skip_term(feats)

        def denoise(x_t, visible, t, visible_prev):
            c = condition(t, visible_prev)
            out = self.generative(x_t, visible, c, skip)
            if not with_variance:
                return out[MODULE_KEYS.PREDICTION]
            return out[MODULE_KEYS.PREDICTION], out[MODULE_KEYS.LOG_VARIANCE] + self.log_variance_offset

        grid = reverse_step_grid(self.n_steps, self.sampling_steps(n_steps))
        if incremental and IncrementalDenoiser.supports(self.denoiser):
            cache = IncrementalDenoiser(self.denoiser, self.token_ids)
            out = sample_incremental(
                cache, condition, self.n_hidden, self.n_genes, grid=grid, noise=noise, reveal=reveal,
                mask_fill=self.mask_fill, log_variance_offset=self.log_variance_offset, return_expected=return_expected,
                mean_offset=skip,
            )  # fmt: skip
        else:
            out = sample_masked(denoise, self.fill, self.n_hidden, self.n_genes, grid=grid, noise=noise,
                                reveal=reveal, return_expected=return_expected)  # fmt: skip
        if return_expected:
            return out[0].view(b, n_samples, self.n_genes), out[1].view(b, n_samples, self.n_genes)
        return out.view(b, n_samples, self.n_genes)

    @torch.no_grad()
    def calibrate_variance(self, batches, *, n_repeats: int = 4, generator: torch.Generator | None = None) -> float:
        r"""Fit the variance scale :math:`\tau^2` on held-out spots and store :math:`\log\tau^2` (docs/method.md §5.5).

        For each batch and repeat, draw a step and masks as in training, predict the revealed genes' mean and
        variance, and set

        .. math::

            \tau^2 = \frac{\sum d\,(x_0 - \hat x_0)^2 / \sigma^2}{\sum d},

        the scale that maximises the Gaussian likelihood of the held-out residuals. The variance head is fit on
        training spots, whose residuals are smaller than a new spot's; :math:`\tau^2 > 1` widens the draws.

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
        :math:`\tau^2` (1.0 when there is nothing to calibrate on).
        """
        if self.likelihood != "gaussian":
            raise ValueError("`calibrate_variance` needs `likelihood='gaussian'` (a variance head).")
        was_training = self.training
        self.eval()
        num = den = 0.0
        for batch in batches:
            for _ in range(n_repeats):
                inf = self.inference(batch[MODULE_KEYS.COUNTS], batch[MODULE_KEYS.LIBRARY],
                                     batch[MODULE_KEYS.FEATURES], generator=generator)  # fmt: skip
                gen = self.generative(**self._get_generative_input(batch, inf))
                weight = inf[MODULE_KEYS.VISIBLE_PREV] - inf[MODULE_KEYS.VISIBLE]
                z2 = (gen[MODULE_KEYS.PREDICTION] - inf[MODULE_KEYS.TARGET]) ** 2 * torch.exp(
                    -gen[MODULE_KEYS.LOG_VARIANCE]
                )
                num += float((z2 * weight).sum())
                den += float(weight.sum())
        self.train(was_training)
        tau2 = num / den if den > 0 else 1.0
        self.log_variance_offset.fill_(float(torch.log(torch.tensor(tau2))))
        return tau2
