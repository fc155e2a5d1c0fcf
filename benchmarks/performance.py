"""HINGE performance: training samples/s, generated spots/s and peak memory, and how they scale with genes and spots.

Usage::

    python benchmarks/performance.py                          # 200 → 2,000 genes, 32 → 512 spots, CPU
    python benchmarks/performance.py --genes 200 1000 --spots 64 --device cuda
    python benchmarks/performance.py --shape cellfm-800m --head-rank 64 --genes 200 --spots 64 --device cuda \
        --precision bf16 --batch-size 8                          # full size, bf16 autocast

Each configuration runs in a fresh process (``spawn``) so that its peak memory is its own: peak resident set size
on CPU (``ru_maxrss``, which includes the ~1 GB of the imported libraries; the increment over the process after
imports is also given, 0 when the run stays below the import peak), peak allocated memory on CUDA.
Training: optimiser steps of the full masked-diffusion objective (forward + backward through the frozen backbone,
AdamW on the SoftAdaLN parameters), batch ``--batch-size``. Generation: ``--samples`` samples × ``--steps`` reverse
steps per spot, ``--spots`` spots in batches of 64 (the default of ``hs.tl.generate``).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

import pandas as pd

COLUMNS = {
    "n_genes": "genes",
    "n_spots": "spots",
    "train_samples_per_s": "train samples/s",
    "train_ms_per_sample": "train ms/sample",
    "generate_spots_per_s": "generated spots/s",
    "generate_s": "generation time (s)",
    "peak_memory_mb": "peak memory (MB)",
    "memory_increment_mb": "memory over idle (MB)",
}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def measure(
    n_genes: int,
    n_spots: int,
    *,
    d_model: int = 64,
    n_layers: int = 4,
    n_heads: int = 4,
    n_features: int = 80,
    batch_size: int = 32,
    n_iter: int = 3,
    n_samples: int = 4,
    n_steps: int = 10,
    generate_batch: int = 64,
    device: str = "cpu",
    threads: int | None = None,
    shape: str | None = None,
    head_rank: int | None = None,
    precision: str = "32",
) -> dict:
    """Time ``n_iter`` training steps and the generation of ``n_spots`` spots; report rates and peak memory."""
    import torch

    from hinge_sc._constants import MODULE_KEYS
    from hinge_sc.module import HINGEModule
    from hinge_sc.nn import Backbone

    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    idle = _rss_mb()
    if shape is None:
        genes = [f"G{i}" for i in range(n_genes)]
        backbone = Backbone.random(genes, d_model=d_model, n_layers=n_layers, n_heads=n_heads, seed=0)
    else:  # a CellFM shape over a CellFM-sized vocabulary; the panel is its first `n_genes` genes
        genes = [f"G{i}" for i in range(max(n_genes, 24078))]
        backbone = Backbone.random(genes, shape=shape, seed=0)
    module = HINGEModule(backbone, backbone.token_ids(genes[:n_genes])[0], n_features, head_rank=head_rank).to(dev)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)
    batch = {
        MODULE_KEYS.COUNTS: torch.poisson(torch.full((batch_size, n_genes), 2.0)).to(dev),
        MODULE_KEYS.LIBRARY: torch.full((batch_size,), 1e4, device=dev),
        MODULE_KEYS.FEATURES: torch.randn(batch_size, n_features, device=dev),
    }
    module.train()
    for i in range(n_iter + 1):
        if i == 1:  # the first step is warm-up
            sync()
            t0 = time.perf_counter()
        with autocast:
            _, _, out = module(batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    sync()
    train_rate = n_iter * batch_size / (time.perf_counter() - t0)
    module.eval()
    feats = torch.randn(n_spots, n_features, device=dev)
    gen = torch.Generator(device=dev).manual_seed(0)
    t0 = time.perf_counter()
    for start in range(0, n_spots, generate_batch):  # in batches of spots, as `hs.tl.generate` does
        with autocast:
            module.sample(feats[start : start + generate_batch], n_samples, n_steps, gen)
    sync()
    gen_s = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else _rss_mb()
    return {
        "n_genes": n_genes,
        "n_spots": n_spots,
        "train_samples_per_s": train_rate,
        "train_ms_per_sample": 1e3 / train_rate,
        "generate_spots_per_s": n_spots / gen_s,
        "generate_s": gen_s,
        "peak_memory_mb": peak,
        "memory_increment_mb": peak - (0.0 if dev.type == "cuda" else idle),
    }


def _worker(queue, kwargs):
    queue.put(measure(**kwargs))


def measure_isolated(**kwargs) -> dict:
    """:func:`measure` in a fresh ``spawn`` process, so that the peak memory is this configuration's own."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_worker, args=(queue, kwargs))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def performance_table(genes: list[int], spots: list[int], *, isolate: bool = True, **kwargs) -> pd.DataFrame:
    """Scaling with the number of genes (at ``spots[0]`` spots) and with the number of spots (at ``genes[0]``)."""
    base_genes, base_spots = genes[0], spots[0]
    configs = [(g, base_spots) for g in genes] + [(base_genes, s) for s in spots if s != base_spots]
    run = measure_isolated if isolate else measure
    rows = [run(n_genes=g, n_spots=s, **kwargs) for g, s in dict.fromkeys(configs)]
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame, floatfmt: str = ".1f", index: bool = False) -> str:
    """Format a DataFrame as a GitHub markdown table (no extra dependency); strings are written as they are."""
    frame = table.reset_index() if index else table
    rows = frame.astype(object).to_numpy()
    cells = [[format(v, floatfmt) if isinstance(v, float) else str(v) for v in row] for row in rows]
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * frame.shape[1]]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def to_markdown(table: pd.DataFrame) -> str:
    """Format the performance table in markdown, with readable column names."""
    return markdown(table.rename(columns=COLUMNS))


def main() -> None:
    """Print the performance table for the configurations given on the command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--genes", type=int, nargs="+", default=[200, 500, 1000, 2000])
    parser.add_argument("--spots", type=int, nargs="+", default=[32, 128, 512])
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--n-layers", type=int, default=4)
    parser.add_argument("--n-heads", type=int, default=4)
    parser.add_argument("--features", type=int, default=80)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--shape", default=None, choices=["cellfm-80m", "cellfm-800m"],
                        help="Full-size backbone shape (overrides --d-model/--n-layers/--n-heads).")
    parser.add_argument("--head-rank", type=int, default=None, help="Low-rank SoftAdaLN heads.")
    parser.add_argument("--precision", default="32", choices=["32", "bf16"], help="bf16 autocast.")
    args = parser.parse_args()
    table = performance_table(
        args.genes, args.spots, d_model=args.d_model, n_layers=args.n_layers,
        n_heads=args.n_heads, n_features=args.features, batch_size=args.batch_size, n_iter=args.iters,
        n_samples=args.samples, n_steps=args.steps, device=args.device, threads=args.threads, shape=args.shape,
        head_rank=args.head_rank, precision=args.precision,
    )  # fmt: skip
    print(to_markdown(table))


if __name__ == "__main__":
    main()
