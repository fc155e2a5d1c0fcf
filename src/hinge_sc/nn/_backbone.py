"""The CellFM-style ERetNet backbone (docs/method.md §3)."""

from __future__ import annotations

import contextlib
import logging
import math
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import nn

from hinge_sc._random import seeded

from ._backbone_io import architecture_class, checksum, load_backbone, save_backbone
from ._cellfm import CELLFM_REVISION, check_vocabulary_given, download_cellfm, load_cellfm
from ._config import CELLFM_SHAPES, BackboneConfig, MaskMechanism
from ._genes import GeneVocabulary
from ._provenance import Provenance
from ._retention import RetentionLayer

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    import pandas as pd

logger = logging.getLogger(__name__)

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


class Backbone(nn.Module):
    """CellFM-style single-cell foundation model: gene tokens, ERetNet layers, value decoder.

    Tokens are one CLS token followed by one token per panel gene. A gene's token is its row of the
    gene table plus the embedding of its value; hidden genes get the mask embedding (``mask_emb``,
    CellFM's pre-training) or add ``zero_emb`` to the embedding of their fill value (HINGE's code).

    Parameters
    ----------
    genes
        Vocabulary (gene symbols); gene ``i`` has token id ``i + 1``, id 0 is padding.
    config
        Sizes and options, see :class:`BackboneConfig`.

    Examples
    --------
    >>> bb = hs.Backbone.random(["CD3E", "MS4A1", "EPCAM"], d_model=32, n_layers=2, n_heads=4)
    >>> bb.save("backbone.pt"); hs.Backbone.load("backbone.pt")
    """

    #: Name of the architecture, saved with the backbone so that :meth:`load` rebuilds the right class.
    architecture = "cellfm"
    config_class = BackboneConfig

    def __init__(self, genes: Sequence[str], config: BackboneConfig | None = None):
        super().__init__()
        self.vocabulary = GeneVocabulary(genes)
        self.config = config = config or BackboneConfig()
        #: Where the weights come from (pre-training run, checkpoint, scale); saved with the backbone.
        self.provenance = Provenance()
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

    # ----------------------------------------------------------------- constructors
    @classmethod
    def random(
        cls,
        genes: Sequence[str],
        *,
        d_model: int = 256,
        n_layers: int = 4,
        n_heads: int = 8,
        shape: Literal["cellfm-800m", "cellfm-80m"] | None = None,
        seed: int | None = 0,
        **config_kwargs,
    ) -> Backbone:
        """A randomly initialised backbone of any size.

        Parameters
        ----------
        genes
            Vocabulary.
        d_model, n_layers, n_heads
            Width ``d``, depth ``L`` and heads ``H``.
        shape
            Use the shape of a published CellFM model instead (``d=1536``; ``L=40, H=48`` or ``L=2, H=48``).
        seed
            Seed of the initialisation (``None`` uses the global generator).
        **config_kwargs
            Other fields of :class:`BackboneConfig`.
        """
        sizes = {"d_model": d_model, "n_layers": n_layers, "n_heads": n_heads}
        if shape is not None:
            if shape not in CELLFM_SHAPES:
                raise ValueError(f"`shape` must be one of {sorted(CELLFM_SHAPES)}, got {shape!r}.")
            sizes = CELLFM_SHAPES[shape]
        config = BackboneConfig(**sizes, name=config_kwargs.pop("name", shape or "random"), **config_kwargs)
        with seeded(seed) if seed is not None else contextlib.nullcontext():
            model = cls(genes, config)
            model.reset_parameters()
        return model

    @classmethod
    def pretrain(
        cls,
        adata,
        genes: Sequence[str] | None = None,
        *,
        vocabulary: Sequence[str] | None = None,
        backbone: Backbone | None = None,
        layer: str | None = None,
        d_model: int = 128,
        n_layers: int = 4,
        n_heads: int = 8,
        architecture: Literal["cellfm", "scgpt"] = "cellfm",
        n_tokens: int = 256,
        mask_ratio: float = 0.2,
        target_scale: Literal["log2p1", "log1p_cp10k"] = "log2p1",
        max_epochs: int = 10,
        batch_size: int = 32,
        lr: float = 1e-3,
        validation_size: float = 0.1,
        seed: int = 0,
        accelerator: str = "auto",
        devices: int | str = "auto",
        strategy: str | None = None,
        checkpoint_dir: str | None = None,
        show_progress_bar: bool = True,
        allow_non_integer: bool = False,
        **trainer_kwargs,
    ) -> Backbone:
        """Pre-train a backbone on expression-only data (single cells, or spots without images).

        CellFM's objective: hide ``mask_ratio`` of each sample's gene values (the learned mask embedding
        replaces them) and reconstruct them through the value decoder with MSE. Each sample shows the backbone
        ``n_tokens`` of its genes (mostly expressed ones), redrawn every epoch, so large gene spaces stay cheap.
        The result plugs into :class:`hinge_sc.HINGE` like a CellFM checkpoint.

        Parameters
        ----------
        adata
            Spots or cells × genes, raw counts.
        genes
            Genes to train on (default: all of ``adata.var_names``).
        vocabulary
            Vocabulary of the new backbone (default: ``genes``); e.g. CellFM's, so panels can use any of its genes.
        backbone
            Continue pre-training this backbone instead of a new random one.
        layer
            Layer with raw counts (default ``X``).
        d_model, n_layers, n_heads
            Size of a new backbone.
        architecture
            Shape of a new backbone: ``"cellfm"`` (retention layers, :class:`Backbone`) or ``"scgpt"`` (softmax
            transformer, :class:`~hinge_sc.nn.ScGPTBackbone`; hidden genes get its generative flag and are removed
            as keys, as in scGPT's generative pre-training; dropout 0.1 and none on the attention weights). Same objective and
            data for both.
        n_tokens
            Genes per sample.
        mask_ratio
            Fraction of the tokens hidden.
        target_scale
            Value scale (use the scale HINGE will be trained on).
        max_epochs, batch_size, lr, validation_size, seed
            Training settings (AdamW, gradient clipping 1.0).
        accelerator, devices, strategy
            Passed to :class:`lightning.pytorch.Trainer`.
        checkpoint_dir
            Write Lightning checkpoints (best and last) here.
        show_progress_bar
            Show the progress bar.
        allow_non_integer
            Accept non-negative non-integer counts (corrected counts, e.g. ambient-RNA corrected); by default
            non-integer values (log-normalised or scaled data) raise.
        **trainer_kwargs
            Other :class:`lightning.pytorch.Trainer` arguments (not those set here: ``logger``,
            ``enable_checkpointing``, ``enable_progress_bar``, ``enable_model_summary``).

        Returns
        -------
        The trained backbone (in eval mode); ``backbone.provenance.pretraining`` holds the settings and the
        per-epoch ``history`` (train and validation loss).

        Notes
        -----
        The implementation is :func:`hinge_sc.train.pretrain_backbone` (the Lightning layer), imported when this
        method is called.
        """
        from hinge_sc.train._pretrain import pretrain_backbone

        return pretrain_backbone(
            adata, genes=genes, vocabulary=vocabulary, backbone=backbone, layer=layer, d_model=d_model,
            n_layers=n_layers, n_heads=n_heads, architecture=architecture, n_tokens=n_tokens, mask_ratio=mask_ratio,
            target_scale=target_scale,
            max_epochs=max_epochs, batch_size=batch_size, lr=lr, validation_size=validation_size, seed=seed,
            accelerator=accelerator, devices=devices, strategy=strategy, checkpoint_dir=checkpoint_dir,
            show_progress_bar=show_progress_bar, allow_non_integer=allow_non_integer, **trainer_kwargs,
        )

    @classmethod
    def from_cellfm(
        cls,
        ckpt_path: str | Path,
        *,
        vocabulary: str | Path | Sequence[str] | None = None,
        config: Literal["auto", "cellfm-800m", "cellfm-80m"] | BackboneConfig = "auto",
        n_heads: int | None = None,
        ignore: Sequence[str] = (),
    ) -> Backbone:
        """Load the weights of a CellFM MindSpore checkpoint into a new backbone (without MindSpore).

        Parameter names map one to one (LayerNorm ``gamma``/``beta`` → ``weight``/``bias``; matrices are
        stored (out, in) and never transposed). Optimiser state, string entries, the 80M model's ``ST_*``
        tensors and CellFM's other heads (``cellwise_dec``, ``value_dec.zero_logit``) are skipped. The backbone
        uses ``mask_emb`` for hidden genes (CellFM's pre-training), LeakyReLU slope 0.2 and LayerNorm eps 1e-7.

        Parameters
        ----------
        ckpt_path
            MindSpore ``.ckpt`` file (files over 2 GB are streamed tensor by tensor).
        vocabulary
            CellFM's vocabulary CSV (first column = symbol) or a list of symbols: ``gene_info.csv`` (24,078
            genes) for CellFM-800M, ``expand_gene_info.csv`` (27,855 genes) for CellFM-80M (folder ``csv/`` of
            github.com/biomed-AI/CellFM). Its size must fit the checkpoint's gene table, padded to a multiple of 8.
        config
            ``"auto"`` infers ``d_model``, ``n_layers`` (largest encoder index + 1), ``d_ffn`` and ``n_bins``
            from the shapes; a CellFM name also checks them; a :class:`BackboneConfig` is used as given.
        n_heads
            Number of heads, which shapes cannot tell (default 48 when ``d_model = 1536``, as CellFM; else required).
        ignore
            Name prefixes of further checkpoint tensors to skip.

        Returns
        -------
        The backbone (``config.name`` is ``"cellfm-800m"``, ``"cellfm-80m"`` or ``"cellfm"``).

        Raises
        ------
        ValueError
            If the vocabulary does not fit the gene table or its file is not UTF-8 text, or a tensor is missing,
            unexpected or mis-shaped.
        hinge_sc.FileIntegrityError
            A tensor has NaN or infinite values (the first such tensor is named).

        Examples
        --------
        >>> bb = hs.Backbone.from_cellfm("CellFM_80M_weight.ckpt", vocabulary="expand_gene_info.csv")
        """
        cls = architecture_class(cls, "cellfm")  # also when called on a sibling class (ScGPTBackbone)
        return load_cellfm(cls, ckpt_path, vocabulary=vocabulary, config=config, n_heads=n_heads, ignore=ignore)

    @classmethod
    def from_scgpt(cls, model_dir: str | Path, *, ignore: Sequence[str] = (), name: str | None = None) -> Backbone:
        """Load an scGPT model folder (``best_model.pt``, ``vocab.json``, ``args.json``) as an scGPT-shaped backbone.

        Returns a :class:`~hinge_sc.nn.ScGPTBackbone`, which plugs into :class:`hinge_sc.HINGE` like the CellFM-style
        backbone. The state dict is read with ``torch.load(weights_only=True)``; the plain
        (``self_attn.in_proj_weight``) and flash-attention (``self_attn.Wqkv.weight``, ``self_attn._impl.Wqkv.weight``)
        names both load. Sizes come from ``args.json`` (``embsize``, ``nlayers``, ``nheads``, ``d_hid``,
        ``input_emb_style``, ``pad_value``, ``mask_value``) and the vocabulary, and every tensor is checked against
        them before the model is allocated. scGPT's heads HINGE does not use (MVC, classification, zero-probability)
        are skipped; the ``<eoc>`` row of the token table is not used.

        Parameters
        ----------
        model_dir
            The folder, e.g. scGPT's whole-human model (MIT licence; link in :data:`hinge_sc.nn.SCGPT_CHECKPOINTS`).
        ignore
            Name prefixes of further state-dict tensors to skip.
        name
            Name recorded with models built on it (default: the folder's name).

        Raises
        ------
        ValueError
            Any tensor missing, unexpected or mis-shaped (each named, with the expected and found shape).

        Examples
        --------
        >>> bb = hs.Backbone.from_scgpt("scGPT_human")
        >>> ids, report = bb.match_genes(adata.var_names)
        """
        from ._scgpt_checkpoint import load_scgpt

        return load_scgpt(architecture_class(cls, "scgpt"), model_dir, ignore=ignore, name=name)

    @classmethod
    def from_pretrained(
        cls,
        name: Literal["cellfm-80m", "cellfm-800m", "scgpt-human"],
        *,
        vocabulary: str | Path | Sequence[str] | None = None,
        cache_dir: str | Path | None = None,
        revision: str | None = None,
        show_progress_bar: bool = True,
    ) -> Backbone:
        """Download a published checkpoint (once, cached) and load it with :meth:`from_cellfm` or :meth:`from_scgpt`.

        ``"scgpt-human"`` is scGPT's whole-human model (MIT licence), a Google Drive folder fetched with ``gdown``
        (``pip install gdown``) into ``cache_dir``; ``vocabulary`` and ``revision`` do not apply to it.

        The files are on Hugging Face, ``ShangguanNingyuan/CellFM`` (CC BY-NC-ND 4.0):
        ``CellFM_80M_weight.ckpt`` (1.03 GB) and ``base_weight.ckpt`` (800M, 9.66 GB). ``huggingface_hub``
        is used when installed (``pip install hinge_sc[encoders]``), else pooch with the files' SHA-256.
        Without network access (or with ``HF_HUB_OFFLINE=1``) this fails within seconds: download the file
        elsewhere and pass it to :meth:`from_cellfm`.

        Parameters
        ----------
        name
            ``"cellfm-80m"``, ``"cellfm-800m"`` or ``"scgpt-human"``.
        vocabulary
            The matching CellFM CSV, see :meth:`from_cellfm` (not downloaded: it is not on Hugging Face).
        cache_dir
            Download folder (default: the user cache, ``hinge_sc/cellfm``).
        revision
            Hugging Face commit (default: the one checked for this release).
        show_progress_bar
            Show download progress (pooch).

        Examples
        --------
        >>> bb = hs.Backbone.from_pretrained("cellfm-80m", vocabulary="expand_gene_info.csv")
        """
        if name == "scgpt-human":
            from ._scgpt_checkpoint import download_scgpt

            return cls.from_scgpt(download_scgpt(name, cache_dir=cache_dir), name=name)
        check_vocabulary_given(vocabulary, name)
        path = download_cellfm(
            name, cache_dir=cache_dir, revision=revision or CELLFM_REVISION, show_progress_bar=show_progress_bar
        )
        return cls.from_cellfm(path, vocabulary=vocabulary, config=name)

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

    # ----------------------------------------------------------------- vocabulary and provenance
    @property
    def genes(self) -> list[str]:
        """The vocabulary's gene symbols (token id ``i + 1`` for gene ``i``)."""
        return self.vocabulary.genes

    @property
    def meta(self) -> dict:
        """Deprecated: the provenance as a plain ``dict``; use :attr:`provenance`."""
        from hinge_sc._deprecation import warn_renamed

        warn_renamed("Backbone.meta", "Backbone.provenance")
        return self.provenance.to_dict()

    def token_ids(self, genes: Sequence[str]) -> tuple[torch.Tensor, list[str]]:
        """Token ids of ``genes``: exact symbol, else case-insensitive, else a renamed symbol (:meth:`match_genes`).

        Returns
        -------
        ids
            Long tensor ``(len(genes),)``; 0 for genes not in the vocabulary.
        missing
            Genes not in the vocabulary.
        """
        ids, report = self.match_genes(genes)
        return ids, report.loc[report["match"] == "none", "gene"].tolist()

    @property
    def pretrained_token_ids(self) -> set[int] | None:
        """Token ids whose embeddings :meth:`pretrain` trained; ``None`` when not recorded (random, CellFM)."""
        record = self.provenance.pretraining
        return None if record is None else set(record.token_ids)

    def unseen_in_pretraining(self, genes: Sequence[str], *, aliases: bool | Mapping[str, str] = True) -> list[str]:
        """Genes of ``genes`` in the vocabulary whose embeddings :meth:`pretrain` never trained.

        Empty when the backbone has no record of its pre-training genes (random weights, CellFM checkpoints).
        """
        seen = self.pretrained_token_ids
        if seen is None:
            return []
        ids, _ = self.match_genes(genes, aliases=aliases)
        return [g for g, i in zip(genes, ids.tolist(), strict=True) if i > 0 and i not in seen]

    def match_genes(
        self, genes: Sequence[str], *, aliases: bool | Mapping[str, str] = True
    ) -> tuple[torch.Tensor, pd.DataFrame]:
        """Token ids of ``genes`` and a report of how each matched the vocabulary.

        A gene matches exactly, else ignoring case, else through a renamed symbol in either direction
        (e.g. ``SEPT7`` in the data and ``SEPTIN7`` in the vocabulary).

        Parameters
        ----------
        genes
            Gene symbols (e.g. ``adata.var_names``).
        aliases
            ``True``: the curated table :data:`hinge_sc.nn.GENE_ALIASES`; ``False``: symbols only; or a
            mapping previous/alias symbol → approved symbol, e.g. :func:`hinge_sc.nn.read_hgnc_aliases`.

        Returns
        -------
        ids
            Long tensor ``(len(genes),)``; 0 for genes that did not match.
        report
            DataFrame with one row per gene: ``gene``, ``token_id``, ``symbol`` (vocabulary symbol matched)
            and ``match`` (``"exact"``, ``"case"``, ``"alias"`` or ``"none"``).

        Examples
        --------
        >>> ids, report = backbone.match_genes(adata.var_names)
        >>> report["match"].value_counts()
        """
        ids, report = self.vocabulary.match(genes, aliases=aliases)
        return torch.tensor(ids, dtype=torch.long), report

    # ----------------------------------------------------------------- forward pieces
    def embed(
        self,
        values: torch.Tensor,
        token_ids: torch.Tensor,
        visible: torch.Tensor | None = None,
        mask_mechanism: MaskMechanism | None = None,
    ) -> torch.Tensor:
        """Token embeddings ``(B, 1 + G, d)``: CLS, then gene embedding + value embedding.

        Parameters
        ----------
        values
            ``(B, G)`` input values (hidden entries already filled).
        token_ids
            ``(G,)`` token ids of the panel, or ``(B, G)`` when every sample has its own genes.
        visible
            ``(B, G)``, 1 = visible; ``None`` means all visible.
        mask_mechanism
            Override of ``config.mask_mechanism`` (the mechanism the backbone was pre-trained with).
        """
        v = self.value_enc.value_enc(values)
        if visible is not None:
            hidden = (1.0 - visible).unsqueeze(-1).to(v.dtype)
            if (mask_mechanism or self.config.mask_mechanism) == "mask_emb":
                v = torch.lerp(v, self.value_enc.mask_emb.to(v.dtype), hidden)  # v (1 - hidden) + hidden · mask_emb
            else:
                v = v + hidden * self.zero_emb
        gene = self.gene_emb[token_ids]  # (G, d), or (B, G, d) for per-sample token ids
        tokens = (gene.unsqueeze(0) if token_ids.ndim == 1 else gene) + v
        cls = self.cls_token.expand(values.shape[0], 1, -1).to(tokens.dtype)
        return torch.cat([cls, tokens], dim=1)

    @staticmethod
    def key_mask(visible: torch.Tensor | None) -> torch.Tensor | None:
        """``(B, 1 + G)`` key/value mask: CLS always 1, genes their visibility."""
        if visible is None:
            return None
        return torch.cat([visible.new_ones(visible.shape[0], 1), visible], dim=1)

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        """Decode the gene tokens of ``h`` ``(B, 1 + G, d)`` into values ``(B, G)`` (CLS is not decoded)."""
        return self.value_dec(h[:, 1:])

    def forward(self, values: torch.Tensor, token_ids: torch.Tensor, visible: torch.Tensor | None = None):
        """Plain (unconditioned) backbone: reconstruct all gene values ``(B, G)``."""
        h = self.embed(values, token_ids, visible)
        km = self.key_mask(visible)
        for layer in self.encoder:
            h = layer(h, km)
        return self.decode(h)

    # ----------------------------------------------------------------- persistence (see _backbone_io)
    def checksum(self) -> str:
        """SHA-256 over the vocabulary, config and every tensor (first 16 hex digits)."""
        return checksum(self)

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the backbone (vocabulary, config, weights, provenance) to one file, atomically.

        The file holds only tensors and plain data, so :meth:`load` reads it with ``weights_only=True``.

        Raises
        ------
        FileExistsError
            ``path`` exists and ``overwrite`` is false.
        """
        return save_backbone(self, path, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path, *, map_location: str | torch.device = "cpu") -> Backbone:
        """Read a backbone written by :meth:`save` (no unpickling: ``torch.load(..., weights_only=True)``).

        Raises
        ------
        FileNotFoundError
            No file at ``path``.
        hinge_sc.FileIntegrityError
            The file is truncated, corrupt, not a backbone file, holds objects other than tensors and plain data,
            or holds NaN or infinite weights (the first such tensor is named).
        """
        return load_backbone(cls, path, map_location=map_location)

    def extra_repr(self) -> str:
        c = self.config
        return f"name={c.name!r}, genes={len(self.genes)}, d={c.d_model}, L={c.n_layers}, H={c.n_heads}"

