"""Whole-slide generation: a virtual spot grid over a full-resolution her2st H&E, streamed into a zarr store.

Usage::

    python benchmarks/whole_slide.py --section C2 --spacing-um 20 --batch-size 256 --out /tmp/whole_slide

Lays a hexagonal grid of spots (``--spacing-um`` apart) over the tissue of the section's full-resolution image
(``hs.pp.tile_slide``), computes handcrafted features (one view), builds a HINGE model on a 200-gene panel of the
section's spots (weights of the adaptation as initialised: speed does not depend on training) and runs
``hs.tl.generate(store=...)``. Prints the
number of spots, the time of each stage (wall and CPU), the peak resident memory during generation (sampled every
0.2 s from ``/proc/self/statm``) and the 1-minute load average.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from _common import DATA, PeakRSS, add_model_args

import hinge_sc as hs


def main() -> None:
    """Tile, featurise and generate one whole slide; print the measurements."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--section", default="C2")
    p.add_argument("--spacing-um", type=float, default=20.0)
    p.add_argument("--genes", type=int, default=200)
    add_model_args(p, d_model=32, n_layers=2, n_heads=4)
    p.add_argument("--samples", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=None, help="Spots per generation batch (default: auto).")
    p.add_argument("--out", default="whole_slide_out")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    timings = {}

    t0, c0 = time.perf_counter(), time.process_time()
    image = DATA / "her2st" / "images" / f"{args.section}.jpg"
    slide = hs.pp.tile_slide(image, spot_diameter_um=args.spacing_um, spacing_um=args.spacing_um,
                             microns_per_pixel=0.74, section=args.section)  # fmt: skip
    timings["tile"] = (time.perf_counter() - t0, time.process_time() - c0)
    print(f"{slide.n_obs} spots", flush=True)
    t0, c0 = time.perf_counter(), time.process_time()
    hs.pp.histology_features(slide, encoder="handcrafted", views=1, patch_size_um=args.spacing_um,
                             show_progress_bar=False)  # fmt: skip
    timings["features"] = (time.perf_counter() - t0, time.process_time() - c0)

    genes = [g.strip() for g in (DATA / "her2st" / "genes_hist2st_785.txt").read_text().split()][: args.genes]
    train = hs.datasets.her2st(sections=[args.section], path=DATA / "her2st", show_progress_bar=False)
    train = train[:, [g for g in genes if g in train.var_names]].copy()
    hs.pp.histology_features(train, encoder="handcrafted", views=1, show_progress_bar=False)  # the slide's encoder
    hs.HINGE.setup_anndata(train, features_key="X_histology")
    backbone = hs.Backbone.random(list(train.var_names), d_model=args.d_model, n_layers=args.n_layers,
                                  n_heads=args.n_heads)  # fmt: skip
    model = hs.HINGE(train, backbone, diffusion_steps=50, seed=0)

    store = out / "slide.zarr"
    t0, c0 = time.perf_counter(), time.process_time()
    with PeakRSS() as mem:
        hs.tl.generate(model, slide, n_samples=args.samples, n_steps=args.steps, seed=0, store=store, overwrite=True,
                       batch_size=args.batch_size, show_progress_bar=False)  # fmt: skip
    timings["generate"] = (time.perf_counter() - t0, time.process_time() - c0)
    print(f"section {args.section}: {slide.n_obs} spots at {args.spacing_um} µm, panel {model.module.n_genes} genes, "
          f"d={args.d_model}, L={args.n_layers}, S={args.samples}, {args.steps} steps")  # fmt: skip
    for k, (wall, cpu) in timings.items():
        print(f"{k:10s} wall {wall:8.1f} s  CPU {cpu:8.1f} s")
    print(f"generation: resident memory {mem.start:.0f} MB before, peak {mem.peak:.0f} MB (+{mem.peak - mem.start:.0f})")
    print(f"mean written: {slide.obsm['hinge'].shape}, finite: {bool(np.isfinite(slide.obsm['hinge'].to_numpy()).all())}")
    print(f"load average (1, 5, 15 min): {os.getloadavg()}")


if __name__ == "__main__":
    main()
