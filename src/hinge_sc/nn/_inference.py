r"""Inference-only forward pass of an :class:`~hinge_sc.nn.AdaptedBackbone` for the reverse sampler.

The sampler calls the denoiser once per reverse step with the same gene tokens; most of that work is the same
from step to step or is thrown away. :class:`IncrementalDenoiser` computes the same function as
:meth:`AdaptedBackbone.forward` (up to float rounding) with less work:

- **Token embeddings are kept** between steps. A gene's token is its gene embedding plus the embedding of its value;
  a revealed gene keeps its value, so its value embedding (the soft-binning encoder: 256 bins, about a sixth of the
  FLOPs of a spot-step at ``d = 128``) is computed once, when it is revealed. With ``mask_emb`` a hidden gene's
  token does not depend on its fill at all; with ``zero_emb`` the hidden genes' fills are embedded every step.
- **Only the revealed genes are decoded.** A step keeps the prediction of the genes it reveals only, so the last
  layer runs its key/value projections on every token (they feed the retention of the others) and its query,
  gate, output and feed-forward projections, the final modulation and the value decoder on the revealed tokens only.
- The layer arithmetic is the training path's (:func:`~hinge_sc.nn._retention.retention_core`,
  :func:`~hinge_sc.nn._retention.post_norm_residual`, :func:`~hinge_sc.nn._softadaln.modulate`), with the weights of
  the projections stacked once per instance, so queries and keys/values can be split between different tokens.

Dropout is not applied (eval mode), and backbones with LoRA adapters are not supported (their forward hooks would be
bypassed): :meth:`IncrementalDenoiser.supports` tells the caller when to use the reference path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ._retention import post_norm_residual, retention_core
from ._softadaln import modulate

if TYPE_CHECKING:
    from ._adapted import AdaptedBackbone


class IncrementalDenoiser:
    """Token cache and pruned forward pass of an adapted backbone, for one batch of reverse-process rows.

    Parameters
    ----------
    adapted
        The denoiser (eval mode, no LoRA); its weights are read, never changed.
    token_ids
        ``(G,)`` backbone token ids of the panel.

    Notes
    -----
    Call :meth:`start` with the number of rows, then per step :meth:`forward` and :meth:`reveal`.
    The weights are concatenated once per instance (build one per :meth:`HINGEModule.sample` call).
    """

    def __init__(self, adapted: AdaptedBackbone, token_ids: torch.Tensor):
        bb = adapted.backbone
        self.adapted, self.backbone = adapted, bb
        self.mask_mechanism = adapted.mask_mechanism
        self.d = bb.config.d_model
        self.gene = bb.gene_emb[token_ids]  # (G, d)
        self.n_genes = int(token_ids.numel())
        self.layers = []
        for layer, ada in zip(bb.encoder, adapted.layers, strict=True):
            attn, ffn = layer.attn, layer.ffn
            self.layers.append(
                {
                    "w_qkvu": torch.cat(
                        [attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight, attn.u_proj.weight]
                    ),
                    "w_qu": torch.cat([attn.q_proj.weight, attn.u_proj.weight]),
                    "w_kv": torch.cat([attn.k_proj.weight, attn.v_proj.weight]),
                    "w_o": attn.o_proj.weight,
                    "w_ffn": torch.cat([ffn.u_proj.weight, ffn.v_proj.weight]),
                    "w_ffn_o": ffn.o_proj.weight,
                    "n_heads": attn.n_heads,
                    "masks_keys": layer.masks_hidden_keys,
                    "norm1": layer.post_norm1,
                    "norm2": layer.post_norm2,
                    "alpha": layer.alpha,
                    "ada": ada,
                }
            )
        self.tokens: torch.Tensor | None = None
        self.key_mask: torch.Tensor | None = None

    @staticmethod
    def supports(adapted: AdaptedBackbone) -> bool:
        """Whether this path computes the same function as ``adapted``: the CellFM-style backbone (retention
        layers), in eval mode, without LoRA adapters. Other architectures (e.g. scGPT-shaped) use the reference
        sampler."""
        return (
            getattr(adapted.backbone, "architecture", "cellfm") == "cellfm"
            and not adapted.training
            and not len(adapted.lora)
        )

    # ----------------------------------------------------------------------------------------- token cache
    def value_embedding(self, values: torch.Tensor) -> torch.Tensor:
        """``(n, r)`` values → ``(n, r, d)`` value embeddings (the backbone's soft-binning encoder)."""
        return self.backbone.value_enc.value_enc(values)

    def start(self, n_rows: int, device: torch.device) -> None:
        """Every gene hidden: tokens ``(n, 1 + G, d)`` and key mask ``(n, 1 + G)`` (CLS visible)."""
        bb = self.backbone
        hidden = self.gene + (bb.value_enc.mask_emb if self.mask_mechanism == "mask_emb" else bb.zero_emb)
        cls = bb.cls_token.to(hidden.dtype)
        self.tokens = torch.cat([cls[None], hidden]).unsqueeze(0).repeat(n_rows, 1, 1).to(device)
        self.key_mask = torch.zeros(n_rows, 1 + self.n_genes, device=device)
        self.key_mask[:, 0] = 1.0

    def _write(self, genes: torch.Tensor, values: torch.Tensor, extra: torch.Tensor | None = None) -> None:
        emb = self.gene[genes] + self.value_embedding(values)
        if extra is not None:
            emb = emb + extra
        index = (genes + 1).unsqueeze(-1).expand(-1, -1, self.d)
        self.tokens.scatter_(1, index, emb.to(self.tokens.dtype))

    def reveal(self, genes: torch.Tensor, values: torch.Tensor) -> None:
        """Make ``genes (n, r)`` visible with ``values (n, r)``: their tokens and key-mask entries are set."""
        self._write(genes, values)
        self.key_mask.scatter_(1, genes + 1, 1.0)

    def fill_hidden(self, genes: torch.Tensor, values: torch.Tensor) -> None:
        """``zero_emb`` only: embed the fills ``values (n, k)`` of the hidden ``genes (n, k)`` (changed every step)."""
        if self.mask_mechanism == "zero_emb" and genes.shape[1]:
            self._write(genes, values, self.backbone.zero_emb)

    # ----------------------------------------------------------------------------------------- forward
    def _layer(self, p, h, c, key_mask, out_pos):
        ada = p["ada"]
        shift1, scale1, gate1, shift2, scale2, gate2 = ada.head(c)
        x = modulate(ada.norm1(h), shift1, scale1)
        km = key_mask if p["masks_keys"] else None
        d = self.d
        if out_pos is None:  # every token is an output
            proj = F.linear(x, p["w_qkvu"])
            q, k, v, u = proj.split(d, dim=-1)
            k = F.relu(k)
        else:  # keys and values from every token; queries and the rest only where outputs are kept
            k, v = F.linear(x, p["w_kv"]).split(d, dim=-1)
            k = F.relu(k)
            h = torch.gather(h, 1, out_pos.unsqueeze(-1).expand(-1, -1, d))
            x = torch.gather(x, 1, out_pos.unsqueeze(-1).expand(-1, -1, d))
            q, u = F.linear(x, p["w_qu"]).split(d, dim=-1)
        o = retention_core(F.relu(q), k, v, km, p["n_heads"]) * F.silu(u.contiguous())  # faster on a copy
        h = post_norm_residual(p["norm1"], h, F.linear(o, p["w_o"]), torch.sigmoid(gate1).unsqueeze(1), p["alpha"])
        x = modulate(ada.norm2(h), shift2, scale2)
        a, b = F.linear(x, p["w_ffn"]).chunk(2, dim=-1)
        return post_norm_residual(p["norm2"], h, F.linear(a * b, p["w_ffn_o"]), torch.sigmoid(gate2).unsqueeze(1),
                                  p["alpha"])  # fmt: skip

    def forward(self, c: torch.Tensor, genes: torch.Tensor) -> dict[str, torch.Tensor]:
        """Predict the values of ``genes (n, r)`` from the cached tokens under condition ``c (n, d)``.

        Returns
        -------
        ``(n, r)`` entries of :meth:`AdaptedBackbone.forward`'s outputs at ``genes`` (``"mean"`` and the heads).
        """
        h, key_mask = self.tokens, self.key_mask
        last = len(self.layers) - 1
        for i, p in enumerate(self.layers):
            h = self._layer(p, h, c, key_mask, genes + 1 if i == last else None)
        final = self.adapted.final
        shift, scale = final.head(c)
        z = modulate(final.norm(h), shift, scale)
        return self.adapted.outputs(z, self.backbone.value_dec(z) + self.adapted.readout_values(c, genes))
