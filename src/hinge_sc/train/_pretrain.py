"""Pre-training a backbone on expression-only data with CellFM's masked-value objective."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

import lightning.pytorch as pl
import numpy as np
import scipy.sparse as sp
import torch
from torch.utils.data import DataLoader, Dataset

from hinge_sc._counts import panel_counts
from hinge_sc._random import Noise, seeded
from hinge_sc.module import expression_target, ranks_of, visibility
from hinge_sc.nn._provenance import PretrainingRecord

from ._datamodule import split_spots
from ._stream import CountBlocks
from ._progress import EpochLines, quiet_lightning, use_epoch_lines

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anndata import AnnData

    from hinge_sc.nn import Backbone

logger = logging.getLogger(__name__)


def sample_tokens(cols: np.ndarray, n_genes: int, n_tokens: int, rng: np.random.Generator) -> np.ndarray:
    """Genes (column indices) one spot shows the backbone: mostly expressed genes, some unexpressed ones.

    At least a quarter of the tokens are unexpressed genes (so the model also learns zeros) when the data
    has enough of them; the rest are expressed genes drawn without replacement.

    Parameters
    ----------
    cols
        Column indices of the genes the spot expresses.
    n_genes
        Number of genes (columns) of the data.
    n_tokens
        Tokens per sample.

    Returns
    -------
    ``(min(n_tokens, n_genes),)`` distinct column indices.
    """
    n_tokens = min(n_tokens, n_genes)
    n_unexpressed = n_genes - len(cols)
    n_expr = min(len(cols), max(n_tokens - n_tokens // 4, n_tokens - n_unexpressed))
    chosen = rng.choice(cols, size=n_expr, replace=False) if n_expr < len(cols) else cols
    n_zero = n_tokens - len(chosen)
    if n_zero > 0:
        mask = np.ones(n_genes, dtype=bool)
        mask[cols] = False
        chosen = np.concatenate([chosen, rng.choice(np.flatnonzero(mask), size=n_zero, replace=False)])
    return chosen.astype(np.int64)


def hide_random_genes(
    shape: tuple[int, int], mask_ratio: float, generator: torch.Generator | None, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hide ``round(mask_ratio · G)`` (at least 1) random genes per row, with the method's masks.

    Uses :func:`hinge_sc.module.ranks_of` and :func:`hinge_sc.module.visibility`, the masks of masked diffusion at
    a fixed ratio.

    Returns
    -------
    visible
        ``(n, G)`` float, 1 = visible.
    hidden
        ``(n, G)`` bool, the complement.
    """
    n, n_genes = shape
    k = max(1, round(mask_ratio * n_genes))
    ranks = ranks_of(Noise.shared(generator, n, device).rand(n_genes))
    visible = visibility(ranks, torch.full((n,), k, device=device))
    return visible, visible == 0


class SpotTokenDataset(Dataset):
    """Each item: ``n_tokens`` genes of one spot (random subset, redrawn every epoch), their counts and library.

    Parameters
    ----------
    counts
        CSR spots × genes raw counts (genes already restricted to the vocabulary).
    token_ids
        ``(n_genes,)`` backbone token id of each column.
    n_tokens
        Genes per sample.
    seed
        Seed of the token draws.
    library
        ``(n_spots,)`` total counts over all genes of the data (default: the row sums of ``counts``).
    offset
        Index of the first row in the whole data (a block of a stream): row ``i`` draws its genes from
        ``(seed, epoch, offset + i)``.
    """

    def __init__(
        self,
        counts: sp.csr_matrix,
        token_ids: np.ndarray,
        n_tokens: int,
        seed: int = 0,
        library: np.ndarray | None = None,
        offset: int = 0,
    ):
        self.counts, self.token_ids, self.n_tokens = counts, token_ids, n_tokens
        row_sums = np.asarray(counts.sum(axis=1)).ravel()
        self.library = (row_sums if library is None else np.asarray(library)).astype(np.float32)
        self.seed, self.offset = seed, offset
        self.epoch = 0

    def __len__(self) -> int:
        return self.counts.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng((self.seed, self.epoch, self.offset + i))
        start, end = self.counts.indptr[i], self.counts.indptr[i + 1]
        cols = self.counts.indices[start:end]
        chosen = sample_tokens(cols, self.counts.shape[1], self.n_tokens, rng)
        values = np.asarray(self.counts[i, chosen].todense()).ravel().astype(np.float32)
        return {
            "counts": torch.from_numpy(values),
            "token_ids": torch.from_numpy(self.token_ids[chosen]),
            "library": torch.tensor(self.library[i]),
        }


class BackbonePretrainingPlan(pl.LightningModule):
    r"""Masked-value reconstruction (CellFM's pre-training objective).

    A fraction ``mask_ratio`` of each sample's gene tokens is hidden (the mask embedding replaces their
    value embedding, and they are removed as keys in the first half of the layers); the loss is

    .. math::

        \mathcal L = \frac{1}{|M|} \sum_{(b, g) \in M} (\hat x_{bg} - x_{bg})^2

    over the hidden entries ``M``.
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        mask_ratio: float = 0.2,
        target_scale: Literal["log2p1", "log1p_cp10k"] = "log2p1",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
    ):
        super().__init__()
        if not 0 < mask_ratio < 1:
            raise ValueError(f"`mask_ratio` must be in (0, 1), got {mask_ratio}.")
        self.backbone = backbone
        self.mask_ratio, self.target_scale = mask_ratio, target_scale
        self.lr, self.weight_decay = lr, weight_decay

    def masked_loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None):
        x = expression_target(batch["counts"], batch["library"], self.target_scale)
        visible, hidden = hide_random_genes(x.shape, self.mask_ratio, generator, x.device)
        pred = self.backbone(x * visible, batch["token_ids"], visible)
        return ((pred - x) ** 2)[hidden].mean()

    def training_step(self, batch, batch_idx):
        loss = self.masked_loss(batch)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=self._ddp)
        return loss

    def validation_step(self, batch, batch_idx):
        gen = torch.Generator(device=self.device).manual_seed(1000 + batch_idx)
        self.log("validation_loss", self.masked_loss(batch, gen), on_step=False, on_epoch=True, prog_bar=True,
                 sync_dist=self._ddp)

    @property
    def _ddp(self) -> bool:
        return self.trainer is not None and self.trainer.world_size > 1

    def on_train_epoch_start(self):
        loader = self.trainer.train_dataloader
        dataset = getattr(loader, "dataset", None)
        if isinstance(dataset, SpotTokenDataset):
            dataset.epoch = self.current_epoch  # new gene subsets every epoch

    def configure_optimizers(self):
        return torch.optim.AdamW(self.backbone.parameters(), lr=self.lr, weight_decay=self.weight_decay)


class _History(pl.Callback):
    def __init__(self):
        self.rows: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer, pl_module):
        row = {"epoch": trainer.current_epoch}
        row.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        self.rows.append(row)


#: Trainer arguments :func:`run_pretraining` sets itself (``callbacks`` and ``gradient_clip_val`` are merged).
RESERVED_TRAINER_KWARGS = ("enable_checkpointing", "enable_progress_bar", "enable_model_summary", "logger",
                           "max_epochs", "accelerator", "devices", "strategy")  # fmt: skip


def memory_loaders(
    counts: sp.csr_matrix, token_ids: np.ndarray, library: np.ndarray, *, n_tokens: int, batch_size: int,
    validation_size: float, seed: int,
) -> dict[str, DataLoader]:  # fmt: skip
    """Training and validation loaders of counts in memory (random spots held out)."""
    train_idx, val_idx = split_spots(counts.shape[0], validation_size, seed)
    train_ds = SpotTokenDataset(counts[train_idx], token_ids, n_tokens, seed, library=library[train_idx])
    loaders = {"train_dataloaders": DataLoader(train_ds, batch_size=batch_size, shuffle=True)}
    if len(val_idx):
        val_ds = SpotTokenDataset(counts[val_idx], token_ids, n_tokens, seed + 1, library=library[val_idx])
        loaders["val_dataloaders"] = DataLoader(val_ds, batch_size=batch_size)
    return loaders


def _block_panel(block: dict, genes: Sequence[str]):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # counted once in the first pass
        return panel_counts(block["X"], block["var_names"], genes, purpose="pre-training", sparse=True)


def stream_loaders(
    blocks: list, genes: Sequence[str], token_ids: np.ndarray, *, n_tokens: int, batch_size: int,
    validation_size: float, seed: int, allow_non_integer: bool,
) -> tuple[dict[str, DataLoader], int]:  # fmt: skip
    """Training and validation streams over ``blocks`` (whole blocks held out); one pass first checks the counts.

    Returns the loaders and the number of spots used.
    """
    from hinge_sc._validators import check_counts

    from ._stream import BlockStream

    sizes = []
    for block in blocks:
        loaded = block()
        check_counts(loaded["X"], where=f"the counts of {loaded.get('where', 'a block')}", allow_non_integer=allow_non_integer)
        try:
            sizes.append(len(_block_panel(loaded, genes).keep))
        except ValueError:  # no spot of the block has counts in the genes
            sizes.append(0)
    used = [i for i, n in enumerate(sizes) if n]
    if not used:
        raise ValueError("No spot has counts in the pre-training genes; nothing to pre-train on.")
    train_b, val_b = split_spots(len(used), validation_size, seed) if len(used) > 1 else (np.arange(1), np.array([], int))
    starts = np.concatenate([[0], np.cumsum(sizes)])

    def stream(which: np.ndarray, shuffle: bool, stream_seed: int) -> BlockStream:
        chosen = [used[i] for i in which]
        loaders = [_Offset(blocks[i], int(starts[i])) for i in chosen]
        items = _offset_items(genes, token_ids, n_tokens, stream_seed, redraw=shuffle)
        return BlockStream(loaders, [sizes[i] for i in chosen], items, batch_size=batch_size, seed=stream_seed,
                           shuffle=shuffle)  # fmt: skip

    loaders = {"train_dataloaders": DataLoader(stream(train_b, True, seed), batch_size=None)}
    if len(val_b):
        loaders["val_dataloaders"] = DataLoader(stream(val_b, False, seed + 1), batch_size=None)
    return loaders, int(sum(sizes))


class _Offset:
    """A block loader that also says where its rows start in the whole data (the seeds of their token draws)."""

    def __init__(self, block, offset: int):
        self.block, self.offset = block, offset

    def __call__(self) -> dict:
        return {**self.block(), "offset": self.offset}


def _offset_items(genes: Sequence[str], token_ids: np.ndarray, n_tokens: int, seed: int, *, redraw: bool):
    """``make_items`` of :class:`~hinge_sc.train.BlockStream` for pre-training: a block's rows as token samples
    (new gene subsets every epoch with ``redraw``, else the same ones, as the validation set in memory)."""
    from torch.utils.data import default_collate

    def make(block: dict, generator: torch.Generator, epoch: int):
        panel = _block_panel(block, genes)
        ds = SpotTokenDataset(panel.counts, token_ids, n_tokens, seed, library=panel.library, offset=block["offset"])
        ds.epoch = epoch if redraw else 0

        def take(rows: torch.Tensor) -> dict[str, torch.Tensor]:
            return default_collate([ds[int(i)] for i in rows])

        return take, len(ds)

    return make


def run_pretraining(
    backbone: Backbone,
    loaders: dict[str, DataLoader],
    *,
    mask_ratio: float,
    target_scale: str,
    max_epochs: int,
    lr: float,
    seed: int,
    accelerator: str,
    devices,
    strategy: str | None,
    checkpoint_dir: str | None,
    show_progress_bar: bool,
    **trainer_kwargs,
) -> list[dict[str, float]]:
    """Fit ``backbone`` in place on ``loaders``; returns the per-epoch history (see :func:`pretrain_backbone`)."""
    has_val = "val_dataloaders" in loaders
    plan = BackbonePretrainingPlan(backbone, mask_ratio=mask_ratio, target_scale=target_scale, lr=lr)
    history = _History()
    callbacks = [history, *trainer_kwargs.pop("callbacks", [])]
    if checkpoint_dir is not None:
        callbacks.append(
            pl.callbacks.ModelCheckpoint(
                dirpath=checkpoint_dir, monitor="validation_loss" if has_val else "train_loss", save_last=True
            )
        )
    if strategy is not None:
        trainer_kwargs["strategy"] = strategy
    quiet_lightning()
    epoch_lines = use_epoch_lines(show_progress_bar)  # a log file: one line per epoch instead of the bar
    if epoch_lines:
        callbacks.append(EpochLines())
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        accelerator=accelerator,
        devices=devices,
        callbacks=callbacks,
        enable_checkpointing=checkpoint_dir is not None,
        enable_progress_bar=show_progress_bar and not epoch_lines,
        enable_model_summary=False,
        logger=False,
        gradient_clip_val=trainer_kwargs.pop("gradient_clip_val", 1.0),
        **trainer_kwargs,
    )
    with seeded(seed):  # dropout, shuffling and masks from `seed`; the caller's global RNGs are left alone
        trainer.fit(plan, **loaders)
    backbone.eval()
    return history.rows


@torch.no_grad()
def masked_reconstruction_error(
    backbone: Backbone,
    counts: sp.csr_matrix,
    token_ids: np.ndarray,
    gene_means: np.ndarray,
    *,
    n_tokens: int = 256,
    mask_ratio: float = 0.2,
    target_scale: str = "log2p1",
    batch_size: int = 64,
    seed: int = 0,
    library: np.ndarray | None = None,
) -> dict[str, float]:
    """MSE of masked values: the backbone's reconstruction vs imputing each gene's training mean.

    Parameters
    ----------
    backbone
        Pre-trained backbone.
    counts
        Held-out spots × genes raw counts (CSR).
    token_ids
        Token id per column.
    gene_means
        ``(n_genes,)`` mean of each gene on the training spots, on the target scale.
    library
        ``(n_spots,)`` total counts over all genes (default: the row sums of ``counts``).

    Returns
    -------
    ``{"mse_backbone", "mse_mean_imputation", "n_masked"}``.
    """
    backbone.eval()
    device = next(backbone.parameters()).device
    ds = SpotTokenDataset(counts, token_ids, n_tokens, seed, library=library)
    gen = torch.Generator().manual_seed(seed)
    col_of_token = {int(t): c for c, t in enumerate(token_ids)}
    sq_model = sq_mean = n = 0.0
    for batch in DataLoader(ds, batch_size=batch_size):
        x = expression_target(batch["counts"], batch["library"], target_scale)
        visible, hidden = hide_random_genes(x.shape, mask_ratio, gen, x.device)
        pred = backbone((x * visible).to(device), batch["token_ids"].to(device), visible.to(device)).cpu()
        cols = np.vectorize(col_of_token.get)(batch["token_ids"].numpy())
        mean_pred = torch.as_tensor(gene_means[cols], dtype=torch.float32)
        sq_model += float(((pred - x) ** 2)[hidden].sum())
        sq_mean += float(((mean_pred - x) ** 2)[hidden].sum())
        n += float(hidden.sum())
    return {"mse_backbone": sq_model / n, "mse_mean_imputation": sq_mean / n, "n_masked": int(n)}


#: Options of a new backbone of each architecture :func:`pretrain_backbone` builds (other registered architectures:
#: their defaults, named ``"hinge_sc-pretrained-<architecture>"``).
PRETRAINING_OPTIONS = {
    "cellfm": {"name": "hinge_sc-pretrained"},
    # CellFM's dropout rate; no dropout of attention weights (costly on CPU, CellFM's retention has none)
    "scgpt": {"name": "hinge_sc-pretrained-scgpt", "dropout": 0.1, "attention_dropout": 0.0},
}


def pretrain_backbone(
    adata: AnnData,
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
    block_rows: int = 8192,
    **trainer_kwargs,
) -> Backbone:
    """Pre-train a backbone on expression-only data (single cells, or spots without images).

    CellFM's objective: hide ``mask_ratio`` of each sample's gene values (the learned mask embedding
    replaces them) and reconstruct them through the value decoder with MSE. Each sample shows the backbone
    ``n_tokens`` of its genes (mostly expressed ones), redrawn every epoch, so large gene spaces stay cheap.
    The result plugs into :class:`hinge_sc.HINGE` like a CellFM checkpoint. Public as ``hs.pretrain_backbone``.

    Parameters
    ----------
    adata
        Spots or cells × genes, raw counts; or data too large for memory, read in blocks of rows: a
        :class:`~hinge_sc.io.SectionCollection` of ``.h5ad``/``.zarr`` files (anything with ``count_blocks``,
        :class:`~hinge_sc.train.CountBlocks`). A stream holds out whole blocks for validation and reads two blocks
        at a time, shuffled together.
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
        Shape of a new backbone, a name of :data:`hinge_sc.nn.BACKBONES`: ``"cellfm"`` (retention layers,
        :class:`~hinge_sc.nn.CellFMBackbone`) or ``"scgpt"`` (softmax transformer, :class:`~hinge_sc.nn.ScGPTBackbone`;
        hidden genes get its generative flag and are removed as keys, as in scGPT's generative pre-training;
        dropout 0.1 and none on the attention weights). Same objective and data for both.
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
    block_rows
        Rows per block when ``adata`` is read in blocks.
    **trainer_kwargs
        Other :class:`lightning.pytorch.Trainer` arguments (not those set here, :data:`RESERVED_TRAINER_KWARGS`:
        ``logger``, ``enable_checkpointing``, ``enable_progress_bar``, ``enable_model_summary``, …; they raise a
        TypeError).

    Returns
    -------
    The trained backbone (in eval mode); ``backbone.provenance.pretraining`` holds the settings and the
    per-epoch ``history`` (train and validation loss).

    Examples
    --------
    >>> bb = hs.pretrain_backbone(counts_adata, vocabulary=cellfm_vocabulary, d_model=128, max_epochs=10)
    >>> bb.save("prior.pt")
    """
    import warnings

    import pandas as pd

    from hinge_sc._validators import (
        check_counts,
        check_genes_given,
        check_n_obs,
        check_positive_int,
        check_seed,
        check_trainer_kwargs,
    )
    from hinge_sc.nn import BACKBONES

    check_trainer_kwargs(trainer_kwargs, RESERVED_TRAINER_KWARGS, where="`pretrain_backbone`")
    check_positive_int(batch_size, argument="batch_size")
    check_seed(seed)
    streamed = isinstance(adata, CountBlocks)
    if not streamed:
        check_n_obs(adata)
    check_genes_given(genes, argument="genes")
    if streamed:
        check_positive_int(block_rows, argument="block_rows")
        x = None
    else:
        if layer is not None and layer not in adata.layers:
            raise KeyError(f"`layer={layer!r}` is not in `adata.layers` (available: {list(adata.layers)}).")
        x = adata.X if layer is None else adata.layers[layer]
        where = f"`adata.{'X' if layer is None else f'layers[{layer!r}]'}`"
        check_counts(x, where=where, allow_non_integer=allow_non_integer)
    var_names = pd.Index(adata.var_names)
    genes = list(var_names) if genes is None else [str(g) for g in genes]
    absent = [g for g in genes if g not in var_names]
    if absent:
        raise KeyError(f"{len(absent)} of `genes` are not in `adata.var_names`, e.g. {absent[:10]}.")
    if backbone is None:
        if architecture not in BACKBONES:
            raise ValueError(f"`architecture` must be one of {sorted(BACKBONES)}, got {architecture!r}.")
        options = PRETRAINING_OPTIONS.get(architecture, {"name": f"hinge_sc-pretrained-{architecture}"})
        backbone = BACKBONES[architecture].random(
            genes if vocabulary is None else list(vocabulary),
            d_model=d_model, n_layers=n_layers, n_heads=n_heads, seed=seed, **options,
        )
    ids, missing = backbone.token_ids(genes)
    if missing:
        warnings.warn(
            f"{len(missing)} of {len(genes)} genes are not in the backbone vocabulary and are not used, "
            f"e.g. {missing[:10]}",
            UserWarning,
            stacklevel=2,
        )
    keep_genes = [g for g, i in zip(genes, ids.tolist(), strict=True) if i > 0]
    if not keep_genes:
        raise ValueError("None of the genes is in the backbone vocabulary; nothing to pre-train on.")
    token_ids = ids[ids > 0].numpy()
    if streamed:
        loaders, n_spots = stream_loaders(
            adata.count_blocks(block_rows, layer), keep_genes, token_ids, n_tokens=n_tokens, batch_size=batch_size,
            validation_size=validation_size, seed=seed, allow_non_integer=allow_non_integer,
        )  # fmt: skip
    else:
        panel = panel_counts(x, var_names, keep_genes, purpose="pre-training", sparse=True, stacklevel=3)
        n_spots = int(panel.counts.shape[0])
        loaders = memory_loaders(panel.counts, token_ids, panel.library, n_tokens=n_tokens, batch_size=batch_size,
                                 validation_size=validation_size, seed=seed)  # fmt: skip
    history = run_pretraining(
        backbone, loaders, mask_ratio=mask_ratio, target_scale=target_scale, max_epochs=max_epochs, lr=lr,
        seed=seed, accelerator=accelerator, devices=devices, strategy=strategy, checkpoint_dir=checkpoint_dir,
        show_progress_bar=show_progress_bar, **trainer_kwargs,
    )  # fmt: skip
    backbone.provenance.pretraining = PretrainingRecord(
        objective="masked value reconstruction (MSE)",
        n_spots=n_spots,
        n_genes=len(keep_genes),
        token_ids=sorted({int(i) for i in token_ids}),  # genes whose embeddings were trained
        n_tokens=n_tokens,
        mask_ratio=mask_ratio,
        max_epochs=max_epochs,
        lr=lr,
        seed=seed,
        history=history,
    )
    backbone.provenance.target_scale = target_scale
    return backbone
