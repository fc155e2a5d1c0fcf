"""The CellFM-style backbone: soft-binning value encoder, ERetNet (retention) layers, value decoder (method §3).

The layout follows CellFM so that its MindSpore checkpoints load one tensor to one parameter
(:mod:`hinge_sc.nn._cellfm`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ._backbone import Backbone, register_backbone
from ._config import CELLFM_SHAPES, BackboneConfig
from ._retention import RetentionLayer

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._config import MaskMechanism


class SoftBinningValueEncoder(nn.Module):
    r"""Soft-binning encoder of one scalar value per gene.

    .. math::

        h = \mathrm{LeakyReLU}(w_1 x),\quad h \leftarrow W_3 h + a\,h,\quad e = T\,\mathrm{softmax}(h)
    """

    def __init__(self, d_model: int, n_bins: int, negative_slope: float):
        super().__init__()
        self.negative_slope = negative_slope
        self.w1 = nn.Linear(1, n_bins, bias=False)
        self.w3 = nn.Linear(n_bins, n_bins, bias=False)
        self.a = nn.Parameter(torch.ones(()))
        self.table = nn.Linear(n_bins, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, G)`` values → ``(B, G, d)`` embeddings."""
        h = F.leaky_relu(self.w1(x.unsqueeze(-1)), self.negative_slope)
        h = self.w3(h) + self.a * h
        return self.table(torch.softmax(h, dim=-1))


class ValueEncoder(nn.Module):
    """Value encoder plus the learned embedding of a masked value (CellFM's ``value_enc``)."""

    def __init__(self, d_model: int, n_bins: int, negative_slope: float):
        super().__init__()
        self.value_enc = SoftBinningValueEncoder(d_model, n_bins, negative_slope)
        self.mask_emb = nn.Parameter(torch.zeros(d_model))


class ValueDecoder(nn.Module):
    r"""Per-token decoder :math:`\hat y = W_2\,\mathrm{LeakyReLU}(W_1 h)` (d → d → 1)."""

    def __init__(self, d_model: int, negative_slope: float):
        super().__init__()
        self.negative_slope = negative_slope
        self.w1 = nn.Linear(d_model, d_model, bias=False)
        self.w2 = nn.Linear(d_model, 1, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``(B, G, d) → (B, G)``."""
        return self.w2(F.leaky_relu(self.w1(h), self.negative_slope)).squeeze(-1)


@register_backbone
class CellFMBackbone(Backbone):
    """CellFM-style single-cell foundation model: gene tokens, ERetNet layers, value decoder.

    What :meth:`hinge_sc.Backbone.random`, :meth:`~hinge_sc.Backbone.from_cellfm` and
    :func:`hinge_sc.pretrain_backbone` build by default. A gene's token is its row of the gene table plus the
    embedding of its value; hidden genes get the mask embedding (``mask_emb``, CellFM's pre-training) or add
    ``zero_emb`` to the embedding of their fill value (HINGE's code).

    Parameters
    ----------
    genes
        Vocabulary (gene symbols); gene ``i`` has token id ``i + 1``, id 0 is padding.
    config
        Sizes and options, see :class:`~hinge_sc.nn.BackboneConfig`.

    Examples
    --------
    >>> bb = hs.Backbone.random(["CD3E", "MS4A1", "EPCAM"], d_model=32, n_layers=2, n_heads=4)
    >>> isinstance(bb, hs.nn.CellFMBackbone)
    True
    """

    architecture = "cellfm"
    config_class = BackboneConfig

    def __init__(self, genes: Sequence[str], config: BackboneConfig | None = None):
        super().__init__(genes, config)
        config = self.config
        d = config.d_model
        n_rows = 8 * math.ceil((len(self.vocabulary) + 1) / 8)  # CellFM pads the table to a multiple of 8
        self.gene_emb = nn.Parameter(torch.zeros(n_rows, d))
        self.cls_token = nn.Parameter(torch.zeros(d))
        self.zero_emb = nn.Parameter(torch.zeros(d))
        self.value_enc = ValueEncoder(d, config.n_bins, config.negative_slope)
        self.encoder = nn.ModuleList(
            RetentionLayer(d, config.n_heads, config.d_ffn or d, i, config.n_layers, config.dropout, config.norm_eps)
            for i in range(config.n_layers)
        )
        self.value_dec = ValueDecoder(d, config.negative_slope)

    @classmethod
    def random_config(
        cls, *, d_model: int, n_layers: int, n_heads: int, shape: str | None = None, **config_kwargs
    ) -> BackboneConfig:
        """The config of :meth:`~hinge_sc.Backbone.random`: the sizes given, or a published CellFM ``shape``."""
        sizes = {"d_model": d_model, "n_layers": n_layers, "n_heads": n_heads}
        if shape is not None:
            if shape not in CELLFM_SHAPES:
                raise ValueError(f"`shape` must be one of {sorted(CELLFM_SHAPES)}, got {shape!r}.")
            sizes = CELLFM_SHAPES[shape]
        return BackboneConfig(**sizes, name=config_kwargs.pop("name", shape or "random"), **config_kwargs)

    def reset_parameters(self) -> None:
        """Xavier-normal initialisation as in CellFM (used for random backbones and pre-training)."""
        n_layers = self.config.n_layers
        nn.init.xavier_normal_(self.gene_emb)
        with torch.no_grad():
            self.gene_emb[0].zero_()  # padding row
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.value_enc.mask_emb, std=0.02)
        nn.init.zeros_(self.zero_emb)
        enc = self.value_enc.value_enc
        for lin in (enc.w1, enc.w3, enc.table, self.value_dec.w1, self.value_dec.w2):
            nn.init.xavier_normal_(lin.weight)
        for layer in self.encoder:
            layer.reset_parameters(n_layers)

    # ----------------------------------------------------------------- forward pieces (see Backbone.embed)
    def embed_values(
        self, values: torch.Tensor, visible: torch.Tensor | None, mask_mechanism: MaskMechanism
    ) -> torch.Tensor:
        """Soft-binning embedding; hidden genes get ``mask_emb`` instead, or add ``zero_emb`` (``"zero_emb"``)."""
        v = self.value_enc.value_enc(values)
        if visible is not None:
            hidden = (1.0 - visible).unsqueeze(-1).to(v.dtype)
            if mask_mechanism == "mask_emb":
                v = torch.lerp(v, self.value_enc.mask_emb.to(v.dtype), hidden)  # v (1 - hidden) + hidden · mask_emb
            else:
                v = v + hidden * self.zero_emb
        return v

    def embed_genes(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Rows of the gene table."""
        return self.gene_emb[token_ids]

    def embed_cls(self, values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The learned CLS token, the same for every sample."""
        return self.cls_token.expand(values.shape[0], 1, -1).to(dtype)
