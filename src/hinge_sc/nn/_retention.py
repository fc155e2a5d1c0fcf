"""One ERetNet layer of the CellFM-style backbone (docs/method.md §3): retention + gated unit, DeepNorm."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

RMS_EPS = 1e-12


def per_head_rms_norm(x: torch.Tensor, eps: float = RMS_EPS) -> torch.Tensor:
    r"""Parameter-free RMS norm over the last dimension, computed in fp32.

    .. math::

        \mathrm{RMS}(x) = x / \max(\lVert x \rVert_2 / \sqrt{d_h}, \epsilon)
    """
    x32 = x.float()
    rms = x32.norm(dim=-1, keepdim=True) / math.sqrt(x.shape[-1])
    return (x32 / rms.clamp_min(eps)).to(x.dtype)


class MultiHeadRetention(nn.Module):
    r"""Gated multi-head retention (linear attention without softmax).

    .. math::

        Q = \mathrm{ReLU}(x W_q)/\sqrt{d_h},\; K = \mathrm{ReLU}(x W_k)/\sqrt{d_h},\;
        V = (x W_v)\, s,\; U = \mathrm{SiLU}(x W_u),\;
        O = \mathrm{RMS}_\text{head}\big(Q (K^\top V)\big) \odot U,\; \text{out} = O W_o

    with :math:`s = 1/\sqrt{G}` (``G`` gene tokens). Cost is linear in the number of tokens.

    Parameters
    ----------
    d_model
        Token width ``d``.
    n_heads
        Number of heads ``H``; ``d`` must be divisible by ``H``.
    """

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"`d_model` ({d_model}) must be divisible by `n_heads` ({n_heads}).")
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        for name in ("q", "k", "v", "u", "o"):
            setattr(self, f"{name}_proj", nn.Linear(d_model, d_model, bias=False))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Apply retention.

        Parameters
        ----------
        x
            Tokens ``(B, N, d)``; token 0 is CLS, the other ``N - 1`` are genes.
        key_mask
            ``(B, N)``; 0 removes a token as key and value (hidden genes in the first half of the layers).

        Returns
        -------
        ``(B, N, d)``.
        """
        b, n, d = x.shape
        h, dh = self.n_heads, self.d_head
        scale_v = 1.0 / math.sqrt(max(n - 1, 1))

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, h, dh).transpose(1, 2)

        q = heads(F.relu(self.q_proj(x))) / math.sqrt(dh)
        k = heads(F.relu(self.k_proj(x))) / math.sqrt(dh)
        v = heads(self.v_proj(x)) * scale_v
        u = F.silu(self.u_proj(x))
        if key_mask is not None:
            km = key_mask[:, None, :, None].to(k.dtype)
            k, v = k * km, v * km
        o = per_head_rms_norm(q @ (k.transpose(-1, -2) @ v))  # (B, H, N, dh)
        o = o.transpose(1, 2).reshape(b, n, d) * u
        return self.o_proj(o)


class SimpleGatedLinearUnit(nn.Module):
    r"""Simple gated linear unit, no activation and no biases.

    .. math::

        \mathrm{SGLU}(x) = W_o\big((x W_u) \odot (x W_v)\big)
    """

    def __init__(self, d_model: int, d_ffn: int):
        super().__init__()
        self.u_proj = nn.Linear(d_model, d_ffn, bias=False)
        self.v_proj = nn.Linear(d_model, d_ffn, bias=False)
        self.o_proj = nn.Linear(d_ffn, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, d) → (B, N, d)``."""
        return self.o_proj(self.u_proj(x) * self.v_proj(x))


class RetentionLayer(nn.Module):
    r"""Retention then gated unit, each in a post-LayerNorm residual with DeepNorm scaling.

    .. math::

        x \leftarrow \mathrm{LN}\big(\alpha x + \mathrm{Dropout}(F(x))\big), \qquad \alpha = (2L)^{1/4}

    Parameters
    ----------
    d_model, n_heads, d_ffn
        Widths.
    layer_index
        0-based index ``i``; dropout is ``dropout · i / L`` and hidden genes are removed as keys and
        values when ``i < L // 2``.
    n_layers
        ``L`` of the backbone.
    dropout
        Base dropout rate (0.1 in CellFM).
    norm_eps
        Epsilon of the post-LayerNorms.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ffn: int,
        layer_index: int,
        n_layers: int,
        dropout: float = 0.1,
        norm_eps: float = 1e-7,
    ):
        super().__init__()
        self.attn = MultiHeadRetention(d_model, n_heads)
        self.ffn = SimpleGatedLinearUnit(d_model, d_ffn)
        self.post_norm1 = nn.LayerNorm(d_model, eps=norm_eps)
        self.post_norm2 = nn.LayerNorm(d_model, eps=norm_eps)
        self.dropout = nn.Dropout(dropout * layer_index / n_layers)
        self.alpha = (2.0 * n_layers) ** 0.25
        self.masks_hidden_keys = layer_index < n_layers // 2

    def residual(self, norm: nn.LayerNorm, h: torch.Tensor, u: torch.Tensor, gate: torch.Tensor | float = 1.0):
        """DeepNorm post-LN residual ``LN(α·h + gate·Dropout(u))`` (the gate is 1 in the plain backbone)."""
        return norm(self.alpha * h + gate * self.dropout(u))

    def forward(self, h: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, N, d) → (B, N, d)``; ``key_mask`` is used only in the first half of the layers."""
        h = self.residual(self.post_norm1, h, self.attn(h, key_mask if self.masks_hidden_keys else None))
        return self.residual(self.post_norm2, h, self.ffn(h))

    def reset_parameters(self, n_layers: int) -> None:
        """Xavier-normal init with gain ``β = (8L)^{-1/4}`` on value, gate and output projections."""
        beta = (8.0 * n_layers) ** -0.25
        for name, lin in [*self.attn.named_children(), *(("ffn_" + n, m) for n, m in self.ffn.named_children())]:
            gain = 1.0 if name in ("q_proj", "k_proj") else beta
            nn.init.xavier_normal_(lin.weight, gain=gain)
