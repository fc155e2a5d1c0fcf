"""Hyper-parameters of the backbone and the shapes of the published CellFM models."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

MaskMechanism = Literal["mask_emb", "zero_emb"]


@dataclass(frozen=True)
class BackboneConfig:
    """Hyper-parameters of :class:`~hinge_sc.nn.Backbone` (everything needed to rebuild it).

    Attributes
    ----------
    d_model, n_layers, n_heads
        Width ``d``, depth ``L`` and heads ``H``.
    d_ffn
        Hidden width of the gated feed-forward unit (``None``: ``d``).
    n_bins
        Bins of the soft-binning value encoder.
    negative_slope
        LeakyReLU slope of the value encoder and decoder.
    dropout
        Largest dropout rate (layer ``i`` uses ``dropout · i / L``).
    norm_eps
        LayerNorm epsilon.
    mask_mechanism
        Embedding of hidden genes the backbone was pre-trained with (``"mask_emb"`` or ``"zero_emb"``).
    name
        Name recorded with models built on it.
    """

    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 8
    d_ffn: int | None = None
    n_bins: int = 256
    negative_slope: float = 0.2
    dropout: float = 0.1
    norm_eps: float = 1e-7
    mask_mechanism: MaskMechanism = "mask_emb"
    name: str = "random"

    def __post_init__(self):
        if min(self.d_model, self.n_layers, self.n_heads, self.n_bins) < 1:
            raise ValueError(f"Backbone sizes must be positive, got {self}.")
        if self.mask_mechanism not in ("mask_emb", "zero_emb"):
            raise ValueError(f"`mask_mechanism` must be 'mask_emb' or 'zero_emb', got {self.mask_mechanism!r}.")


#: Shapes of the published CellFM models (random weights unless loaded from a checkpoint).
CELLFM_SHAPES = MappingProxyType(
    {
        "cellfm-800m": MappingProxyType({"d_model": 1536, "n_layers": 40, "n_heads": 48}),
        "cellfm-80m": MappingProxyType({"d_model": 1536, "n_layers": 2, "n_heads": 48}),
    }
)
