"""Generation of whole slides into a zarr store: written block by block, resumable after an interruption.

The store holds ``mean`` and ``std`` (``(n_spots, G)``, float32), ``samples`` (``(n_spots, S, G)``) when asked for,
``done`` (one flag per block of about 256 spots) and, in its attributes, the settings of the run (seed, samples,
steps, panel, spots, features, model fingerprint). At most one block of samples is in memory. Only a store this code
wrote is resumed or replaced: a folder of other files, or another program's zarr store, is refused and left as it is.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hinge_sc._files import check_replaceable, mark_output, remove_output
from hinge_sc.module import batch_bounds

if TYPE_CHECKING:
    from hinge_sc.module import GenerationConfig

    from ._generation import GenerationInputs
    from ._hinge import HINGE

logger = logging.getLogger(__name__)

#: Spots per block of the store (rounded up to whole batches): the unit of writing and of resuming.
BLOCK_SPOTS = 256
ATTRS_KEY = "hinge_sc_generate"
#: The output mark of a generation store (see :func:`hinge_sc._files.mark_output`) and the entries it may hold.
STORE_KIND = "generation_store"
STORE_ENTRIES = ("mean", "std", "samples", "done")


def _fingerprint(model: HINGE) -> str:
    """SHA-256 (16 hex digits) of the trainable weights and the backbone's checksum: a store belongs to one model."""
    h = hashlib.sha256(str(model.backbone_info_.get("checksum")).encode())
    for name, p in model.module.named_parameters():
        if p.requires_grad:
            h.update(name.encode())
            h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _obs_digest(obs_names) -> str:
    return hashlib.sha256("\n".join(map(str, obs_names)).encode()).hexdigest()[:16]


def _array_digest(values: np.ndarray) -> str:
    """SHA-256 (16 hex digits) of an array's shape, dtype and bytes: a store belongs to one set of features."""
    values = np.ascontiguousarray(values)
    h = hashlib.sha256(f"{values.shape}{values.dtype.str}".encode())
    h.update(values.tobytes())
    return h.hexdigest()[:16]


def _create(group, name: str, shape: tuple[int, ...], chunks: tuple[int, ...], dtype) -> Any:
    if hasattr(group, "create_array"):  # zarr 3
        return group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=0)
    return group.create_dataset(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=0)  # zarr 2


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def stored_seed(store: str | Path | None, resume: bool) -> int | None:
    """The seed of the run stored in ``store`` when resuming (``None`` otherwise, or when nothing is stored)."""
    if store is None or not resume or not _exists(Path(store)):
        return None
    import zarr

    path = Path(store)
    check_replaceable(path, argument="store", kinds=(STORE_KIND,), allowed=STORE_ENTRIES)
    stored = dict(zarr.open_group(str(path), mode="r").attrs.get(ATTRS_KEY, {}))
    return stored.get("seed")


class StoreSink:
    """Blocks of generated spots written into a zarr store (created, or opened to resume).

    Parameters
    ----------
    model, inputs, config
        The generation (see :func:`hinge_sc.model._generation.run_generation`).
    store
        Path of the zarr store (a folder).
    batch_size
        Spots per batch; a block is a whole number of batches.
    save_samples
        Also write the samples.
    resume
        Continue an interrupted run: blocks already written are kept; the settings must match the stored ones.
    overwrite
        Replace an existing store (when not resuming); only a store written by hinge_sc is replaced.

    Raises
    ------
    FileExistsError
        ``store`` exists and neither ``resume`` nor ``overwrite`` is set, or it is not a store hinge_sc wrote.
    ValueError
        ``resume`` with settings, spots or a model that differ from the store's.
    """

    def __init__(
        self, model: HINGE, inputs: GenerationInputs, config: GenerationConfig, store: str | Path, *,
        batch_size: int, save_samples: bool, resume: bool, overwrite: bool,
    ):  # fmt: skip
        import zarr

        path = Path(store)
        exists = _exists(path)
        if exists and not resume and not overwrite:
            raise FileExistsError(
                f"`store` {str(path)!r} already exists. Pass `resume=True` to continue the run stored there, or "
                "`overwrite=True` to replace it."
            )
        if exists:  # only a store this code wrote is resumed or replaced: never a folder of the user's files
            check_replaceable(path, argument="store", kinds=(STORE_KIND,), allowed=STORE_ENTRIES)
        n, n_genes, module = inputs.n_spots, len(model.panel_genes_), model.module
        block = batch_size * -(-BLOCK_SPOTS // batch_size)
        settings = {
            "seed": inputs.seed, "n_samples": config.n_samples, "n_steps": module.sampling_steps(config.n_steps),
            "precision": config.precision, "reveal": module.resolve_reveal(config.reveal),
            "genes": list(model.panel_genes_), "n_spots": int(n), "obs_names_sha256": _obs_digest(inputs.adata.obs_names),
            "features_sha256": _array_digest(inputs.features), "block": int(block), "save_samples": bool(save_samples),
            "model": _fingerprint(model), "clip": bool(config.clip), "mean_estimate": config.mean_estimate,
        }  # fmt: skip
        if exists and resume:
            group = zarr.open_group(str(path), mode="a")
            stored = dict(group.attrs.get(ATTRS_KEY, {}))
            if not stored:
                raise ValueError(f"`store` {str(path)!r} holds no hinge_sc generation run to resume.")
            differ = sorted(k for k in settings if stored.get(k) != settings[k] and k != "block")
            if differ:
                raise ValueError(
                    f"Cannot resume the run in `store` {str(path)!r}: {', '.join(differ)} differ from the stored run "
                    f"(stored {[stored.get(k) for k in differ]!r}, given {[settings[k] for k in differ]!r}). Pass the "
                    "stored settings, or `overwrite=True` without `resume` to start again."
                )
            block = int(stored["block"])
        else:
            remove_output(path, argument="store", kinds=(STORE_KIND,), allowed=STORE_ENTRIES)
            group = zarr.open_group(str(path), mode="w")
            mark_output(path, kind=STORE_KIND)
            n_blocks = max(-(-n // block), 1)
            _create(group, "mean", (n, n_genes), (block, n_genes), "float32")
            _create(group, "std", (n, n_genes), (block, n_genes), "float32")
            if save_samples:
                _create(group, "samples", (n, config.n_samples, n_genes), (block, config.n_samples, n_genes), "float32")
            _create(group, "done", (n_blocks,), (n_blocks,), "bool")
            group.attrs[ATTRS_KEY] = settings
        self.group, self.save_samples = group, save_samples
        self.done = np.asarray(group["done"][:], dtype=bool)
        self.blocks = batch_bounds(n, block)
        self.block = block
        self._samples: list[np.ndarray] = []
        self._points: list[np.ndarray] = []

    def batches(self, batch_size: int) -> list[tuple[int, int]]:
        """The batches of the blocks not yet in the store."""
        todo = [i for i in range(len(self.blocks)) if not self.done[i]]
        if len(todo) < len(self.blocks):
            logger.info("Resuming: %d of %d blocks are in the store", len(self.blocks) - len(todo), len(self.blocks))
        return [(a + s, a + t) for i in todo for a, b in [self.blocks[i]] for s, t in batch_bounds(b - a, batch_size)]

    def write(self, start: int, stop: int, samples: np.ndarray, point: np.ndarray) -> None:
        """Buffer a batch; a complete block is written, then marked done."""
        self._samples.append(samples)
        self._points.append(point)
        i = (stop - 1) // self.block
        a, b = self.blocks[i]
        if stop != b:
            return
        samples, point = np.concatenate(self._samples), np.concatenate(self._points)
        self._samples, self._points = [], []
        self.group["mean"][a:b] = point
        self.group["std"][a:b] = samples.std(axis=1)
        if self.save_samples:
            self.group["samples"][a:b] = samples
        self.done[i] = True
        self.group["done"][:] = self.done

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(mean, std, samples)`` read back from the store."""
        group = self.group
        samples = np.asarray(group["samples"][:]) if self.save_samples else None
        return np.asarray(group["mean"][:]), np.asarray(group["std"][:]), samples
