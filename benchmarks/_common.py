"""What the benchmark scripts share, on top of the package's public API (one copy of each piece).

- :data:`DATA`, :func:`cellfm_vocabulary`: the shared data folder and the CellFM gene vocabulary in it;
- :func:`add_model_args`: the backbone-shape options of the scripts;
- :func:`train_hinge`: a HINGE (or :class:`hinge_sc.benchmark.HINGEGaussian`) model set up on a copy of the training
  spots and trained with the package's recipe (``model.train(recipe=...)``);
- :func:`evaluate`, :func:`scores`: :func:`hinge_sc.tl.evaluate` on both evaluation scales, and chosen columns of it;
- :func:`write_prediction`: a prediction made outside :func:`hinge_sc.tl.generate` and the baselines (converted,
  sub-sampled, read from a cache) written by the package's writer;
- :func:`synthetic_batch`: a batch of :class:`hinge_sc.module.HINGEModule`'s inputs for timing;
- :func:`markdown`, :func:`quiet`: markdown tables and a process without library chatter.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator, Mapping, Sequence

    from anndata import AnnData

#: Shared data folder (``her2st/``, ``vocab/``): ``$HINGE_SC_DATA_DIR``, else ``<repo>/../shared/data``.
DATA = Path(os.environ.get("HINGE_SC_DATA_DIR") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
#: The two evaluation scales of every table: ``log2(count + 1)`` and the panel-normalised log1p CP10k.
SCALES = ("log2p1", "log1p_cp10k")


def cellfm_vocabulary(data: str | Path = DATA) -> list[str]:
    """CellFM's gene symbols (first column of ``<data>/vocab/cellfm/gene_info.csv``)."""
    return pd.read_csv(Path(data) / "vocab" / "cellfm" / "gene_info.csv", usecols=[0]).iloc[:, 0].tolist()


def add_model_args(parser: argparse.ArgumentParser, *, d_model: int = 64, n_layers: int = 4, n_heads: int | None = 4):
    """``--d-model``, ``--n-layers`` and (unless ``n_heads=None``) ``--n-heads``: the shape of a random backbone."""
    parser.add_argument("--d-model", type=int, default=d_model)
    parser.add_argument("--n-layers", type=int, default=n_layers)
    if n_heads is not None:
        parser.add_argument("--n-heads", type=int, default=n_heads)


def train_hinge(
    train: AnnData,
    *,
    genes: Sequence[str],
    recipe=None,
    seed: int = 0,
    features_key: str = "X_histology",
    views_key: str | None = None,
    section_key: str | None = None,
    model_cls: type | None = None,
    accelerator: str = "cpu",
    **model_kwargs: Any,
):
    """A HINGE model on a copy of ``train``, trained with the package's recipe; returns ``(model, seconds)``.

    Parameters
    ----------
    train
        Training spots with raw counts and ``obsm[features_key]`` (not changed: a copy is set up).
    genes
        The panel.
    recipe
        A :class:`hinge_sc.TrainingRecipe` (default :data:`hinge_sc.DEFAULT_RECIPE`, as ``HINGE.train()``).
    seed
        Seed of the model's initialisation and of its training.
    features_key, views_key, section_key
        Arguments of ``setup_anndata`` (``section_key``: validation on whole sections).
    model_cls
        :class:`hinge_sc.HINGE` (default) or :class:`hinge_sc.benchmark.HINGEGaussian`.
    accelerator
        Lightning accelerator.
    **model_kwargs
        Arguments of the model (``backbone``, ``n_steps``, ``likelihood``, …).
    """
    import hinge_sc as hs

    cls = model_cls or hs.HINGE
    adata = train.copy()
    cls.setup_anndata(adata, features_key=features_key, views_key=views_key, section_key=section_key)
    model = cls(adata, genes=genes, seed=seed, **model_kwargs)
    t0 = time.perf_counter()
    model.train(recipe=recipe, accelerator=accelerator, seed=seed, show_progress_bar=False)
    return model, time.perf_counter() - t0


def evaluate(adata: AnnData, key: str, *, scales: Sequence[str] = SCALES, **kwargs: Any) -> dict[str, tuple]:
    """:func:`hinge_sc.tl.evaluate` of ``obsm[key]`` on each scale: scale → ``(per_gene, per_section)``.

    The results are also kept in ``uns[f"{key}@{scale}"]`` (replaced); ``kwargs`` go to ``hs.tl.evaluate``.
    """
    import hinge_sc as hs

    return {
        scale: hs.tl.evaluate(adata, key=key, scale=scale, key_added=f"{key}@{scale}", overwrite=True, **kwargs)
        for scale in scales
    }


def scores(adata: AnnData, key: str, columns: Mapping[str, Mapping[str, str]], *, row: str = "mean", **kwargs):
    """Chosen metrics of :func:`evaluate`: ``columns`` maps a scale to ``{metric: name}``; one row of the per-section
    table (``"mean"``: the mean over sections). Returns ``{name: value}`` in the order of ``columns``."""
    results = evaluate(adata, key, scales=list(columns), **kwargs)
    return {name: results[scale][1].loc[row, m] for scale, cols in columns.items() for m, name in cols.items()}


def write_prediction(adata: AnnData, key: str, mean, std=None, samples=None, *, params: Mapping[str, Any], seed=None):
    """Write a prediction made here (spots × genes ``mean`` DataFrame, ``std`` like it or ``None``, ``(n, S, G)``
    ``samples`` or ``None``) into ``obsm[key]`` … and ``uns[key]["params"]`` with the package's writer, as
    :func:`hinge_sc.tl.generate` and the baselines do, so that :func:`hinge_sc.tl.evaluate` scores it the same way.
    """
    import hinge_sc as hs

    prediction = hs.model.Prediction(mean=mean, std=std, samples=samples, seed=seed)
    hs.tl.add_prediction(adata, prediction, key_added=key, params=params, overwrite=True)


def synthetic_batch(n_spots: int, n_genes: int, n_features: int, device: Any = "cpu") -> dict:
    """Inputs of :class:`hinge_sc.module.HINGEModule` (its ``inference`` arguments): Poisson(2) counts, a library size
    of 10,000 and standard-normal features."""
    import torch

    return {
        "counts": torch.poisson(torch.full((n_spots, n_genes), 2.0)).to(device),
        "library": torch.full((n_spots,), 1e4, device=device),
        "features": torch.randn(n_spots, n_features, device=device),
    }


def markdown(table: pd.DataFrame, floatfmt: str = ".1f", index: bool = False) -> str:
    """Format a DataFrame as a GitHub markdown table (no extra dependency); strings are written as they are."""
    frame = table.reset_index() if index else table
    rows = frame.astype(object).to_numpy()
    cells = [[format(v, floatfmt) if isinstance(v, float) else str(v) for v in row] for row in rows]
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * frame.shape[1]]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


@contextlib.contextmanager
def quiet(prefixes: Sequence[str] = ("lightning", "scvi", "hinge_sc")) -> Iterator[None]:
    """Warnings and the info of scvi-tools, Lightning and hinge_sc silenced inside the block, restored after it."""
    import scvi

    verbosity = scvi.settings.verbosity
    scvi.settings.verbosity = logging.WARNING
    levels = {n: logging.getLogger(n).level for n in logging.root.manager.loggerDict if n.startswith(tuple(prefixes))}
    for name in levels:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        scvi.settings.verbosity = verbosity
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


class PeakRSS:
    """Peak resident memory of this process (MB) while the block runs, sampled from ``/proc/self/statm``."""

    def __enter__(self):
        self.peak, self.running = 0.0, True
        self.start = self.read()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    @staticmethod
    def read() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def _run(self):
        while self.running:
            self.peak = max(self.peak, self.read())
            time.sleep(0.2)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.read())


def feature_defaults() -> dict[str, str]:
    """``context`` and ``standardize`` defaults of ``hs.pp.histology_features`` (``None`` as ``"none"``), so the
    benchmarks' options default to the package's one recipe instead of restating it."""
    import inspect

    import hinge_sc as hs

    params = inspect.signature(hs.pp.histology_features).parameters
    return {name: params[name].default or "none" for name in ("context", "standardize")}
