"""The base class of every backbone architecture (docs/method.md §3) and the registration of architectures.

:class:`Backbone` holds what all architectures share: the gene vocabulary and its matching, the provenance, the
token layout (CLS, then one token per gene), the forward pass through ``encoder`` and ``value_dec``, persistence
and the factories (:meth:`~Backbone.random`, :meth:`~Backbone.from_cellfm`, :meth:`~Backbone.from_scgpt`,
:meth:`~Backbone.from_pretrained`, :meth:`~Backbone.load`). Each architecture is a sibling subclass that builds its
own network (:class:`~hinge_sc.nn.CellFMBackbone`, :class:`~hinge_sc.nn.ScGPTBackbone`) and is registered by name
with :func:`register_backbone`; files name their architecture and are read back through the registry.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import TYPE_CHECKING, ClassVar, Literal, TypeVar

import torch
from torch import nn

from hinge_sc._random import seeded

from ._backbone_io import checksum, load_backbone, save_backbone
from ._cellfm import CELLFM_REVISION, check_vocabulary_given, download_cellfm, load_cellfm
from ._genes import GeneVocabulary
from ._provenance import Provenance
from ._registry import BACKBONES, DEFAULT_ARCHITECTURE, backbone_class, class_for_config
from ._scgpt_checkpoint import SCGPT_CHECKPOINTS, download_scgpt, load_scgpt

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    import pandas as pd

    from ._config import BackboneConfig, MaskMechanism

logger = logging.getLogger(__name__)

B = TypeVar("B", bound="Backbone")


class Backbone(nn.Module):
    """Single-cell foundation model: gene tokens, a stack of layers, a value decoder (base of every architecture).

    Tokens are one CLS token followed by one token per panel gene; a gene's token is its gene embedding plus the
    embedding of its value, and hidden genes get the architecture's hidden-gene embedding. The architectures are
    sibling subclasses, registered by name in :data:`hinge_sc.nn.BACKBONES`: ``"cellfm"``
    (:class:`~hinge_sc.nn.CellFMBackbone`, retention layers) and ``"scgpt"`` (:class:`~hinge_sc.nn.ScGPTBackbone`,
    softmax transformer); ``isinstance(x, hs.Backbone)`` holds for all of them.

    ``Backbone(genes, config)`` builds the architecture whose config class ``config`` is (a
    :class:`~hinge_sc.nn.BackboneConfig`, or none: CellFM-style), uninitialised; use the factories below.

    Parameters
    ----------
    genes
        Vocabulary (gene symbols); gene ``i`` has token id ``i + 1``, id 0 is padding.
    config
        Sizes and options: an instance of the architecture's ``config_class`` (default: its defaults).

    Examples
    --------
    >>> bb = hs.Backbone.random(["CD3E", "MS4A1", "EPCAM"], d_model=32, n_layers=2, n_heads=4)
    >>> bb.save("backbone.pt"); hs.Backbone.load("backbone.pt")
    """

    #: Name of the architecture, saved with the backbone so that :meth:`load` rebuilds the right class.
    architecture: ClassVar[str]
    #: Dataclass of the architecture's hyper-parameters (saved with the backbone as plain data).
    config_class: ClassVar[type]

    def __new__(cls, *args, **kwargs):
        # `Backbone(genes, config)` on the base class builds the architecture that `config` belongs to
        if cls is Backbone:
            cls = class_for_config(kwargs.get("config", args[1] if len(args) > 1 else None))
        return super().__new__(cls)

    def __init__(self, genes: Sequence[str], config: object | None = None):
        super().__init__()
        self.vocabulary = GeneVocabulary(genes)
        config = self.config_class() if config is None else config
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"`config` of a {type(self).__name__} must be a {self.config_class.__name__}, found "
                f"{type(config).__name__}."
            )
        self.config = config
        #: Where the weights come from (pre-training run, checkpoint, scale); saved with the backbone.
        self.provenance = Provenance()

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
        """A randomly initialised backbone of any size (CellFM-style when called on :class:`Backbone`).

        Parameters
        ----------
        genes
            Vocabulary.
        d_model, n_layers, n_heads
            Width ``d``, depth ``L`` and heads ``H``.
        shape
            CellFM-style only: use the shape of a published CellFM model instead (``d=1536``; ``L=40, H=48`` or
            ``L=2, H=48``).
        seed
            Seed of the initialisation (``None`` uses the global generator).
        **config_kwargs
            Other fields of the architecture's config (:class:`~hinge_sc.nn.BackboneConfig`,
            :class:`~hinge_sc.nn.ScGPTConfig`), e.g. ``dropout``.
        """
        arch = backbone_class(DEFAULT_ARCHITECTURE) if cls is Backbone else cls
        config = arch.random_config(d_model=d_model, n_layers=n_layers, n_heads=n_heads, shape=shape, **config_kwargs)
        with seeded(seed) if seed is not None else contextlib.nullcontext():
            model = arch(genes, config)
            model.reset_parameters()
        return model

    @classmethod
    def random_config(cls, *, d_model: int, n_layers: int, n_heads: int, shape: str | None = None, **config_kwargs):
        """The config :meth:`random` builds (name ``"random-<architecture>"`` unless ``name`` is given).

        Raises
        ------
        ValueError
            ``shape`` is given: only the CellFM-style architecture has published shapes.
        """
        if shape is not None:
            raise ValueError(f"`shape` names a published CellFM model; a {cls.__name__} has none (pass the sizes).")
        name = config_kwargs.pop("name", f"random-{cls.architecture}")
        return cls.config_class(d_model=d_model, n_layers=n_layers, n_heads=n_heads, name=name, **config_kwargs)

    def reset_parameters(self) -> None:
        """Initialise every weight as the architecture's authors do (random backbones and pre-training)."""
        raise NotImplementedError(f"{type(self).__name__} must implement `reset_parameters`.")

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

        Returns a :class:`~hinge_sc.nn.CellFMBackbone` (also when called on another architecture's class).
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
            from the shapes; a CellFM name also checks them; a :class:`~hinge_sc.nn.BackboneConfig` is used as given.
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
        return load_cellfm(
            backbone_class("cellfm"), ckpt_path, vocabulary=vocabulary, config=config, n_heads=n_heads, ignore=ignore
        )

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
        return load_scgpt(backbone_class("scgpt"), model_dir, ignore=ignore, name=name)

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
        if name in SCGPT_CHECKPOINTS:
            return cls.from_scgpt(download_scgpt(name, cache_dir=cache_dir), name=name)
        check_vocabulary_given(vocabulary, name)
        path = download_cellfm(
            name, cache_dir=cache_dir, revision=revision or CELLFM_REVISION, show_progress_bar=show_progress_bar
        )
        return cls.from_cellfm(path, vocabulary=vocabulary, config=name)

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
        """Token ids whose embeddings :func:`hinge_sc.pretrain_backbone` trained; ``None`` when not recorded (random,
        CellFM)."""
        record = self.provenance.pretraining
        return None if record is None else set(record.token_ids)

    def unseen_in_pretraining(self, genes: Sequence[str], *, aliases: bool | Mapping[str, str] = True) -> list[str]:
        """Genes of ``genes`` in the vocabulary whose embeddings :func:`hinge_sc.pretrain_backbone` never trained.

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
        v = self.embed_values(values, visible, mask_mechanism or self.config.mask_mechanism)
        gene = self.embed_genes(token_ids)  # (G, d), or (B, G, d) for per-sample token ids
        tokens = (gene.unsqueeze(0) if token_ids.ndim == 1 else gene) + v
        return torch.cat([self.embed_cls(values, tokens.dtype), tokens], dim=1)

    def embed_values(
        self, values: torch.Tensor, visible: torch.Tensor | None, mask_mechanism: MaskMechanism
    ) -> torch.Tensor:
        """``(B, G)`` values → ``(B, G, d)`` value embeddings, hidden genes (``visible`` 0) embedded as such."""
        raise NotImplementedError(f"{type(self).__name__} must implement `embed_values`.")

    def embed_genes(self, token_ids: torch.Tensor) -> torch.Tensor:
        """``(G,)`` or ``(B, G)`` token ids → gene embeddings ``(G, d)`` or ``(B, G, d)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement `embed_genes`.")

    def embed_cls(self, values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The ``(B, 1, d)`` CLS token of a batch of ``values`` ``(B, G)``, in ``dtype``."""
        raise NotImplementedError(f"{type(self).__name__} must implement `embed_cls`.")

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
        """Write the backbone (architecture, vocabulary, config, weights, provenance) to one file, atomically.

        The file holds only tensors and plain data, so :meth:`load` reads it with ``weights_only=True``.

        Raises
        ------
        FileExistsError
            ``path`` exists and ``overwrite`` is false.
        OutputNotWritableError
            ``path`` cannot be written (permissions, a read-only disk).
        """
        from hinge_sc._files import writing_to

        with writing_to(path, argument="path"):
            return save_backbone(self, path, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path, *, map_location: str | torch.device = "cpu") -> Backbone:
        """Read a backbone written by :meth:`save` (no unpickling: ``torch.load(..., weights_only=True)``).

        The file names its architecture; the backbone is rebuilt as the class registered under that name
        (:data:`hinge_sc.nn.BACKBONES`), whichever class this is called on.

        Raises
        ------
        FileNotFoundError
            No file at ``path``.
        ValueError
            The file's architecture is not registered (the message names the registered ones).
        hinge_sc.FileIntegrityError
            The file is truncated, corrupt, not a backbone file, holds objects other than tensors and plain data,
            or holds NaN or infinite weights (the first such tensor is named).
        """
        return load_backbone(path, map_location=map_location)

    def extra_repr(self) -> str:
        c = self.config
        return f"name={c.name!r}, genes={len(self.genes)}, d={c.d_model}, L={c.n_layers}, H={c.n_heads}"


def register_backbone(cls: type[B], *, replace: bool = False) -> type[B]:
    """Register a backbone architecture under its ``architecture`` name (usable as a class decorator).

    Registered architectures are what :meth:`Backbone.load` can read back and what ``Backbone(genes, config)``
    dispatches to by config class. The built-in ones are ``"cellfm"`` and ``"scgpt"``.

    Parameters
    ----------
    cls
        A subclass of :class:`Backbone` with a string ``architecture`` and a dataclass ``config_class``; it
        implements ``__init__(genes, config)`` (calling ``super().__init__(genes, config)`` first),
        ``reset_parameters``, ``embed_values``, ``embed_genes``, ``embed_cls`` and has an ``encoder`` (layers
        ``h, key_mask → h``) and a ``value_dec``.
    replace
        Replace a different class registered under the same name (else that is an error).

    Returns
    -------
    ``cls``, unchanged.

    Raises
    ------
    TypeError
        ``cls`` is not a subclass of :class:`Backbone`, or lacks ``architecture`` or a dataclass ``config_class``.
    ValueError
        Another class is registered under that name and ``replace`` is false.

    Examples
    --------
    >>> @hs.nn.register_backbone
    ... class MyBackbone(hs.Backbone):
    ...     architecture = "mine"
    ...     config_class = MyConfig
    """
    if not (isinstance(cls, type) and issubclass(cls, Backbone)) or cls is Backbone:
        raise TypeError(f"`cls` must be a subclass of hinge_sc.Backbone, found {cls!r}.")
    name = getattr(cls, "architecture", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__} needs a class attribute `architecture` (a non-empty string), found {name!r}.")
    config_class = getattr(cls, "config_class", None)
    if not (isinstance(config_class, type) and dataclasses.is_dataclass(config_class)):
        raise TypeError(f"{cls.__name__} needs a class attribute `config_class` (a dataclass), found {config_class!r}.")
    existing = BACKBONES.get(name)
    if existing is not None and existing is not cls and not replace:
        raise ValueError(
            f"Backbone architecture {name!r} is already registered as {existing.__module__}.{existing.__qualname__}; "
            "give yours another `architecture` name, or pass `replace=True`."
        )
    BACKBONES[name] = cls
    logger.debug("Registered backbone architecture %r: %s", name, cls.__qualname__)
    return cls
