"""Throughput of histology feature extraction and peak memory on a large lazily read slide; prints markdown tables.

Usage::

    python benchmarks/features.py                      # CPU, about 2 minutes on 2 cores
    python benchmarks/features.py --device cuda --vit-patches 512

Rows:

- ``handcrafted``: the offline default encoder on 64 px patches (encoder only), and end to end on the real HER2ST
  section C2 (JPEG decoding, 187 patches cut and resized, 8 dihedral views embedded);
- ``ViT-S/16`` and ``ViT-L/16`` (the UNI architecture) at 224 px with random weights: timm's models when timm is
  installed, otherwise a plain-torch ViT of the same shape (patch embedding, pre-norm blocks, GELU MLP), which has
  the same cost;
- a 40,960 × 40,960 px synthetic slide (5.0 GB as RGB uint8) generated chunk by chunk by dask and never held in
  memory: a virtual spot grid and handcrafted features over it, with the peak of traced allocations.
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc

import numpy as np
import torch
from _common import DATA

import hinge_sc as hs


class TinyViT(torch.nn.Module):
    """A ViT of the given shape in plain torch (class-token output), for timing when timm is absent."""

    def __init__(self, dim: int, depth: int, heads: int, patch: int = 16, size: int = 224):
        super().__init__()
        self.embed = torch.nn.Conv2d(3, dim, patch, stride=patch)
        self.cls = torch.nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = torch.nn.Parameter(torch.zeros(1, (size // patch) ** 2 + 1, dim))
        layer = torch.nn.TransformerEncoderLayer(dim, heads, 4 * dim, activation="gelu", batch_first=True,
                                                 norm_first=True, dropout=0.0)  # fmt: skip
        self.blocks = torch.nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = torch.nn.LayerNorm(dim)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(len(x), -1, -1), x], dim=1) + self.pos
        return self.norm(self.blocks(x))[:, 0]


def vit(name: str, dim: int, depth: int, heads: int) -> tuple[torch.nn.Module, str]:
    try:
        import timm

        return timm.create_model(name, pretrained=False, num_classes=0), "timm"
    except ImportError:
        return TinyViT(dim, depth, heads), "torch"


def rate(fn, n: int, repeat: int = 1, warmup=None) -> float:
    (warmup or fn)()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return n * repeat / (time.perf_counter() - t0)


def synthetic_slide(side: int = 40_960, chunk: int = 1024):
    """Lazily generated RGB slide: pink tissue texture in a disc, white glass around it."""
    import dask.array as da

    texture = np.clip(np.array([200, 120, 180], np.int16) + np.random.default_rng(0).integers(
        -25, 25, size=(chunk, chunk, 1), dtype=np.int16), 0, 255).astype(np.uint8)  # fmt: skip

    def block(block_info=None):
        (y0, y1), (x0, x1), _ = block_info[None]["array-location"]
        yy, xx = np.arange(y0, y1)[:, None], np.arange(x0, x1)[None, :]
        tissue = (xx - side / 2) ** 2 + (yy - side / 2) ** 2 < (0.45 * side) ** 2
        return np.where(tissue[..., None], texture[: y1 - y0, : x1 - x0], np.uint8(242))

    n = side // chunk
    return da.map_blocks(block, chunks=((chunk,) * n, (chunk,) * n, (3,)), dtype=np.uint8)


def large_slide(spacing_um: float) -> None:
    """Virtual spots and handcrafted features on the lazily generated slide; prints time and peak memory."""
    arr = synthetic_slide()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    tracemalloc.start()
    t0 = time.perf_counter()
    yy, xx = np.mgrid[:400, :400]
    mask = (xx - 200) ** 2 + (yy - 200) ** 2 < 180**2  # tissue mask at 1/102 of the slide's resolution
    sdata = hs.pp.tile_slide(arr, microns_per_pixel=0.5, spacing_um=spacing_um, tissue_mask=mask)
    n_spots = sdata.tables["table"].n_obs
    hs.pp.histology_features(sdata, views=1, batch_size=64, show_progress_bar=False)
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    print("\n### Large slide read lazily\n")
    print("| slide | if loaded | spots | time (s) | spots/s | peak traced | peak RSS (before) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(f"| {arr.shape[1]:,} × {arr.shape[0]:,} px synthetic (dask, 1024 px chunks), {spacing_um:.0f} µm grid, "
          f"handcrafted | {arr.nbytes / 1e9:.1f} GB | {n_spots} | {elapsed:.1f} | {n_spots / elapsed:.1f} | "
          f"{peak:.0f} MB | {rss:.0f} MB ({rss0:.0f} MB) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--vit-patches", type=int, default=16, help="patches per ViT timing (ViT-L gets a quarter)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--slide-spacing-um", type=float, default=700.0)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    large_slide(args.slide_spacing_um)  # first, so that the process's peak RSS reflects it

    patches = np.random.default_rng(0).integers(0, 255, (256, 64, 64, 3), dtype=np.uint8)
    handcrafted = hs.pp.handcrafted_features
    rows.append(("handcrafted (encoder only)", "64 px", 80, rate(lambda: handcrafted(patches), len(patches))))
    if (DATA / "her2st" / "images" / "C2.jpg").is_file():
        adata = hs.datasets.her2st(["C2"], path=DATA / "her2st", show_progress_bar=False)
        n = adata.n_obs * 8

        def end_to_end():
            hs.pp.histology_features(adata, views=8, copy=True, show_progress_bar=False)

        rows.append(("handcrafted, HER2ST C2 end to end", "64 px, 8 views", 80, rate(end_to_end, n)))

    uni = hs.pp.ENCODERS["uni"]  # ViT-L/16: 224 px input, ImageNet normalisation (ViT-S/16 gets the same)
    for label, name, dim, depth, heads, n in (
        ("ViT-S/16", "vit_small_patch16_224", 384, 12, 6, args.vit_patches),
        ("ViT-L/16 (UNI)", "vit_large_patch16_224", 1024, 24, 16, max(4, args.vit_patches // 4)),
    ):
        model, lib = vit(name, dim, depth, heads)
        enc = hs.pp.Encoder(model, name=label, input_size=uni.input_size, mean=uni.mean, std=uni.std).to(args.device)
        batch = np.random.default_rng(1).integers(0, 255, (n, 224, 224, 3), dtype=np.uint8)

        def embed(enc=enc, batch=batch):
            for i in range(0, len(batch), args.batch_size):
                enc(batch[i : i + args.batch_size])

        def warm(enc=enc, batch=batch):
            enc(batch[:1])

        rows.append((f"{label} ({lib}, random weights, {args.device})", "224 px", dim, rate(embed, n, warmup=warm)))

    print(f"\n### Feature throughput ({torch.get_num_threads()} torch threads)\n")
    print("| encoder | input | features | patches/s |\n|---|---|---:|---:|")
    for label, size, dim, r in rows:
        print(f"| {label} | {size} | {dim} | {r:.1f} |")


if __name__ == "__main__":
    main()
