"""SoftAdaLN: identity-initialised modulation of a frozen backbone (docs/method.md §4)."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

SOFTNORM_INIT = -12.0
GATE_BIAS_INIT = 6.0
SOFTNORM_EPS = 1e-6


def timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10_000.0) -> torch.Tensor:
    r"""Sinusoidal embedding of integer steps, cosines before sines.

    .. math::

        e_t = [\cos(t\,\omega_j), \sin(t\,\omega_j)]_{j < \text{dim}/2},
        \quad \omega_j = \text{max\_period}^{-j/(\text{dim}/2)}

    Parameters
    ----------
    t
        ``(B,)`` steps.

    Returns
    -------
    ``(B, dim)``.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def _mlp(d_in: int, d_out: int) -> nn.Sequential:
    """Linear → SiLU → Linear, Xavier-uniform weights and zero biases."""
    mlp = nn.Sequential(nn.Linear(d_in, d_out), nn.SiLU(), nn.Linear(d_out, d_out))
    for lin in (mlp[0], mlp[2]):
        nn.init.xavier_uniform_(lin.weight)
        nn.init.zeros_(lin.bias)
    return mlp


class ConditionEmbedding(nn.Module):
    r"""Condition vector per spot and step.

    ``mode="sum"`` (the released code):
    :math:`c = \mathrm{MLP}_t(e_t) + \mathrm{MLP}_v(v) + \mathrm{MLP}_m(m_{t-1})`;
    ``mode="concat"`` (the paper's text): :math:`c = \mathrm{MLP}([v; e_t])`.

    Parameters
    ----------
    n_features
        Image-feature width ``D``.
    n_genes
        Panel size ``G`` (width of the visibility vector).
    d_model
        Output width ``d``.
    mode
        See above.
    t_dim
        Width of the sinusoidal step embedding.
    """

    def __init__(
        self, n_features: int, n_genes: int, d_model: int, mode: Literal["sum", "concat"] = "sum", t_dim: int = 256
    ):
        super().__init__()
        if mode not in ("sum", "concat"):
            raise ValueError(f"`conditioning` must be 'sum' or 'concat', got {mode!r}.")
        self.mode, self.t_dim = mode, t_dim
        if mode == "sum":
            self.mlp_t = _mlp(t_dim, d_model)
            self.mlp_v = _mlp(n_features, d_model)
            self.mlp_m = _mlp(n_genes, d_model)
        else:
            self.mlp_vt = _mlp(n_features + t_dim, d_model)

    def forward(self, t: torch.Tensor, features: torch.Tensor, visible_prev: torch.Tensor) -> torch.Tensor:
        """``t (B,)``, ``features (B, D)``, ``visible_prev (B, G)`` → ``c (B, d)``."""
        e_t = timestep_embedding(t, self.t_dim)
        if self.mode == "concat":
            return self.mlp_vt(torch.cat([features, e_t], dim=-1))
        return self.mlp_t(e_t) + self.mlp_v(features) + self.mlp_m(visible_prev)


class SoftNorm(nn.Module):
    r"""Soft LayerNorm :math:`(1-\lambda)h + \lambda\,\mathrm{LN}(h)`, :math:`\lambda = \sigma(b)`, ``b`` init −12."""

    def __init__(self, d_model: int, init: float = SOFTNORM_INIT, eps: float = SOFTNORM_EPS):
        super().__init__()
        self.d_model, self.eps = d_model, eps
        self.b = nn.Parameter(torch.tensor(float(init)))

    @property
    def weight(self) -> torch.Tensor:
        """``λ``."""
        return torch.sigmoid(self.b)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        lam = self.weight
        return torch.lerp(h, F.layer_norm(h.float(), (self.d_model,), eps=self.eps).to(h.dtype), lam.to(h.dtype))


def modulate(h: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    r""":math:`h\,(1 + \text{scale}) + \text{shift}`, with ``shift``/``scale`` ``(B, d)`` broadcast over tokens."""
    return torch.addcmul(shift.unsqueeze(1), h, 1.0 + scale.unsqueeze(1))


class ModulationHead(nn.Module):
    r"""``Linear(SiLU(c))`` → ``n_chunks`` vectors of width ``d``, zero-initialised (identity).

    With ``rank`` set, the linear map is factorised ``d → rank → n_chunks·d`` with the second factor
    zero-initialised, so the identity initialisation is kept. Chunks listed in ``gate_chunks`` get
    the bias +6 (``sigmoid(6) ≈ 0.9975``).

    Parameters
    ----------
    d_model
        Width ``d``.
    n_chunks
        6 for a layer head (shift, scale, gate for retention, then for the gated unit); 2 for the final head.
    gate_chunks
        Indices of the gate chunks.
    rank
        Optional low rank.
    """

    def __init__(self, d_model: int, n_chunks: int, gate_chunks: tuple[int, ...] = (), rank: int | None = None):
        super().__init__()
        self.n_chunks = n_chunks
        if rank is not None and not 0 < rank < d_model:
            raise ValueError(f"`head_rank` must be in (0, d_model={d_model}), got {rank}.")
        self.down = nn.Linear(d_model, rank, bias=False) if rank else nn.Identity()
        if rank:
            nn.init.xavier_uniform_(self.down.weight)
        self.up = nn.Linear(rank or d_model, n_chunks * d_model)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        with torch.no_grad():
            for i in gate_chunks:
                self.up.bias[i * d_model : (i + 1) * d_model] = GATE_BIAS_INIT

    def forward(self, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``c (B, d)`` → ``n_chunks`` tensors ``(B, d)``."""
        return self.up(self.down(F.silu(c))).chunk(self.n_chunks, dim=-1)


class SoftAdaLNLayer(nn.Module):
    r"""Trainable part of one adapted layer: two SoftNorms and one 6-chunk head.

    For each sub-layer ``F`` (retention, then the gated unit):

    .. math::

        u = F\big(\mathrm{SoftNorm}(h)(1+\text{scale}) + \text{shift}\big), \qquad
        h \leftarrow \mathrm{LN}_\text{frozen}\big(\alpha h + \sigma(g)\,\mathrm{Dropout}(u)\big)
    """

    def __init__(self, d_model: int, rank: int | None = None):
        super().__init__()
        self.norm1 = SoftNorm(d_model)
        self.norm2 = SoftNorm(d_model)
        self.head = ModulationHead(d_model, 6, gate_chunks=(2, 5), rank=rank)

    def forward(self, layer: nn.Module, h: torch.Tensor, c: torch.Tensor, key_mask: torch.Tensor | None):
        """Run the frozen ``layer`` (a :class:`~hinge_sc.nn.RetentionLayer`) under modulation by ``c``."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.head(c)
        u = layer.attn(modulate(self.norm1(h), shift1, scale1), key_mask if layer.masks_hidden_keys else None)
        h = layer.residual(layer.post_norm1, h, u, torch.sigmoid(gate1).unsqueeze(1))
        u = layer.ffn(modulate(self.norm2(h), shift2, scale2))
        return layer.residual(layer.post_norm2, h, u, torch.sigmoid(gate2).unsqueeze(1))


class FinalModulation(nn.Module):
    r"""Before the frozen value decoder: :math:`\mathrm{SoftNorm}(h)(1+\text{scale}) + \text{shift}`."""

    def __init__(self, d_model: int):
        super().__init__()
        self.norm = SoftNorm(d_model)
        self.head = ModulationHead(d_model, 2)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.head(c)
        return modulate(self.norm(h), shift, scale)
