"""The one generation driver of :class:`~hinge_sc.HINGE`: checked inputs, then batches into a sink.

Every way of generating — in memory, into a resumable zarr store (:mod:`hinge_sc.model._store`), across processes
with Lightning (:mod:`hinge_sc.model._distributed`) — runs :func:`run_generation` over one validated
:class:`GenerationInputs`: the spots' features and per-spot seeds (each spot draws from the stream of ``(seed, obs
name)``, so its values do not depend on batches, shards or resumption), and writes what the batches give into a sink.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hinge_sc._files import writing_to
from hinge_sc._random import spot_seeds
from hinge_sc._validators import check_allocation, check_obsm, check_seed
from hinge_sc.module import batch_bounds, iter_batches, resolve_batch_size
from hinge_sc.pp._spatialdata import resolve_table

from ._distributed import generate_distributed
from ._feature_provenance import check_generate_inputs
from ._prediction import Prediction
from ._store import StoreSink, stored_seed

if TYPE_CHECKING:
    from pathlib import Path

    from anndata import AnnData

    from hinge_sc.module import GenerationConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationInputs:
    """The checked inputs of one generation.

    Attributes
    ----------
    adata
        The spots (an AnnData; a SpatialData object's table is resolved before).
    features
        ``(n_spots, D)`` raw image features.
    seeds
        ``(n_spots,)`` per-spot seeds, from ``(seed, obs name)``.
    seed
        The generation's seed (drawn when none was given).
    """

    adata: AnnData
    features: np.ndarray
    seeds: np.ndarray
    seed: int

    @property
    def n_spots(self) -> int:
        """Number of spots."""
        return len(self.seeds)


def generation_inputs(
    model: Any, adata: Any, config: GenerationConfig, *, features_key: str | None, seed: int | None,
    table_key: str | None = None,
) -> GenerationInputs:  # fmt: skip
    """Resolve the spots (``adata``, a SpatialData table, or the registered data) once and check them for ``model``.

    Raises
    ------
    ValueError
        No data (a model loaded without data and no ``adata``), features of the wrong width, or a seed that is not
        an integer.
    """
    adata = resolve_table(type(model), model.adata if adata is None else adata, table_key)
    if adata is None:
        raise ValueError("Pass `adata`: this model was loaded without data.")
    check_generate_inputs(model, adata, features_key=features_key, batch_size=config.batch_size or 1)
    check_seed(seed)
    if not model.is_trained_:
        warnings.warn(
            "This model has not been trained: its output is the untrained network's. Call `model.train()` first.",
            UserWarning,
            stacklevel=4,
        )
    features_key = features_key or model.setup_args["features_key"]
    feats = check_obsm(adata, features_key, argument="features_key", ndim=2)
    n_features = model.module.n_features
    if feats.shape[1] != n_features:
        raise ValueError(
            f"`adata.obsm[{features_key!r}]` has {feats.shape[1]} features, the model was trained on {n_features}. "
            "Compute the features with the same encoder and settings as for training."
        )
    if seed is None:
        seed = int(np.random.default_rng().integers(2**31 - 1))
    n_genes = model.module.n_genes
    check_allocation(
        4 * 3 * config.n_samples * n_genes * model.module.backbone.config.d_model,  # one spot's activations, at least
        what=f"Generating {config.n_samples:,} samples × {n_genes:,} genes of one spot",
        fix="Pass a smaller `n_samples` (8–32 give the mean and intervals) or `batch_size`.",
    )
    model.module.eval()
    return GenerationInputs(adata, feats, spot_seeds(seed, adata.obs_names), int(seed))


class MemorySink:
    """Mean and s.d. of every spot (and the samples, if asked for) in memory.

    Parameters
    ----------
    n_spots, n_samples, n_genes
        Sizes of the result.
    keep_samples
        Also keep the ``(n_spots, n_samples, n_genes)`` samples (the allocation is checked first).
    """

    def __init__(self, n_spots: int, n_samples: int, n_genes: int, keep_samples: bool):
        self.mean = np.zeros((n_spots, n_genes), np.float32)
        self.std = np.zeros((n_spots, n_genes), np.float32)
        self.samples = None
        if keep_samples:
            check_allocation(
                4 * n_spots * n_samples * n_genes,
                what=f"Keeping {n_spots:,} spots × {n_samples:,} samples × {n_genes:,} genes",
                fix="Pass a smaller `n_samples`, `save_samples=False`, or `store=` to write them block by block.",
            )  # fmt: skip
            self.samples = np.zeros((n_spots, n_samples, n_genes), np.float32)

    def batches(self, batch_size: int) -> list[tuple[int, int]]:
        """Every batch of spots."""
        return batch_bounds(len(self.mean), batch_size)

    def write(self, start: int, stop: int, samples: np.ndarray, point: np.ndarray) -> None:
        """Keep a batch's point prediction and s.d. (and samples)."""
        self.mean[start:stop], self.std[start:stop] = point, samples.std(axis=1)
        if self.samples is not None:
            self.samples[start:stop] = samples

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(mean, std, samples)``."""
        return self.mean, self.std, self.samples


def run_generation(
    model: Any,
    inputs: GenerationInputs,
    config: GenerationConfig,
    *,
    return_samples: bool = False,
    store: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    distributed: dict[str, Any] | None = None,
    show_progress_bar: bool = True,
) -> Prediction:
    """Generate ``inputs`` with ``model`` and ``config`` into memory or a store, in this process or in shards.

    Parameters
    ----------
    return_samples
        Keep the samples (in memory, or written to the store).
    store, resume, overwrite
        A zarr store written block by block (see :meth:`hinge_sc.HINGE.generate`).
    distributed
        ``{"accelerator", "devices", "strategy"}`` to generate in shards with Lightning's ``Trainer.predict``;
        ``None``: batch by batch in this process.
    show_progress_bar
        Progress bar over the spots.
    """
    module = model.module
    batch_size = resolve_batch_size(config.batch_size, config.n_samples, model.device)
    n, n_genes = inputs.n_spots, module.n_genes
    if store is not None:
        if distributed is not None:
            raise ValueError("`store` writes from one process: pass `store` or `devices`/`strategy`, not both.")
        with writing_to(store, argument="store"):
            sink = StoreSink(model, inputs, config, store, batch_size=batch_size, save_samples=return_samples,
                             resume=resume, overwrite=overwrite)  # fmt: skip
    else:
        sink = MemorySink(n, config.n_samples, n_genes, return_samples or distributed is not None)
    if distributed is not None:
        samples, point = generate_distributed(module, inputs.features, inputs.seeds, config, batch_size=batch_size,
                                              show_progress_bar=show_progress_bar, **distributed)  # fmt: skip
        sink.write(0, n, samples, point)
    else:
        for start, stop, out, point in iter_batches(
            module, inputs.features, inputs.seeds, sink.batches(batch_size), config,
            show_progress_bar=show_progress_bar, n_total=n,
        ):  # fmt: skip
            sink.write(start, stop, out, point)
    mean, std, samples = sink.result()
    index, columns = pd.Index(inputs.adata.obs_names), pd.Index(model.panel_genes_)
    return Prediction(
        mean=pd.DataFrame(mean, index=index, columns=columns),
        std=pd.DataFrame(std, index=index, columns=columns),
        samples=samples if return_samples else None,
        seed=inputs.seed,
    )


__all__ = ["GenerationInputs", "MemorySink", "generation_inputs", "run_generation", "stored_seed"]
