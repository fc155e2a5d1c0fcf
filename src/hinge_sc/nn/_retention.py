"""One ERetNet layer of the CellFM-style backbone (docs/method.md §3): retention + gated unit, DeepNorm."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

RMS_EPS = 1e-12


def per_head_rms_norm(x: torch.Tensor, eps: float = RMS_EPS) -> torch.Tensor:
    r"""Parameter-free RMS norm over the last dimension, computed in fp32.

    .. math::

        \mathrm{RMS}(x) = x \big/ \sqrt{\lVert x \rVert_2^2 / d_h + \epsilon^2}
    """
    return F.rms_norm(x.float(), (x.shape[-1],), eps=eps**2).to(x.dtype)


def retention_core(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None, n_heads: int
) -> torch.Tensor:
    r"""Per-head :math:`\mathrm{RMS}(Q (K^\top V))` for activated ``q (B, r, d)`` and ``k, v (B, N, d)``.

    The constant factors of :class:`MultiHeadRetention` (:math:`1/\sqrt{d_h}` on ``Q`` and ``K``, ``s`` on ``V``)
    are left out: the per-head RMS norm removes any positive factor (its :math:`\epsilon` aside). A 0/1
    ``key_mask (B, N)`` multiplies ``V`` only: :math:`K^\top (V \odot m) = (K \odot m)^\top (V \odot m)`. Queries
    may be a subset of the ``N`` tokens (``r ≤ N``), as in the incremental sampler.

    Returns
    -------
    ``(B, r, d)``.
    """
    b, r, d = q.shape
    dh = d // n_heads
    if key_mask is not None:
        v = v * key_mask.unsqueeze(-1).to(v.dtype)
    kh = k.reshape(b, -1, n_heads, dh).transpose(1, 2)  # (B, H, N, dh)
    vh = v.reshape(b, -1, n_heads, dh).transpose(1, 2)
    o = q.reshape(b, r, n_heads, dh).transpose(1, 2) @ (kh.transpose(-1, -2) @ vh)  # (B, H, r, dh)
    return per_head_rms_norm(o).transpose(1, 2).reshape(b, r, d)


def post_norm_residual(
    norm: nn.LayerNorm, h: torch.Tensor, u: torch.Tensor, gate: torch.Tensor | float = 1.0, alpha: float = 1.0
) -> torch.Tensor:
    r"""Post-LayerNorm residual :math:`\mathrm{LN}(\alpha h + g\,u)`.

    Computed as :math:`\mathrm{LN}(h + (g/\alpha)\,u)` with :math:`\epsilon/\alpha^2`: the same function, one pass
    over memory fewer.

    ``gate`` is a float or broadcasts against ``u`` (e.g. ``(B, 1, d)``); ``alpha`` is DeepNorm's
    :math:`(2L)^{1/4}` (1 for a plain post-LN layer).
    """
    if isinstance(gate, torch.Tensor):
        y = torch.addcmul(h, u, gate / alpha)
    else:
        y = torch.add(h, u, alpha=gate / alpha)
    return F.layer_norm(y, norm.normalized_shape, norm.weight, norm.bias, norm.eps / alpha**2)


def _fused(linears: tuple[nn.Linear, ...]) -> torch.Tensor | None:
    """Stack the weights of bias-free ``linears`` for one matmul.

    ``None`` when one of them has forward hooks (LoRA adapters), which a fused matmul would bypass.
    """
    if any(lin._forward_hooks or lin._forward_pre_hooks for lin in linears):
        return None
    return torch.cat([lin.weight for lin in linears])


class MultiHeadRetention(nn.Module):
    r"""Gated multi-head retention (linear attention without softmax).

    .. math::

        Q = \mathrm{ReLU}(x W_q)/\sqrt{d_h},\; K = \mathrm{ReLU}(x W_k)/\sqrt{d_h},\;
        V = (x W_v)\, s,\; U = \mathrm{SiLU}(x W_u),\;
        O = \mathrm{RMS}_\text{head}\big(Q (K^\top V)\big) \odot U,\; \text{out} = O W_o

    with :math:`s = 1/\sqrt{G}` (``G`` gene tokens). Cost is linear in the number of tokens. The four input
    projections run as one matmul, and the constant factors cancel in the RMS norm (:func:`retention_core`).

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
        projections = (self.q_proj, self.k_proj, self.v_proj, self.u_proj)
        weight = _fused(projections)
        if weight is None:
            q, k, v, u = (lin(x) for lin in projections)
        else:
            q, k, v, u = F.linear(x, weight).split(x.shape[-1], dim=-1)
        o = retention_core(F.relu(q), F.relu(k), v, key_mask, self.n_heads)
        return self.o_proj(o * F.silu(u.contiguous()))  # SiLU is faster on a contiguous copy


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
        """``(B, N, d) → (B, N, d)``; the two input projections run as one matmul."""
        weight = _fused((self.u_proj, self.v_proj))
        a, b = (self.u_proj(x), self.v_proj(x)) if weight is None else F.linear(x, weight).chunk(2, dim=-1)
        return self.o_proj(a * b)


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
        return post_norm_residual(norm, h, self.dropout(u), gate, self.alpha)

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
