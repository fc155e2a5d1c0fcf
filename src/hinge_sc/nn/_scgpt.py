"""The scGPT-shaped backbone: gene tokens + value encoder, softmax transformer (post-LN), expression decoder.

The layout follows scGPT's ``TransformerModel`` (bowang-lab/scGPT, ``scgpt/model/model.py``) so that its checkpoints
load one tensor to one parameter (:mod:`hinge_sc.nn._scgpt_checkpoint`); the forward pass is our own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ._backbone import Backbone, register_backbone
from ._config import check_config
from ._retention import post_norm_residual

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._config import MaskMechanism

ValueEmbedding = Literal["continuous", "category"]
HiddenToken = Literal["flag", "mask_value"]


@dataclass(frozen=True)
class ScGPTConfig:
    """Hyper-parameters of :class:`ScGPTBackbone` (scGPT's ``args.json`` names in brackets).

    Attributes
    ----------
    d_model, n_layers, n_heads
        Width ``d`` [``embsize``], depth ``L`` [``nlayers``] and heads ``H`` [``nheads``].
    d_hid
        Hidden width of the feed-forward sub-layer [``d_hid``] (``None``: ``d``).
    dropout
        Dropout of the value encoder, the feed-forward unit and both residual branches.
    attention_dropout
        Dropout of the attention weights (``None``: ``dropout``, as scGPT). On CPU it costs several times the
        attention itself.
    input_emb_style
        Value encoder [``input_emb_style``]: ``"continuous"`` (Linear 1→d, ReLU, Linear d→d, LayerNorm; values
        clipped at ``max_value``) or ``"category"`` (one embedding row per bin, then LayerNorm).
    n_input_bins
        Rows of the ``"category"`` value embedding.
    max_value
        Clipping of continuous values.
    pad_value
        Value given to the CLS token [``pad_value``], as scGPT's pre-training data did.
    mask_value
        Value of hidden genes when ``hidden_token="mask_value"`` [``mask_value``].
    hidden_token
        How a hidden gene is embedded: ``"flag"`` (gene + the generative flag, scGPT's generative pre-training;
        needs ``flag_encoder``) or ``"mask_value"`` (gene + the value embedding of ``mask_value``, its masked-value
        objective).
    norm_eps
        LayerNorm epsilon (PyTorch's default, as scGPT).
    mask_mechanism
        ``"mask_emb"``: hidden genes get the ``hidden_token`` embedding (the pre-training's); ``"zero_emb"``: they keep
        the value embedding of their fill value (scGPT has no learned zero embedding).
    name
        Name recorded with models built on it.
    """

    d_model: int = 512
    n_layers: int = 12
    n_heads: int = 8
    d_hid: int | None = None
    dropout: float = 0.2
    attention_dropout: float | None = None
    input_emb_style: ValueEmbedding = "continuous"
    n_input_bins: int | None = None
    max_value: float = 512.0
    pad_value: float = -2.0
    mask_value: float = -1.0
    hidden_token: HiddenToken = "flag"
    norm_eps: float = 1e-5
    mask_mechanism: MaskMechanism = "mask_emb"
    name: str = "scgpt"

    def __post_init__(self):
        check_config(self)
        if self.d_model % self.n_heads:
            raise ValueError(f"`d_model` ({self.d_model}) must be divisible by `n_heads` ({self.n_heads}).")
        if self.input_emb_style not in ("continuous", "category"):
            raise ValueError(
                f"`input_emb_style` must be 'continuous' or 'category', got {self.input_emb_style!r} (scGPT's "
                "'scaling' style is not supported)."
            )
        if self.input_emb_style == "category":
            n = self.n_input_bins or 0
            if n < 1 or not (0 <= self.pad_value < n and 0 <= self.mask_value < n):
                raise ValueError(
                    f"A 'category' value encoder needs `n_input_bins` ≥ 1 with `pad_value` and `mask_value` among "
                    f"its rows, got n_input_bins={self.n_input_bins}, pad_value={self.pad_value}, "
                    f"mask_value={self.mask_value}."
                )
        if self.hidden_token not in ("flag", "mask_value"):
            raise ValueError(f"`hidden_token` must be 'flag' or 'mask_value', got {self.hidden_token!r}.")

    @property
    def ffn_width(self) -> int:
        """Hidden width of the feed-forward sub-layer."""
        return self.d_hid or self.d_model


class ContinuousValueEncoder(nn.Module):
    r"""scGPT's continuous value encoder, :math:`e = \mathrm{LN}(W_2\,\mathrm{ReLU}(W_1 \min(x, x_\max)))`."""

    def __init__(self, d_model: int, dropout: float, max_value: float, norm_eps: float):
        super().__init__()
        self.max_value = max_value
        self.linear1 = nn.Linear(1, d_model)
        self.linear2 = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model, eps=norm_eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, G)`` values → ``(B, G, d)``."""
        h = F.relu(self.linear1(x.unsqueeze(-1).clamp(max=self.max_value)))
        return self.dropout(self.norm(self.linear2(h)))


class CategoryValueEncoder(nn.Module):
    """scGPT's binned value encoder: one embedding row per bin (values rounded and clipped to the rows), LayerNorm."""

    def __init__(self, n_bins: int, d_model: int, norm_eps: float):
        super().__init__()
        self.embedding = nn.Embedding(n_bins, d_model)
        self.enc_norm = nn.LayerNorm(d_model, eps=norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, G)`` bin indices (as floats) → ``(B, G, d)``."""
        ids = x.round().clamp(0, self.embedding.num_embeddings - 1).long()
        return self.enc_norm(self.embedding(ids))


class SelfAttention(nn.Module):
    r"""Multi-head softmax self-attention with one packed input projection (scGPT's ``Wqkv`` / ``in_proj``).

    ``in_proj`` holds :math:`[W_q; W_k; W_v]` stacked by rows, each head's block contiguous, scale
    :math:`1/\sqrt{d_h}`, dropout on the attention weights.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.in_proj = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attend.

        Parameters
        ----------
        x
            Tokens ``(B, N, d)``.
        key_mask
            ``(B, N)``; 0 removes a token as key and value for every *other* token (each token still attends to
            itself), as scGPT's generative attention mask hides the genes to generate.

        Returns
        -------
        ``(B, N, d)``.
        """
        b, n, d = x.shape
        q, k, v = self.in_proj(x).view(b, n, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        mask = None
        if key_mask is not None:
            own = torch.eye(n, dtype=torch.bool, device=x.device)
            mask = (key_mask.bool()[:, None, :] | own)[:, None]  # (B, 1, N, N), True = attend
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(o.transpose(1, 2).reshape(b, n, d))


class FeedForward(nn.Module):
    r""":math:`W_2\,\mathrm{Dropout}(\mathrm{ReLU}(W_1 x))` (only linear children, so LoRA can wrap them)."""

    def __init__(self, d_model: int, d_hid: int, dropout: float):
        super().__init__()
        self.dropout = dropout
        self.linear1 = nn.Linear(d_model, d_hid)
        self.linear2 = nn.Linear(d_hid, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, d) → (B, N, d)``."""
        return self.linear2(F.dropout(F.relu(self.linear1(x)), self.dropout, self.training))


class ScGPTLayer(nn.Module):
    r"""One post-LN transformer layer of scGPT.

    :math:`h \leftarrow \mathrm{LN}(h + \mathrm{Dropout}(F(h)))` for attention, then for the feed-forward unit.
    Offers the sub-layer interface :class:`~hinge_sc.nn.SoftAdaLNLayer` modulates (``attn``, ``ffn``,
    ``post_norm1``/``post_norm2``, ``residual``, ``masks_hidden_keys``), like :class:`~hinge_sc.nn.RetentionLayer`.
    Hidden genes are removed as keys in every layer (scGPT's generative mask).
    """

    masks_hidden_keys = True

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_hid: int,
        dropout: float,
        norm_eps: float,
        attention_dropout: float | None = None,
    ):
        super().__init__()
        self.attn = SelfAttention(d_model, n_heads, dropout if attention_dropout is None else attention_dropout)
        self.ffn = FeedForward(d_model, d_hid, dropout)
        self.post_norm1 = nn.LayerNorm(d_model, eps=norm_eps)
        self.post_norm2 = nn.LayerNorm(d_model, eps=norm_eps)
        self.dropout = nn.Dropout(dropout)

    def residual(self, norm: nn.LayerNorm, h: torch.Tensor, u: torch.Tensor, gate: torch.Tensor | float = 1.0):
        """Post-LN residual ``LN(h + gate·Dropout(u))`` (the gate is 1 in the plain backbone)."""
        return post_norm_residual(norm, h, self.dropout(u), gate)

    def forward(self, h: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, N, d) → (B, N, d)``."""
        h = self.residual(self.post_norm1, h, self.attn(h, key_mask))
        return self.residual(self.post_norm2, h, self.ffn(h))


class ExpressionDecoder(nn.Module):
    r"""scGPT's expression decoder: :math:`\hat y = W_3\,\mathrm{LReLU}(W_2\,\mathrm{LReLU}(W_1 h))` (slope 0.01)."""

    def __init__(self, d_model: int):
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(d_model, d_model), nn.LeakyReLU(), nn.Linear(d_model, d_model), nn.LeakyReLU(),
            nn.Linear(d_model, 1),
        )  # fmt: skip

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``(B, G, d) → (B, G)``."""
        return self.fc(h).squeeze(-1)


@register_backbone
class ScGPTBackbone(Backbone):
    """scGPT-shaped single-cell foundation model: a drop-in :class:`~hinge_sc.Backbone` for HINGE.

    Tokens are the CLS token followed by one token per panel gene. A gene's token is its LayerNorm-ed gene
    embedding plus the embedding of its value; a hidden gene gets scGPT's generative flag instead of a value
    embedding (``hidden_token="flag"``) and is removed as a key for every other token in every layer (it still
    attends to itself). The CLS token is scGPT's ``<cls>`` embedding plus the value embedding of ``pad_value``.
    Same interface as the CellFM-style backbone (:class:`~hinge_sc.nn.CellFMBackbone`): ``embed`` / ``key_mask`` /
    ``encoder`` (layers with ``attn``, ``ffn`` and post-norms, wrapped by SoftAdaLN) / ``value_dec``.

    Parameters
    ----------
    genes
        Vocabulary (gene symbols, no special tokens); gene ``i`` has token id ``i + 1``, id 0 is scGPT's ``<pad>``.
    config
        Sizes and options, see :class:`ScGPTConfig`.

    Examples
    --------
    >>> bb = hs.Backbone.from_scgpt("scGPT_human")            # best_model.pt, vocab.json, args.json
    >>> bb = hs.nn.ScGPTBackbone.random(["CD3E", "MS4A1"], d_model=32, n_layers=2, n_heads=4)
    """

    architecture = "scgpt"
    config_class = ScGPTConfig

    def __init__(self, genes: Sequence[str], config: ScGPTConfig | None = None):
        super().__init__(genes, config)
        config = self.config
        d = config.d_model
        self.gene_emb = nn.Parameter(torch.zeros(len(self.vocabulary) + 1, d))  # row 0: <pad>
        self.cls_token = nn.Parameter(torch.zeros(d))  # the raw <cls> row (LayerNorm-ed like every gene row)
        self.gene_norm = nn.LayerNorm(d, eps=config.norm_eps)
        if config.input_emb_style == "continuous":
            self.value_enc = ContinuousValueEncoder(d, config.dropout, config.max_value, config.norm_eps)
        else:
            self.value_enc = CategoryValueEncoder(config.n_input_bins, d, config.norm_eps)
        self.flag_emb = nn.Parameter(torch.zeros(2, d)) if config.hidden_token == "flag" else None
        self.encoder = nn.ModuleList(
            ScGPTLayer(
                d,
                config.n_heads,
                config.ffn_width,
                config.dropout,
                config.norm_eps,
                config.dropout if config.attention_dropout is None else config.attention_dropout,
            )
            for _ in range(config.n_layers)
        )
        self.value_dec = ExpressionDecoder(d)

    def reset_parameters(self) -> None:
        """Initialise as scGPT does.

        Gene rows uniform in ±0.1, packed projections Xavier-uniform with zero biases, PyTorch's defaults elsewhere.
        """
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.LayerNorm | nn.Embedding):
                module.reset_parameters()
        nn.init.uniform_(self.gene_emb, -0.1, 0.1)
        nn.init.uniform_(self.cls_token, -0.1, 0.1)
        if self.flag_emb is not None:
            nn.init.normal_(self.flag_emb)
        for layer in self.encoder:
            nn.init.xavier_uniform_(layer.attn.in_proj.weight)
            nn.init.zeros_(layer.attn.in_proj.bias)
            nn.init.zeros_(layer.attn.out_proj.bias)

    # ----------------------------------------------------------------- forward pieces (see Backbone.embed)
    def _hidden_embedding(self, like: torch.Tensor) -> torch.Tensor:
        """``(d,)`` or ``(1, 1, d)`` embedding that replaces a hidden gene's value embedding."""
        if self.config.hidden_token == "flag":
            return self.flag_emb[1].to(like.dtype)
        return self.value_enc(like.new_full((1, 1), self.config.mask_value))

    def embed_values(
        self, values: torch.Tensor, visible: torch.Tensor | None, mask_mechanism: MaskMechanism
    ) -> torch.Tensor:
        """scGPT's value embedding; with ``"mask_emb"``, hidden genes get the ``hidden_token`` embedding instead."""
        v = self.value_enc(values)
        if visible is not None and mask_mechanism == "mask_emb":
            hidden = (1.0 - visible).unsqueeze(-1).to(v.dtype)
            v = v * (1.0 - hidden) + hidden * self._hidden_embedding(values)
        return v

    def embed_genes(self, token_ids: torch.Tensor) -> torch.Tensor:
        """LayerNorm-ed rows of the token table."""
        return self.gene_norm(self.gene_emb[token_ids])

    def embed_cls(self, values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """LayerNorm-ed ``<cls>`` row plus the value embedding of ``pad_value``."""
        cls_value = self.value_enc(values.new_full((values.shape[0], 1), self.config.pad_value))
        return self.gene_norm(self.cls_token).to(dtype) + cls_value

    def extra_repr(self) -> str:
        c = self.config
        return f"{super().extra_repr()}, values={c.input_emb_style}, hidden={c.hidden_token}"
