"""A frozen backbone adapted to histology with SoftAdaLN (docs/method.md §4)."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ._softadaln import ConditionEmbedding, FinalModulation, SoftAdaLNLayer

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._backbone import Backbone


class LoRAAdapter(nn.Module):
    r"""Low-rank update of a frozen linear map: :math:`y = W x + \frac{\alpha}{r} B A x`, ``B`` zero at init.

    Parameters
    ----------
    d_in, d_out
        Input and output widths of the adapted linear map.
    rank
        ``r``.
    alpha
        Scaling numerator (default ``r``, i.e. scale 1).
    """

    def __init__(self, d_in: int, d_out: int, rank: int, alpha: float | None = None):
        super().__init__()
        if rank < 1:
            raise ValueError(f"`lora_rank` must be ≥ 1, got {rank}.")
        self.scale = (alpha if alpha is not None else rank) / rank
        self.A = nn.Parameter(torch.randn(rank, d_in) / rank)
        self.B = nn.Parameter(torch.zeros(d_out, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The update ``(…, d_in) → (…, d_out)`` that is added to the frozen map's output."""
        return (x @ self.A.T) @ self.B.T * self.scale


class VarianceHead(nn.Module):
    r"""Log-variance of each gene's value from its final (modulated) token, :math:`\log\sigma^2_g = w^\top
    \mathrm{GELU}(W z_g)`, clamped to [−10, 10].

    The last layer starts at zero, so every gene starts with :math:`\sigma^2 = 1`; the frozen value decoder is not
    involved (the mean is unchanged by the head).
    """

    def __init__(self, d_model: int):
        super().__init__()
        self.hidden = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, G, d)`` → ``(B, G)`` log-variance."""
        return self.out(F.gelu(self.hidden(z))).squeeze(-1).clamp(-10.0, 10.0)


#: Output heads an :class:`AdaptedBackbone` can build besides the mean, by name (a likelihood lists the ones it needs).
HEADS: dict[str, type[nn.Module]] = {"log_variance": VarianceHead}


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
    conditioning
        ``"sum"`` (code) or ``"concat"`` (paper text), see :class:`~hinge_sc.nn.ConditionEmbedding`.
    head_rank
        Low rank of the SoftAdaLN heads (``None``: full).
    mask_mechanism
        How hidden genes are embedded (``"mask_emb"`` or ``"zero_emb"``); ``None`` uses the backbone's own.
    freeze_backbone
        Keep the backbone frozen (HINGE). ``False`` fine-tunes all its weights (the paper's worst ablation).
    lora_rank, lora_alpha
        Add LoRA adapters of this rank to every projection of the frozen backbone (off by default).
    heads
        Output heads besides the mean, by name (:data:`HEADS`, e.g. ``("log_variance",)``, a
        :class:`VarianceHead`): what the model's likelihood needs (:class:`hinge_sc.module.Likelihood`).
    readout
        Add a per-gene linear readout of the condition to the predicted mean, :math:`\hat x_0 \mathrel{+}= W c + b`
        with ``W (G, d)`` (beyond the paper). It starts at zero, so the identity initialisation holds; it gives
        the image a direct, gene-specific path to the prediction besides the modulation of the frozen backbone.

    Notes
    -----
    With ``freeze_backbone=False`` or LoRA the backbone is copied first, so the caller's backbone is never changed.
    """

    def __init__(
        self,
        backbone: Backbone,
        n_features: int,
        n_genes: int,
        conditioning: Literal["sum", "concat"] = "sum",
        head_rank: int | None = None,
        mask_mechanism: Literal["mask_emb", "zero_emb"] | None = None,
        freeze_backbone: bool = True,
        lora_rank: int | None = None,
        lora_alpha: float | None = None,
        heads: Sequence[str] = (),
        readout: bool = False,
    ):
        super().__init__()
        if mask_mechanism not in (None, "mask_emb", "zero_emb"):
            raise ValueError(f"`mask_mechanism` must be 'mask_emb', 'zero_emb' or None, got {mask_mechanism!r}.")
        self.mask_mechanism = mask_mechanism or backbone.config.mask_mechanism
        if not freeze_backbone or lora_rank:
            backbone = copy.deepcopy(backbone)
        self.backbone = backbone
        self.backbone.requires_grad_(not freeze_backbone)
        self.lora = nn.ModuleDict()
        if lora_rank:
            for i, layer in enumerate(backbone.encoder):
                for part in ("attn", "ffn"):
                    for name, lin in getattr(layer, part).named_children():
                        adapter = LoRAAdapter(lin.in_features, lin.out_features, lora_rank, lora_alpha)
                        self.lora[f"{i}_{part}_{name}"] = adapter
                        lin.register_forward_hook(_add_update(adapter))
        d = backbone.config.d_model
        self.condition_embedding = ConditionEmbedding(n_features, n_genes, d, mode=conditioning)
        self.layers = nn.ModuleList(SoftAdaLNLayer(d, head_rank) for _ in backbone.encoder)
        self.final = FinalModulation(d)
        unknown = [h for h in heads if h not in HEADS]
        if unknown:
            raise ValueError(f"Unknown output head(s) {unknown}; the heads are {sorted(HEADS)}.")
        self.heads = nn.ModuleDict({name: HEADS[name](d) for name in heads})
        self.readout = None
        if readout:
            self.readout = nn.Linear(d, n_genes)
            nn.init.zeros_(self.readout.weight)
            nn.init.zeros_(self.readout.bias)

    def readout_values(self, c: torch.Tensor, genes: torch.Tensor | None = None) -> torch.Tensor | float:
        """The readout's ``(B, G)`` term for condition ``c (B, d)`` (``(B, r)`` at ``genes (B, r)``); 0 without."""
        if self.readout is None:
            return 0.0
        if genes is None:
            return self.readout(c)
        weight, bias = self.readout.weight[genes], self.readout.bias[genes]  # (B, r, d), (B, r)
        return torch.einsum("bd,brd->br", c, weight) + bias

    def forward(
        self, x_t: torch.Tensor, visible: torch.Tensor, c: torch.Tensor, token_ids: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Predict clean values and the outputs of the heads.

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
        ``{"mean": (B, G) prediction of x_0, <head>: (B, G) for each head}``.
        """
        bb = self.backbone
        h = bb.embed(x_t, token_ids, visible, self.mask_mechanism)
        key_mask = bb.key_mask(visible)
        for layer, ada in zip(bb.encoder, self.layers, strict=True):
            h = ada(layer, h, c, key_mask)
        z = self.final(h[:, 1:], c)
        return self.outputs(z, bb.value_dec(z) + self.readout_values(c))

    def outputs(self, z: torch.Tensor, mean: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"mean": mean, <head>: head(z)}`` from the final tokens ``z (B, r, d)`` and the ``(B, r)`` mean."""
        return {"mean": mean, **{name: head(z) for name, head in self.heads.items()}}

    def trainable_parameters(self) -> dict[str, int]:
        """Number of trainable parameters per part."""
        parts = {"condition_embedding": self.condition_embedding, "softadaln_layers": self.layers, "final": self.final}
        for name, head in self.heads.items():
            parts[f"{name}_head"] = head
        if self.readout is not None:
            parts["readout"] = self.readout
        if len(self.lora):
            parts["lora"] = self.lora
        if any(p.requires_grad for p in self.backbone.parameters()):
            parts["backbone"] = self.backbone
        return {k: sum(p.numel() for p in m.parameters() if p.requires_grad) for k, m in parts.items()}


def _add_update(adapter: LoRAAdapter):
    def hook(module, inputs, output):
        return output + adapter(inputs[0])

    return hook
