"""Training on sections that do not fit in memory together: blocks of spots streamed from disk, a few at a time.

A *block* is a callable that loads one chunk of spots (a section of a :class:`~hinge_sc.io.SectionCollection`, or
rows of a backed AnnData) as arrays. :class:`BlockStream` visits the blocks in a seeded order each epoch, holds
``buffer_blocks`` of them at once and shuffles their items together (the shard-and-buffer shuffle of streaming data
loaders); memory is bounded by the largest ``buffer_blocks`` blocks, not by the data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from hinge_sc._constants import MODULE_KEYS

from ._datamodule import SpotViewDataset, section_record, split_sections, views_per_spot

logger = logging.getLogger(__name__)

#: A block: loads its spots as ``{key: (n, ...) array}``; every value has the block's spots on axis 0.
Block = Callable[[], dict[str, Any]]


@runtime_checkable
class CountBlocks(Protocol):
    """Expression data read in blocks of rows (e.g. :class:`hinge_sc.io.SectionCollection`), for pre-training.

    ``count_blocks(max_rows, layer)`` returns loaders of blocks of at most ``max_rows`` rows, each loading
    ``{"X": CSR (n, n_genes), "var_names": pd.Index}``; ``var_names`` are the genes every block has.
    """

    var_names: Any

    def count_blocks(self, max_rows: int, layer: str | None = None) -> list[Block]: ...


def _rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class BlockStream(IterableDataset):
    """Batches of items from ``blocks``, streamed: blocks in a seeded order, ``buffer_blocks`` shuffled together.

    Each epoch (each ``iter``) draws a permutation of the blocks from ``(seed, epoch)``, loads them
    ``buffer_blocks`` at a time, and yields the items of the loaded blocks in a random order, batched; a batch may
    span two buffers, so the number of batches per epoch is fixed (``ceil(n_items / batch_size)``). With several
    processes (DDP) every process streams the same order and keeps every ``world``-th batch (the last incomplete
    round is dropped), so all processes run the same number of steps.

    Parameters
    ----------
    blocks
        Loaders of the blocks.
    sizes
        ``(n_blocks,)`` items in each block (its spots × views per spot per epoch).
    make_items
        ``make_items(block, generator, epoch) → (take, n)``: the ``n`` items of a loaded block and ``take(rows) →
        batch dict`` that collates some of them.
    batch_size
        Items per batch.
    seed
        Seed of the block order, the shuffle and any random choice of ``make_items``.
    shuffle
        ``False``: blocks and items in order (validation, prediction).
    buffer_blocks
        Blocks held in memory at once.
    """

    def __init__(
        self,
        blocks: Sequence[Block],
        sizes: Sequence[int],
        make_items: Callable[[dict[str, np.ndarray], torch.Generator, int], tuple[Callable, int]],
        *,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        buffer_blocks: int = 2,
    ):
        if len(blocks) != len(sizes):
            raise ValueError(f"{len(blocks)} blocks but {len(sizes)} sizes.")
        if buffer_blocks < 1:
            raise ValueError(f"`buffer_blocks` must be ≥ 1, got {buffer_blocks}.")
        self.blocks, self.sizes, self.make_items = list(blocks), [int(s) for s in sizes], make_items
        self.batch_size, self.seed, self.shuffle, self.buffer_blocks = batch_size, seed, shuffle, buffer_blocks
        self.epoch = 0

    def n_batches(self) -> int:
        """Batches per epoch yielded to this process."""
        total = -(-sum(self.sizes) // self.batch_size)
        _, world = _rank_and_world()
        return total // world if world > 1 else total

    def __len__(self) -> int:
        return self.n_batches()

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        rank, world = _rank_and_world()
        epoch, self.epoch = self.epoch, self.epoch + 1
        generator = torch.Generator().manual_seed(int(np.random.SeedSequence((self.seed, epoch)).generate_state(1)[0]))
        n_blocks = len(self.blocks)
        order = torch.randperm(n_blocks, generator=generator).tolist() if self.shuffle else list(range(n_blocks))
        keep = self.n_batches() * world
        emitted, pending, n_pending = 0, [], 0  # pending: (pieces, which, rows) parts of the next batch
        for start in range(0, len(order), self.buffer_blocks):
            pieces = []
            for b in order[start : start + self.buffer_blocks]:
                take, n = self.make_items(self.blocks[b](), generator, epoch)
                pieces.append((take, n))
            # items of the buffer: (piece, row) in a random order
            which = torch.cat([torch.full((n,), i, dtype=torch.long) for i, (_, n) in enumerate(pieces)])
            rows = torch.cat([torch.arange(n) for _, n in pieces])
            if self.shuffle:
                perm = torch.randperm(len(rows), generator=generator)
                which, rows = which[perm], rows[perm]
            pos = 0
            while pos < len(rows):
                step = min(self.batch_size - n_pending, len(rows) - pos)
                pending.append((pieces, which[pos : pos + step], rows[pos : pos + step]))
                n_pending, pos = n_pending + step, pos + step
                if n_pending == self.batch_size:
                    if emitted < keep and emitted % world == rank:
                        yield self._collate(pending)
                    emitted, pending, n_pending = emitted + 1, [], 0
        if pending and emitted < keep and emitted % world == rank:
            yield self._collate(pending)

    @staticmethod
    def _collate(pending: list) -> dict[str, torch.Tensor]:
        parts: list[dict[str, torch.Tensor]] = []
        for pieces, which, rows in pending:
            for i in torch.unique(which).tolist():
                take, _ = pieces[i]
                parts.append(take(rows[which == i]))
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def spot_view_items(views_per_epoch: int | None) -> Callable:
    """``make_items`` of :class:`BlockStream` for HINGE's training items: one per (spot, view), as
    :class:`~hinge_sc.train.SpotViewDataset` (``views_per_epoch`` random views per spot, drawn from the stream's
    generator, or every view once)."""

    def make(block: dict[str, np.ndarray], generator: torch.Generator, epoch: int) -> tuple[Callable, int]:
        counts = torch.as_tensor(block[MODULE_KEYS.COUNTS], dtype=torch.float32)
        library = torch.as_tensor(block[MODULE_KEYS.LIBRARY], dtype=torch.float32)
        feats = torch.as_tensor(block.get("views", block[MODULE_KEYS.FEATURES]), dtype=torch.float32)
        n_spots = counts.shape[0]
        n_total = feats.shape[1] if feats.ndim == 3 else 1
        per_spot, random_views = views_per_spot(n_total, views_per_epoch)
        if random_views:
            view_of = torch.randint(n_total, (n_spots * per_spot,), generator=generator)
        else:
            view_of = torch.arange(n_spots * per_spot) % per_spot

        def take(items: torch.Tensor) -> dict[str, torch.Tensor]:
            spots = items // per_spot
            f = feats[spots, view_of[items]] if feats.ndim == 3 else feats[spots]
            return {MODULE_KEYS.COUNTS: counts[spots], MODULE_KEYS.LIBRARY: library[spots], MODULE_KEYS.FEATURES: f}

        return take, n_spots * per_spot

    return make


class StreamingDataModule(pl.LightningDataModule):
    """Whole sections held out for validation; the training sections streamed from disk (:class:`BlockStream`).

    The validation sections are loaded once and kept in memory (for early stopping and the calibrations); the
    training sections are read ``buffer_sections`` at a time each epoch. Same interface as
    :class:`~hinge_sc.train.HINGEDataModule` for the training plan.

    Parameters
    ----------
    sections
        Labels of the sections.
    loaders
        ``{section: block}``: loads the section's kept spots as ``counts (n, G)``, ``library (n,)``,
        ``features (n, D)``, optional ``views (n, V, D)`` and ``obs_names (n,)``.
    libraries
        ``{section: (n,)}`` library sizes of the kept spots (small; read once before training).
    validation_size
        Fraction of the sections held out (at least one, from two sections on); 0: none.
    batch_size, seed, views_per_epoch
        As for :class:`~hinge_sc.train.HINGEDataModule`.
    buffer_sections
        Training sections in memory at once.
    n_views
        Views per spot in the blocks (``views (n, V, D)``; 1: the identity features only).
    sources
        ``{section: file}``, recorded in :meth:`section_record`.
    """

    def __init__(
        self,
        sections: Sequence[str],
        loaders: dict[str, Block],
        libraries: dict[str, np.ndarray],
        *,
        validation_size: float = 0.1,
        batch_size: int = 32,
        seed: int = 0,
        views_per_epoch: int | None = None,
        buffer_sections: int = 2,
        n_views: int = 1,
        sources: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.section_labels = [str(s) for s in sections]
        self.loaders, self.libraries, self.sources = loaders, libraries, sources
        self.batch_size, self.seed = batch_size, seed
        self.views_per_epoch, self.buffer_sections = views_per_epoch, buffer_sections
        spot_sections = np.concatenate([np.full(len(libraries[s]), s, dtype=object) for s in self.section_labels])
        self.sections = spot_sections.astype(str)
        self.train_idx, self.val_idx, self.validation_sections = split_sections(spot_sections, validation_size, seed)
        self.training_sections = [s for s in self.section_labels if s not in set(self.validation_sections)]
        self.test_idx = np.array([], dtype=np.int64)
        self.n_train, self.n_val = len(self.train_idx), len(self.val_idx)
        self._validation: dict[str, Any] | None = None
        self.n_views = n_views

    def _stream(self, shuffle: bool, views_per_epoch: int | None, sections: list[str]) -> BlockStream:
        per_spot, _ = views_per_spot(self.n_views, views_per_epoch)
        return BlockStream(
            [self.loaders[s] for s in sections], [len(self.libraries[s]) * per_spot for s in sections],
            spot_view_items(views_per_epoch), batch_size=self.batch_size, seed=self.seed, shuffle=shuffle,
            buffer_blocks=self.buffer_sections,
        )  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        if not hasattr(self, "_train_stream"):
            self._train_stream = self._stream(True, self.views_per_epoch, self.training_sections)
        return DataLoader(self._train_stream, batch_size=None)

    def _validation_block(self) -> dict[str, Any]:
        if self._validation is None:
            blocks = [self.loaders[s]() for s in self.validation_sections]
            self._validation = {
                k: torch.as_tensor(np.concatenate([b[k] for b in blocks]), dtype=torch.float32)
                for k in (MODULE_KEYS.COUNTS, MODULE_KEYS.LIBRARY, MODULE_KEYS.FEATURES)
            }
            self._validation["spot_names"] = np.concatenate([np.asarray(b["obs_names"]).astype(str) for b in blocks])
        return self._validation

    def val_dataloader(self) -> DataLoader | list:
        if self.n_val == 0:
            return []
        val = self._validation_block()
        n = len(val[MODULE_KEYS.COUNTS])
        ds = SpotViewDataset(val[MODULE_KEYS.COUNTS], val[MODULE_KEYS.LIBRARY], val[MODULE_KEYS.FEATURES], np.arange(n))
        return DataLoader(ds, batch_size=self.batch_size, shuffle=False)

    # ------------------------------------------------------------------ what the training plan reads
    def training_library(self) -> torch.Tensor:
        """``(n_train,)`` library sizes of the training spots (section by section)."""
        return torch.as_tensor(np.concatenate([self.libraries[s] for s in self.training_sections]), dtype=torch.float32)

    def training_groups(self) -> np.ndarray:
        """``(n_train,)`` section of each training spot, in the order of :meth:`training_chunks`."""
        return np.concatenate([np.full(len(self.libraries[s]), s, dtype=object) for s in self.training_sections]).astype(str)

    def training_chunks(self) -> Iterator[dict[str, torch.Tensor]]:
        """The training sections one at a time (identity-view features, counts, library sizes)."""
        for s in self.training_sections:
            block = self.loaders[s]()
            yield {k: torch.as_tensor(block[k], dtype=torch.float32)
                   for k in (MODULE_KEYS.FEATURES, MODULE_KEYS.COUNTS, MODULE_KEYS.LIBRARY)}  # fmt: skip

    def validation_arrays(self) -> dict[str, Any]:
        """Features, counts, library sizes and names of the validation spots."""
        return dict(self._validation_block())

    def validation_groups(self) -> np.ndarray:
        """``(n_val,)`` section of each validation spot, in the order of :meth:`validation_arrays`."""
        return np.concatenate([np.full(len(self.libraries[s]), s, dtype=object)
                               for s in self.validation_sections] or [np.array([], dtype=object)]).astype(str)  # fmt: skip

    def section_record(self) -> list[dict]:
        """Per-section provenance: ``section``, ``n_spots``, ``role`` and ``source`` (the file it was read from)."""
        return section_record(self.sections, self.train_idx, self.val_idx, self.sources)
