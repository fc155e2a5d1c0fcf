"""Memory of training on many sections: streamed from files (``HINGE.from_collection``) vs all in memory.

Usage::

    python benchmarks/many_sections.py --out /tmp/many_sections --feature-dim 1024 --views 4

Writes every her2st section with counts (real counts, 30 sections) as one ``.h5ad`` each, with features of width
``--feature-dim`` and ``--views`` augmented views per spot. The features are random numbers: this measures memory
and time, not quality (no image is read). Then, each in a fresh process, trains the same model for one epoch
(``--batches`` training batches) two ways and prints the peak resident memory and the wall time, for each number of sections in ``--sections``:

* ``stream``: ``hs.io.SectionCollection(out) → hs.HINGE.from_collection(...) → model.train()`` (two sections in
  memory at a time);
* ``memory``: every file read with ``anndata.read_h5ad``, ``anndata.concat`` → ``setup_anndata`` → ``HINGE``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _common import DATA, PeakRSS, markdown, quiet

import hinge_sc as hs


def write_sections(out: Path, feature_dim: int, views: int) -> pd.DataFrame:
    """One ``.h5ad`` per her2st section with counts, random features and views; returns sizes."""
    import anndata as ad

    out.mkdir(parents=True, exist_ok=True)
    rows = []
    sections = hs.datasets.her2st_sections(DATA / "her2st").index.tolist()
    for i, section in enumerate(sections):
        path = out / f"{section}.h5ad"
        if not path.exists():
            adata = hs.datasets.her2st([section], path=DATA / "her2st", images=False, show_progress_bar=False)
            adata.obs_names = [f"{section}_{n}" for n in adata.obs_names]
            rng = np.random.default_rng(i)
            feats = rng.normal(size=(adata.n_obs, feature_dim)).astype(np.float32)
            view = feats[:, None] + 0.1 * rng.normal(size=(adata.n_obs, views, feature_dim)).astype(np.float32)
            view[:, 0] = feats
            # input data (random features of a given width), not results: a new AnnData holding them
            sample = ad.AnnData(adata.X, obs=adata.obs, var=adata.var,
                                obsm={"X_histology": feats, "X_histology_views": view})  # fmt: skip
            sample.write_h5ad(path)
        rows.append({"section": section, "MB": path.stat().st_size / 2**20})
    return pd.DataFrame(rows)


def peak_memory(mode: str, out: Path, args: argparse.Namespace) -> dict:
    """Build and train one model (``mode``: ``stream`` or ``memory``) in this process; memory and times."""
    import anndata as ad

    vocabulary = pd.read_csv(DATA / "vocab" / "cellfm" / "gene_info.csv", usecols=[0]).iloc[:, 0].tolist()
    backbone = hs.Backbone.random(vocabulary, d_model=args.d_model, n_layers=2, n_heads=4)
    with PeakRSS() as mem, quiet():
        t0 = time.perf_counter()
        files = sorted(out.glob("*.h5ad"))[: args.n_sections]
        if mode == "stream":
            coll = hs.io.SectionCollection(files)
            genes = [g for g in coll.var_names if g in set(vocabulary)][: args.genes]
            model = hs.HINGE.from_collection(coll, backbone, genes=genes, views_key="X_histology_views")
        else:
            adata = ad.concat([ad.read_h5ad(p) for p in files], label="section", keys=[p.stem for p in files])
            genes = [g for g in adata.var_names if g in set(vocabulary)][: args.genes]
            hs.HINGE.setup_anndata(adata, features_key="X_histology", views_key="X_histology_views",
                                   section_key="section")  # fmt: skip
            model = hs.HINGE(adata, backbone, genes=genes)
        t_setup = time.perf_counter() - t0
        model.train(max_epochs=1, views_per_epoch=1, limit_train_batches=args.batches, accelerator="cpu",
                    show_progress_bar=False, calibrate_variance=False)  # fmt: skip
        t_train = time.perf_counter() - t0 - t_setup
    return {"mode": mode, "sections": len(files), "MB_on_disk": sum(f.stat().st_size for f in files) / 2**20,
            "peak_rss_MB": mem.peak, "start_rss_MB": mem.start, "setup_s": t_setup, "train_s": t_train,
            "n_train_spots": model.train_params_["n_train_spots"]}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("/tmp/many_sections"))
    p.add_argument("--feature-dim", type=int, default=1024)
    p.add_argument("--views", type=int, default=4)
    p.add_argument("--genes", type=int, default=100)
    p.add_argument("--d-model", type=int, default=32)
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--sections", type=int, nargs="+", default=[10, 30], help="numbers of sections to train on")
    p.add_argument("--mode", choices=["stream", "memory"], help="(internal) run one mode in this process")
    p.add_argument("--n-sections", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.mode:
        print(json.dumps(peak_memory(args.mode, args.out, args)))
        return
    sizes = write_sections(args.out, args.feature_dim, args.views)
    results = []
    for n in args.sections:
        for mode in ("stream", "memory"):
            cmd = [sys.executable, __file__, "--mode", mode, "--n-sections", str(n), *sys.argv[1:]]
            line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            results.append(json.loads(line))
    print(f"{len(sizes)} sections, {sizes['MB'].sum():.0f} MB of .h5ad files "
          f"(features {args.feature_dim}-d, {args.views} views per spot)\n")  # fmt: skip
    print(markdown(pd.DataFrame(results), floatfmt=".0f"))


if __name__ == "__main__":
    main()
