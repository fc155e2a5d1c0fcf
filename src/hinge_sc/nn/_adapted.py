"""A frozen backbone adapted to histology with SoftAdaLN (HINGE_METHOD §4)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from ._softadaln import ConditionEmbedding, FinalModulation, SoftAdaLNLayer

if TYPE_CHECKING:
    from ._backbone import Backbone


class AdaptedBackbone(nn.Module):
    r"""Denoiser :math:`\hat x_0 = f(x_t, m_t, c)`: the frozen backbone under SoftAdaLN modulation.

    Every backbone parameter gets ``requires_grad=False``; the trainable parts are the conditioning
    network, one :class:`~hinge_sc.nn.SoftAdaLNLayer` per backbone layer and the final modulation.
    At initialisation the output equals the backbone's up to the gates (0.9975) and ``λ ≈ 6e-6``.

    Parameters
    ----------
    backbone
        The frozen sc-FM.
    n_features
        Image-feature width ``D``.
    n_genes
        Panel size ``G``.
    condition
        ``"sum"`` (code) or ``"concat"`` (paper text), see :class:`~hinge_sc.nn.ConditionEmbedding`.
    head_rank
        Low rank of the SoftAdaLN heads (``None``: full).
    mask_mechanism
        How hidden genes are embedded (``"mask_emb"`` or ``"zero_emb"``); ``None`` uses the backbone's own.
    """

    def __init__(
        self,
        backbone: Backbone,
        n_features: int,
        n_genes: int,
        condition: Literal["sum", "concat"] = "sum",
        head_rank: int | None = None,
        mask_mechanism: Literal["mask_emb", "zero_emb"] | None = None,
    ):
        super().__init__()
        if mask_mechanism not in (None, "mask_emb", "zero_emb"):
            raise ValueError(f"`mask_mechanism` must be 'mask_emb', 'zero_emb' or None, got {mask_mechanism!r}.")
        self.mask_mechanism = mask_mechanism or backbone.config.mask_mechanism
        self.backbone = backbone
        self.backbone.requires_grad_(False)
        d = backbone.config.d_model
        self.condition = ConditionEmbedding(n_features, n_genes, d, mode=condition)
        self.layers = nn.ModuleList(SoftAdaLNLayer(d, head_rank) for _ in backbone.encoder)
        self.final = FinalModulation(d)

    def forward(
        self, x_t: torch.Tensor, visible: torch.Tensor, c: torch.Tensor, token_ids: torch.Tensor
    ) -> torch.Tensor:
        """Predict clean values.

        Parameters
        ----------
        x_t
            ``(B, G)`` values, hidden entries filled.
        visible
            ``(B, G)`` visibility ``m_t`` (1 = visible).
        c
            ``(B, d)`` condition.
        token_ids
            ``(G,)`` backbone token ids of the panel.

        Returns
        -------
        ``(B, G)`` prediction of ``x_0``.
        """
        bb = self.backbone
        h = bb.embed(x_t, token_ids, visible, self.mask_mechanism)
        key_mask = bb.key_mask(visible)
        for layer, ada in zip(bb.encoder, self.layers, strict=True):
            h = ada(layer, h, c, key_mask)
        return bb.value_dec(self.final(h[:, 1:], c))

    def trainable_parameters(self) -> dict[str, int]:
        """Number of trainable parameters per part."""
        parts = {"condition": self.condition, "softadaln_layers": self.layers, "final": self.final}
        return {k: sum(p.numel() for p in m.parameters() if p.requires_grad) for k, m in parts.items()}
