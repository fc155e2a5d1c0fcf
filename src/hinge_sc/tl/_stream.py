"""Generation of whole slides into a zarr store: written block by block, resumable after an interruption."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from hinge_sc._files import check_replaceable, mark_output, remove_output
from hinge_sc.model import Prediction
from hinge_sc.model._inference import batch_bounds, iter_batches, resolve_batch_size

if TYPE_CHECKING:
    from anndata import AnnData

    from hinge_sc.model import HINGE

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


def generate_to_store(
    model: HINGE,
    adata: AnnData,
    store: str | Path,
    *,
    features_key: str | None = None,
    n_samples: int = 8,
    n_steps: int | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    precision: Literal["32", "bf16"] = "32",
    reveal: Literal["mean", "sample"] | None = None,
    clip: bool = True,
    mean_estimate: Literal["expected", "samples"] = "expected",
    save_samples: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    show_progress_bar: bool = True,
) -> Prediction:
    """Generate block by block into a zarr store, then return the prediction read back from it.

    The store holds ``mean`` and ``std`` (``(n_spots, G)``, float32), ``samples`` (``(n_spots, S, G)``) with
    ``save_samples``, ``done`` (one flag per block of about 256 spots) and, in its attributes, the settings of the run
    (seed, samples, steps, panel, spots, model fingerprint). At most one block of samples is in memory.

    Parameters
    ----------
    store
        Path of the zarr store (a folder).
    resume
        Continue an interrupted run in ``store``: blocks already written are kept and the rest generated with the
        store's seed. The settings must match the stored ones. Each spot's values depend only on ``(seed, obs
        name)``, so a resumed run gives the values of an uninterrupted one.
    overwrite
        Replace an existing store (when not resuming). Only a store written by this function is replaced or resumed:
        a folder of other files, or another program's zarr store, is refused and left as it is.
    model, adata, features_key, n_samples, n_steps, batch_size, seed, precision, reveal
        See :func:`hinge_sc.tl.generate`.
    clip, mean_estimate, save_samples
        See :func:`hinge_sc.tl.generate`.
    show_progress_bar
        Progress bar over the spots (those of a resumed run's stored blocks count as done).

    Raises
    ------
    FileExistsError
        ``store`` exists and neither ``resume`` nor ``overwrite`` is set, or it is not a store hinge_sc wrote.
    ValueError
        ``resume`` with settings, spots or a model that differ from the store's.
    """
    import zarr

    path = Path(store)
    exists = path.exists() or path.is_symlink()
    if exists and not resume and not overwrite:
        raise FileExistsError(
            f"`store` {str(path)!r} already exists. Pass `resume=True` to continue the run stored there, or "
            "`overwrite=True` to replace it."
        )
    if exists:  # only a store this function wrote is resumed or replaced: never a folder of the user's files
        check_replaceable(path, argument="store", kinds=(STORE_KIND,), allowed=STORE_ENTRIES)
    stored = None
    if exists and resume:
        stored = dict(zarr.open_group(str(path), mode="r").attrs.get(ATTRS_KEY, {}))
        if not stored:
            raise ValueError(f"`store` {str(path)!r} holds no hinge_sc generation run to resume.")
        group = zarr.open_group(str(path), mode="a")
        if seed is None:
            seed = stored["seed"]
    adata, feats, seeds, seed = model._generation_inputs(adata, features_key, n_samples, precision, seed)
    batch_size = resolve_batch_size(batch_size, n_samples, model.device)
    n, n_genes = adata.n_obs, len(model.panel_genes_)
    block = batch_size * -(-BLOCK_SPOTS // batch_size)
    settings = {
        "seed": int(seed), "n_samples": int(n_samples), "n_steps": model.module.sampling_steps(n_steps), "precision": precision,
        "reveal": model.module.resolve_reveal(reveal), "genes": list(model.panel_genes_), "n_spots": int(n),
        "obs_names_sha256": _obs_digest(adata.obs_names), "features_sha256": _array_digest(feats), "block": int(block), "save_samples": bool(save_samples),
        "model": _fingerprint(model), "clip": bool(clip), "mean_estimate": mean_estimate,
    }  # fmt: skip
    if stored is not None:
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
        _create(group, "mean", (n, n_genes), (block, n_genes), "float32")
        _create(group, "std", (n, n_genes), (block, n_genes), "float32")
        if save_samples:
            _create(group, "samples", (n, n_samples, n_genes), (block, n_samples, n_genes), "float32")
        _create(group, "done", (max(-(-n // block), 1),), (max(-(-n // block), 1),), "bool")
        group.attrs[ATTRS_KEY] = settings
    done = np.asarray(group["done"][:], dtype=bool)
    blocks = batch_bounds(n, block)
    todo = [i for i in range(len(blocks)) if not done[i]]
    if len(todo) < len(blocks):
        logger.info("Resuming: %d of %d blocks are in the store", len(blocks) - len(todo), len(blocks))
    batches = [(a + s, a + t) for i in todo for a, b in [blocks[i]] for s, t in batch_bounds(b - a, batch_size)]
    kwargs = {"n_samples": n_samples, "n_steps": n_steps, "precision": precision, "reveal": reveal,
              "mean_estimate": mean_estimate, "clip": clip}  # fmt: skip
    buffer: list[np.ndarray] = []
    points: list[np.ndarray] = []
    for _, stop, out, point in iter_batches(
        model.module, feats, seeds, batches, show_progress_bar=show_progress_bar, n_total=n, **kwargs
    ):
        buffer.append(out)
        points.append(point)
        i = (stop - 1) // block
        a, b = blocks[i]
        if stop == b:  # block complete: write it, then mark it done
            samples, point = np.concatenate(buffer), np.concatenate(points)
            buffer, points = [], []
            group["mean"][a:b] = point
            group["std"][a:b] = samples.std(axis=1)
            if save_samples:
                group["samples"][a:b] = samples
            done[i] = True
            group["done"][:] = done
    index, columns = pd.Index(adata.obs_names), pd.Index(model.panel_genes_)
    return Prediction(
        mean=pd.DataFrame(np.asarray(group["mean"][:]), index=index, columns=columns),
        std=pd.DataFrame(np.asarray(group["std"][:]), index=index, columns=columns),
        samples=np.asarray(group["samples"][:]) if save_samples else None,
        seed=int(seed),
    )
