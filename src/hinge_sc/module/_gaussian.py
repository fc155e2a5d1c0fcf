"""Ablation of HINGE: Gaussian (DDPM) diffusion over all genes instead of masked diffusion (docs/method.md §7)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from hinge_sc._constants import MODULE_KEYS
from hinge_sc._random import Noise

from ._base import LossOutput
from ._hinge import HINGEModule, expression_target
from ._sampler import reverse_step_grid

#: Offset ``s`` of the cosine noise schedule and the largest per-step ``β``.
COSINE_OFFSET, MAX_BETA = 0.008, 0.999


def cosine_alpha_bar(n_steps: int, offset: float = COSINE_OFFSET) -> np.ndarray:
    r"""Cumulative signal fraction :math:`\bar\alpha_t`, ``t = 0 … T``, of the cosine schedule (Nichol & Dhariwal).

    .. math::

        \bar\alpha_t = \prod_{u \le t} (1 - \beta_u), \quad
        \beta_u = \min\Big(1 - \frac{f(u)}{f(u-1)}, 0.999\Big), \quad
        f(u) = \cos^2\Big(\frac{u/T + s}{1 + s}\,\frac{\pi}{2}\Big)

    Returns
    -------
    Float64 array of length ``T + 1``, ``ᾱ_0 = 1``, strictly decreasing.
    """
    if n_steps < 1:
        raise ValueError(f"`n_steps` must be ≥ 1, got {n_steps}.")
    u = np.arange(n_steps + 1, dtype=np.float64)
    f = np.cos((u / n_steps + offset) / (1 + offset) * math.pi / 2) ** 2
    beta = np.clip(1 - f[1:] / f[:-1], 0.0, MAX_BETA)
    return np.concatenate([[1.0], np.cumprod(1 - beta)])


class GaussianHINGEModule(HINGEModule):
    r"""HINGE with Gaussian diffusion on all genes: the paper's key ablation ("Gaussian instead of masked").

    Same adapted backbone, conditioning and training plan as :class:`~hinge_sc.module.HINGEModule`; only the
    corruption changes. Targets are standardised per gene with the training mean :math:`\mu` and s.d.
    :math:`\sigma` (set by :meth:`set_target_stats`), noised with the cosine schedule, and fed back to the
    backbone on the expression scale; every gene is visible and the model predicts :math:`x_0`:

    .. math::

        z_t = \sqrt{\bar\alpha_t}\,\frac{x_0 - \mu}{\sigma} + \sqrt{1 - \bar\alpha_t}\,\epsilon, \qquad
        \hat x_0 = f(\mu + \sigma z_t, t, c), \qquad
        \mathcal L = \frac{1}{BG}\sum_{b,g} (\hat x_{0,bg} - x_{0,bg})^2

    Sampling is DDIM with :math:`\eta = 1` (ancestral, DDPM-like) on the step grid of
    :func:`~hinge_sc.module.reverse_step_grid`. The warm-start curriculum then means low noise levels first.
    All arguments are those of :class:`~hinge_sc.module.HINGEModule` (``schedule`` still sets the curriculum
    cap; ``mask_fill`` and ``loss_on`` are unused). The ablation predicts :math:`x_0` by squared error: its
    likelihood must be ``"mse"`` and it has no linear skip (both raise otherwise).
    """

    supports_linear_skip = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.likelihood.name != "mse" or self.linear_skip:
            raise ValueError(
                "The Gaussian-diffusion ablation trains a point prediction of x_0 by squared error: build it with "
                f"`likelihood='mse'` and `linear_skip=False` (found likelihood={self.likelihood.name!r}, "
                f"linear_skip={self.linear_skip})."
            )
        self.register_buffer("alpha_bar", torch.as_tensor(cosine_alpha_bar(self.diffusion_steps), dtype=torch.float32))
        self.register_buffer("gene_mean", torch.zeros(self.n_genes))
        self.register_buffer("gene_std", torch.ones(self.n_genes))

    def set_target_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Set the per-gene mean and s.d. ``(G,)`` of the training targets (s.d. floored at 1e-3)."""
        mean, std = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
        if mean.shape != (self.n_genes,) or std.shape != (self.n_genes,):
            raise ValueError(
                f"`mean` and `std` must have shape ({self.n_genes},), got {tuple(mean.shape)}, {tuple(std.shape)}."
            )
        self.gene_mean.copy_(mean)
        self.gene_std.copy_(std.clamp_min(1e-3))

    def inference(
        self,
        counts: torch.Tensor,
        library: torch.Tensor,
        features: torch.Tensor,
        t_max: int | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Draw ``t ~ U{1..t_max}``, noise the standardised target and build the condition (all genes visible)."""
        t_max = self.diffusion_steps if t_max is None else int(t_max)
        b, device = counts.shape[0], counts.device
        x0 = expression_target(counts, library, self.target_scale)
        gen_device = generator.device if generator is not None else device
        t = torch.randint(1, t_max + 1, (b,), generator=generator, device=gen_device).to(device)
        abar = self.alpha_bar[t].unsqueeze(-1)
        z0 = (x0 - self.gene_mean) / self.gene_std
        z_t = abar.sqrt() * z0 + (1 - abar).sqrt() * Noise.shared(generator, b, device).randn(self.n_genes)
        visible = torch.ones_like(x0)
        return {
            MODULE_KEYS.TARGET: x0,
            MODULE_KEYS.X_T: self.gene_mean + self.gene_std * z_t,
            MODULE_KEYS.STEP: t,
            MODULE_KEYS.VISIBLE: visible,
            MODULE_KEYS.VISIBLE_PREV: visible,
            MODULE_KEYS.CONDITION: self.condition_vector(t, features, visible),
        }

    def loss(self, tensors, inference_outputs, generative_outputs) -> LossOutput:
        """MSE of the :math:`x_0` prediction over all genes."""
        x0 = inference_outputs[MODULE_KEYS.TARGET]
        loss = ((generative_outputs[MODULE_KEYS.PREDICTION] - x0) ** 2).mean()
        n_entries = torch.tensor(float(x0.numel()), device=x0.device)
        return LossOutput(loss=loss, n_obs_minibatch=x0.shape[0], extra_metrics={"n_loss_entries": n_entries})

    def resolve_reveal(self, reveal: str | None) -> None:
        """Gaussian diffusion reveals no genes: always ``None``."""
        return None

    @torch.inference_mode()
    def sample(
        self,
        features: torch.Tensor,
        n_samples: int = 8,
        n_steps: int | None = None,
        generator: torch.Generator | None = None,
        eta: float = 1.0,
        *,
        noise: Noise | None = None,
        reveal: str | None = None,
        return_expected: bool = False,
        library: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        r"""Generate expression by DDIM sampling from pure noise.

        For each pair of grid steps ``t → s``: :math:`\hat z_0` from the denoiser,
        :math:`\hat\epsilon = (z_t - \sqrt{\bar\alpha_t}\hat z_0)/\sqrt{1-\bar\alpha_t}`,
        :math:`z_s = \sqrt{\bar\alpha_s}\hat z_0 + \sqrt{1 - \bar\alpha_s - \sigma^2}\hat\epsilon + \sigma\epsilon`,
        :math:`\sigma = \eta\sqrt{(1-\bar\alpha_s)/(1-\bar\alpha_t)}\sqrt{1-\bar\alpha_t/\bar\alpha_s}`;
        the last step returns :math:`\hat x_0`.

        Parameters
        ----------
        features
            ``(B, D)`` image features.
        n_samples
            Samples ``S`` per spot.
        n_steps
            Reverse steps (≤ ``T``); ``None`` uses ``T``.
        generator
            Seeded generator (used when ``noise`` is not given).
        eta
            0: deterministic DDIM; 1: ancestral sampling.
        noise
            Per-spot random streams (see :meth:`hinge_sc.module.HINGEModule.sample`).
        reveal
            Not used (Gaussian diffusion reveals no genes); must be ``None``.
        return_expected
            Also return the expected values (here the samples themselves), as
            :meth:`hinge_sc.module.HINGEModule.sample` does.
        library
            Not used (the ablation's point likelihood does not model depth).

        Returns
        -------
        ``(B, S, G)`` samples on the model scale (twice with ``return_expected``).
        """
        b, device = features.shape[0], features.device
        if reveal is not None:
            raise ValueError("`reveal` applies to masked diffusion only; the Gaussian ablation takes no `reveal`.")
        n = b * n_samples
        noise = noise if noise is not None else Noise.shared(generator, n, device)
        feats = features.repeat_interleave(n_samples, dim=0)
        visible = torch.ones(n, self.n_genes, device=device)
        z = noise.randn(self.n_genes)
        grid = reverse_step_grid(self.diffusion_steps, n_steps)
        x0_hat = self.gene_mean + self.gene_std * z
        for t, s in itertools.pairwise(grid):
            steps = torch.full((n,), int(t), device=device, dtype=torch.long)
            c = self.condition_vector(steps, feats, visible)
            x0_hat = self.denoiser(self.gene_mean + self.gene_std * z, visible, c, self.token_ids)["mean"]
            if s == 0:
                break
            z0 = (x0_hat - self.gene_mean) / self.gene_std
            ab_t, ab_s = self.alpha_bar[int(t)], self.alpha_bar[int(s)]
            eps_hat = (z - ab_t.sqrt() * z0) / (1 - ab_t).sqrt()
            sigma = eta * ((1 - ab_s) / (1 - ab_t)).sqrt() * (1 - ab_t / ab_s).sqrt()
            z = ab_s.sqrt() * z0 + (1 - ab_s - sigma**2).clamp_min(0).sqrt() * eps_hat
            z = z + sigma * noise.randn(self.n_genes)
        out = x0_hat.view(b, n_samples, self.n_genes)
        return (out, out) if return_expected else out
