"""Hyper-parameters of the backbone and the shapes of the published CellFM models."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

MaskMechanism = Literal["mask_emb", "zero_emb"]

#: Largest sizes a backbone may declare (the published CellFM-800M is d=1536, L=40, H=48; scGPT d=512, L=12). A file
#: that declares more is refused before anything is allocated, so a forged or corrupt config fails fast.
MAX_BACKBONE_SIZES = MappingProxyType(
    {"d_model": 16_384, "n_layers": 256, "n_heads": 1_024, "d_ffn": 131_072, "d_hid": 131_072, "n_bins": 65_536,
     "n_input_bins": 65_536}  # fmt: skip
)


def check_sizes(config: object) -> None:
    """Raise a ValueError naming every size field of ``config`` that is not an integer in 1 … its bound."""
    problems = []
    for field, bound in MAX_BACKBONE_SIZES.items():
        value = getattr(config, field, None)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= bound:
            problems.append(f"`{field}`={value!r} (expected an integer in 1 … {bound:,})")
    if problems:
        raise ValueError(
            f"Backbone sizes out of range: {', '.join(problems)}. A file that declares them is corrupt or was edited; "
            "use the file as it was written."
        )


def check_config(config: object) -> None:
    """The checks every architecture's config shares: sizes in range (:func:`check_sizes`) and ``mask_mechanism``."""
    check_sizes(config)
    mechanism = getattr(config, "mask_mechanism", "mask_emb")
    if mechanism not in ("mask_emb", "zero_emb"):
        raise ValueError(f"`mask_mechanism` must be 'mask_emb' or 'zero_emb', got {mechanism!r}.")


@dataclass(frozen=True)
class BackboneConfig:
    """Hyper-parameters of :class:`~hinge_sc.nn.CellFMBackbone` (everything needed to rebuild it).

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
        check_config(self)


#: Shapes of the published CellFM models (random weights unless loaded from a checkpoint).
CELLFM_SHAPES = MappingProxyType(
    {
        "cellfm-800m": MappingProxyType({"d_model": 1536, "n_layers": 40, "n_heads": 48}),
        "cellfm-80m": MappingProxyType({"d_model": 1536, "n_layers": 2, "n_heads": 48}),
    }
)
