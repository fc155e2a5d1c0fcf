"""Train/validation split that keeps all augmented views of a spot on one side (docs/method.md §2, §6)."""

from __future__ import annotations

import logging

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from hinge_sc._constants import MODULE_KEYS

logger = logging.getLogger(__name__)


def split_spots(n: int, validation_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random train/validation split of ``n`` spots (all views of a spot stay on one side).

    ``round(validation_size · n)`` spots are held out, at least one when ``validation_size > 0`` and ``n > 1``.

    Returns
    -------
    Sorted train and validation indices.
    """
    if not 0 <= validation_size < 1:
        raise ValueError(f"`validation_size` must be in [0, 1), got {validation_size}.")
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(validation_size * n))
    if validation_size > 0 and n_val == 0 and n > 1:
        n_val = 1
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def split_sections(groups: np.ndarray, validation_size: float, seed: int) -> tuple[np.ndarray, np.ndarray, list]:
    """Hold out whole sections: ``max(1, round(validation_size · n_sections))`` of them, drawn with ``seed``.

    No training spot shares a section with a validation spot, so what is fitted on the validation spots (early
    stopping, the best epoch, the variance scale) reflects a new section.

    Parameters
    ----------
    groups
        ``(n_spots,)`` section label of each spot.
    validation_size
        Fraction of the sections held out (0: none).
    seed
        Seed of the draw.

    Returns
    -------
    Sorted train and validation spot indices, and the held-out section labels.
    """
    if not 0 <= validation_size < 1:
        raise ValueError(f"`validation_size` must be in [0, 1), got {validation_size}.")
    groups = np.asarray(groups)
    sections = list(dict.fromkeys(groups.tolist()))
    if validation_size == 0 or len(sections) < 2:
        return np.arange(len(groups)), np.array([], dtype=np.int64), []
    n_val = min(max(1, int(round(validation_size * len(sections)))), len(sections) - 1)
    order = np.random.default_rng(seed).permutation(len(sections))
    held_out = [sections[i] for i in sorted(order[:n_val])]
    is_val = np.isin(groups, held_out)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val), held_out


def section_record(sections: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray, sources: dict | None = None) -> list[dict]:
    """One row per section: its label, spots used, ``role`` (``"training"``/``"validation"``) and ``source`` file."""
    rows = []
    for role, idx in (("training", train_idx), ("validation", val_idx)):
        labels, counts = np.unique(np.asarray(sections)[idx], return_counts=True)
        for label, n in zip(labels.tolist(), counts.tolist(), strict=True):
            row = {"section": str(label), "n_spots": int(n), "role": role}
            if sources is not None:
                row["source"] = str(sources[label])
            rows.append(row)
    return rows


def views_per_spot(n_views: int, views_per_epoch: int | None) -> tuple[int, bool]:
    """Views of each spot per epoch and whether they are drawn at random (``views_per_epoch < n_views``)."""
    random_views = views_per_epoch is not None and views_per_epoch < n_views
    return (views_per_epoch if random_views else n_views), random_views


class SpotViewDataset(Dataset):
    """One item per (spot, view): the spot's panel counts and library size with one view's features.

    Parameters
    ----------
    counts
        ``(n_spots, G)`` raw panel counts.
    library
        ``(n_spots,)`` total counts over all genes.
    features
        ``(n_spots, D)`` or ``(n_spots, V, D)``.
    spots
        Indices of the spots in this dataset.
    views_per_epoch
        Views of each spot per pass over the dataset: ``None`` (or ≥ V) — every view once, in order; ``k < V`` —
        ``k`` views drawn at random (torch's global RNG, seeded by the training run) each time an item is read, so an
        epoch costs ``k / V`` of a full pass and all views are still seen over the epochs.
    """

    def __init__(
        self,
        counts: torch.Tensor,
        library: torch.Tensor,
        features: torch.Tensor,
        spots: np.ndarray,
        views_per_epoch: int | None = None,
    ):
        self.counts, self.library, self.features = counts, library, features
        self.spots = torch.as_tensor(spots, dtype=torch.long)
        n_views = features.shape[1] if features.ndim == 3 else 1
        self.n_views, self.random_views = views_per_spot(n_views, views_per_epoch)
        self.n_total_views = n_views

    def __len__(self) -> int:
        return len(self.spots) * self.n_views

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        spot = self.spots[i // self.n_views]
        view = int(torch.randint(self.n_total_views, ())) if self.random_views else i % self.n_views
        feats = self.features[spot, view] if self.features.ndim == 3 else self.features[spot]
        return {
            MODULE_KEYS.COUNTS: self.counts[spot],
            MODULE_KEYS.LIBRARY: self.library[spot],
            MODULE_KEYS.FEATURES: feats,
        }


class HINGEDataModule(pl.LightningDataModule):
    """Split spots into training and validation; every view of a training spot is a training sample.

    Validation uses the identity view of the validation spots (the un-augmented patches).

    Parameters
    ----------
    counts
        ``(n_spots, G)`` raw panel counts.
    library
        ``(n_spots,)`` total counts.
    features
        ``(n_spots, D)`` identity-view features.
    views
        Optional ``(n_spots, V, D)`` augmented views used for training.
    validation_size
        Fraction of spots (or, with ``groups``, of sections) held out for validation (0 disables validation).
    batch_size
        Minibatch size.
    seed
        Seed of the split.
    groups
        ``(n_spots,)`` section labels: hold out whole sections (:func:`split_sections`) instead of random spots.
    views_per_epoch
        Views of each training spot per epoch (see :class:`SpotViewDataset`); ``None``: all of them.
    sections
        ``(n_spots,)`` section labels, used as the cross-validation groups of the linear skip's ridge fit (also
        when validation holds out random spots); ``None``: spots.
    spot_names
        ``(n_spots,)`` names of the spots (``obs_names``): the seeds of their generation streams when the spread is
        calibrated on the validation spots.
    """

    def __init__(
        self,
        counts: np.ndarray,
        library: np.ndarray,
        features: np.ndarray,
        views: np.ndarray | None = None,
        *,
        validation_size: float = 0.1,
        batch_size: int = 32,
        seed: int = 0,
        groups: np.ndarray | None = None,
        views_per_epoch: int | None = None,
        sections: np.ndarray | None = None,
        spot_names: np.ndarray | None = None,
    ):
        super().__init__()
        self.views_per_epoch = views_per_epoch
        self.sections, self.spot_names = sections, spot_names
        n = counts.shape[0]
        self.counts = torch.as_tensor(counts, dtype=torch.float32)
        self.library = torch.as_tensor(library, dtype=torch.float32)
        self.features = torch.as_tensor(features, dtype=torch.float32)
        self.views = None if views is None else torch.as_tensor(views, dtype=torch.float32)
        self.n_views = 1 if views is None else int(views.shape[1])
        self.batch_size = batch_size
        if groups is None:
            self.train_idx, self.val_idx = split_spots(n, validation_size, seed)
            self.validation_sections: list = []
        else:
            self.train_idx, self.val_idx, self.validation_sections = split_sections(groups, validation_size, seed)
        self.test_idx = np.array([], dtype=np.int64)
        self.n_train, self.n_val = len(self.train_idx), len(self.val_idx)

    # ------------------------------------------------------------------ what the training plan reads
    def training_library(self) -> torch.Tensor:
        """``(n_train,)`` library sizes of the training spots."""
        return self.library[self.train_idx]

    def training_groups(self) -> np.ndarray | None:
        """``(n_train,)`` section labels of the training spots, in the order of :meth:`training_chunks`."""
        return None if self.sections is None else np.asarray(self.sections)[self.train_idx]

    def validation_groups(self) -> np.ndarray | None:
        """``(n_val,)`` section labels of the validation spots, in the order of :meth:`validation_arrays`."""
        return None if self.sections is None else np.asarray(self.sections)[self.val_idx]

    def training_chunks(self):
        """The training spots' identity-view features, counts and library sizes (here: one chunk)."""
        idx = self.train_idx
        yield {MODULE_KEYS.FEATURES: self.features[idx], MODULE_KEYS.COUNTS: self.counts[idx],
               MODULE_KEYS.LIBRARY: self.library[idx]}  # fmt: skip

    def validation_arrays(self) -> dict[str, torch.Tensor | np.ndarray]:
        """Features, counts, library sizes and names of the validation spots (the spread's calibration)."""
        idx = self.val_idx
        names = np.arange(len(self.counts)).astype(str) if self.spot_names is None else np.asarray(self.spot_names)
        return {MODULE_KEYS.FEATURES: self.features[idx], MODULE_KEYS.COUNTS: self.counts[idx],
                MODULE_KEYS.LIBRARY: self.library[idx], "spot_names": names[idx]}  # fmt: skip

    def section_record(self) -> list[dict]:
        """Per-section provenance of the split: ``section``, ``n_spots`` and ``role`` (training/validation)."""
        if self.sections is None:
            return []
        return section_record(np.asarray(self.sections), self.train_idx, self.val_idx)

    def train_dataloader(self) -> DataLoader:
        feats = self.views if self.views is not None else self.features
        ds = SpotViewDataset(self.counts, self.library, feats, self.train_idx, self.views_per_epoch)
        return DataLoader(ds, batch_size=self.batch_size, shuffle=True, drop_last=False)

    def val_dataloader(self) -> DataLoader | list:
        if self.n_val == 0:
            return []
        ds = SpotViewDataset(self.counts, self.library, self.features, self.val_idx)
        return DataLoader(ds, batch_size=self.batch_size, shuffle=False)
