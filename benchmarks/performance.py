"""HINGE performance: FLOPs, the share of the matmul peak reached, throughput and memory; scaling with genes, spots, S.

Usage::

    python benchmarks/performance.py                                   # CPU fp32, 200 → 2,000 genes, spots, S
    python benchmarks/performance.py --precision bf16                  # CPU bf16 autocast
    python benchmarks/performance.py --genes 200 --spots 32 --profile  # + torch.profiler breakdown of generation and training
    python benchmarks/performance.py --shape cellfm-800m --head-rank 64 --genes 200 --spots 64 --device cuda \\
        --precision bf16 --batch-size 8                                 # full size on a GPU, bf16 autocast

Per configuration (each in a fresh ``spawn`` process so that its peak memory is its own), on an untrained
``hs.HINGE`` of the paper's configuration (mean reveal, no readout) set up on synthetic spots:

- **FLOPs** counted with ``torch.utils.flop_counter.FlopCounterMode``: per training sample (forward + backward of one
  optimiser step) and per generated spot-step (one reverse step of one sample of one spot) of the incremental sampler
  that ``generate`` uses, and of the reference sampler (every token embedded and decoded each step).
- **Matmul peak** of the same device and precision, measured in the same process (best of several 1024³ and 2048³
  matmuls, before and after the workload), and the rate of one matmul of the model's own most common shape (a
  training batch of tokens, ``B (G + 1) × d``, times a ``d × d`` weight) as a share of it: the ceiling of
  achieved/peak if the model did nothing but such matmuls.
- **Achieved / peak** = counted FLOPs / time / peak, for training steps and for generation. On CPU the time is the
  process's CPU time (``time.process_time``, one thread by default), so that other processes sharing the cores do not
  count; on CUDA wall time after synchronising. ``gen_effective_util`` uses the reference sampler's FLOPs: the
  work the incremental sampler avoids counts as done.
- Throughput (training samples/s of the module's optimiser steps; generated spots/s of ``HINGE.generate``, the
  generation of ``hs.tl.generate``) and peak memory: peak resident set size on CPU (``ru_maxrss``,
  which includes the ~1 GB of the imported libraries; the increment over the process after imports is also given),
  peak allocated memory on CUDA.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_model_args, markdown, quiet, synthetic_batch

COLUMNS = {
    "n_genes": "genes",
    "n_spots": "spots",
    "n_samples": "S",
    "precision": "precision",
    "peak_gflops": "matmul peak (GFLOP/s)",
    "model_matmul_vs_peak": "d×d matmul/peak",
    "train_mflop_per_sample": "train MFLOP/sample",
    "train_util": "train achieved/peak",
    "train_samples_per_s": "train samples/s",
    "gen_mflop_per_spot_step": "gen MFLOP/spot-step",
    "gen_ref_mflop_per_spot_step": "reference MFLOP/spot-step",
    "gen_util": "gen achieved/peak",
    "gen_effective_util": "gen effective/peak",
    "generate_spots_per_s": "generated spots/s",
    "generate_s": "generation time (s)",
    "peak_memory_mb": "peak memory (MB)",
    "memory_increment_mb": "memory over idle (MB)",
}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def matmul_rate(m: int, k: int, n: int, device, dtype, clock, sync, repeats: int = 2) -> float:
    """Best FLOP/s of an ``(m, k) @ (k, n)`` matmul on ``device`` in ``dtype``."""
    import torch

    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    a @ b
    best = 0.0
    for _ in range(repeats):
        sync()
        t0 = clock()
        a @ b
        sync()
        best = max(best, 2 * m * k * n / max(clock() - t0, 1e-9))
    return best


def matmul_peak(device, dtype, clock, sync, sizes=(1024, 2048), repeats: int = 2) -> float:
    """Best FLOP/s of square matmuls on ``device`` in ``dtype`` (the bound the workload is compared with)."""
    return max(matmul_rate(n, n, n, device, dtype, clock, sync, repeats) for n in sizes)


def count_flops(fn) -> int:
    """FLOPs of ``fn()`` counted by ``torch.utils.flop_counter.FlopCounterMode``."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def synthetic_model(n_genes: int, n_features: int, *, shape, d_model, n_layers, n_heads, head_rank):
    """An untrained :class:`hinge_sc.HINGE` (paper configuration: mean reveal, no readout, raw features) on 8
    synthetic spots of ``n_genes`` genes; with ``shape`` a CellFM shape over a CellFM-sized vocabulary whose first
    ``n_genes`` genes are the panel."""
    import anndata as ad

    import hinge_sc as hs

    if shape is None:
        genes = [f"G{i}" for i in range(n_genes)]
        backbone = hs.Backbone.random(genes, d_model=d_model, n_layers=n_layers, n_heads=n_heads, seed=0)
    else:
        genes = [f"G{i}" for i in range(max(n_genes, 24078))]
        backbone = hs.Backbone.random(genes, shape=shape, seed=0)
    rng = np.random.default_rng(0)
    adata = ad.AnnData(
        X=rng.poisson(2.0, (8, n_genes)).astype(np.float32),
        var=pd.DataFrame(index=genes[:n_genes]),
        obsm={"X_histology": rng.normal(size=(8, n_features)).astype(np.float32)},
    )
    with quiet():  # no scvi-tools setup chatter
        hs.HINGE.setup_anndata(adata, features_key="X_histology")
        return hs.HINGE(adata, backbone, head_rank=head_rank, likelihood="mse", readout=False,
                        standardize_features=False)  # fmt: skip


def spots(n_spots: int, n_features: int):
    """``n_spots`` spots with standard-normal features and no genes (an H&E-only slide) to generate."""
    import anndata as ad

    feats = np.random.default_rng(1).normal(size=(n_spots, n_features)).astype(np.float32)
    return ad.AnnData(obs=pd.DataFrame(index=[f"spot{i}" for i in range(n_spots)]), obsm={"X_histology": feats})


def measure(
    n_genes: int,
    n_spots: int,
    *,
    d_model: int = 128,
    n_layers: int = 4,
    n_heads: int = 8,
    n_features: int = 80,
    batch_size: int = 32,
    n_iter: int = 3,
    n_samples: int = 4,
    n_steps: int = 10,
    generate_batch: int | None = None,
    device: str = "cpu",
    threads: int | None = 1,
    shape: str | None = None,
    head_rank: int | None = None,
    precision: str = "32",
    profile: bool = False,
) -> dict:
    """Count FLOPs and time ``n_iter`` training steps and the generation of ``n_spots`` spots."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="This model has not been trained")
        return _measure(n_genes, n_spots, d_model=d_model, n_layers=n_layers, n_heads=n_heads, n_features=n_features,
                        batch_size=batch_size, n_iter=n_iter, n_samples=n_samples, n_steps=n_steps,
                        generate_batch=generate_batch, device=device, threads=threads, shape=shape,
                        head_rank=head_rank, precision=precision, profile=profile)  # fmt: skip


def _measure(n_genes, n_spots, *, d_model, n_layers, n_heads, n_features, batch_size, n_iter, n_samples, n_steps,
             generate_batch, device, threads, shape, head_rank, precision, profile) -> dict:  # fmt: skip
    import torch

    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    clock = time.perf_counter if cuda else time.process_time
    idle = _rss_mb()
    model = synthetic_model(n_genes, n_features, shape=shape, d_model=d_model, n_layers=n_layers, n_heads=n_heads,
                            head_rank=head_rank)  # fmt: skip
    module, backbone = model.module.to(dev), model.module.backbone
    bf16 = precision == "bf16"
    peak = matmul_peak(dev, torch.bfloat16 if bf16 else torch.float32, clock, sync)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16)
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)
    batch = synthetic_batch(batch_size, n_genes, n_features, dev)

    def train_step():
        with autocast:
            _, _, out = module(batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()

    module.train()
    train_step()  # warm-up
    train_flops = count_flops(train_step)
    best = float("inf")
    for _ in range(n_iter):
        sync()
        t0 = clock()
        train_step()
        sync()
        best = min(best, clock() - t0)
    train_rate = batch_size / best
    slide = spots(n_spots, n_features)
    probe = slide[: min(generate_batch or 8, n_spots)].copy()  # FLOPs per spot-step do not depend on the batch

    def generate(adata=slide):  # the package's generation: batches of spots, a random stream per spot
        model.generate(adata, n_samples=n_samples, n_steps=n_steps, batch_size=generate_batch, seed=0,
                       precision=precision, show_progress_bar=False)  # fmt: skip

    def reference():  # the reference sampler: every token embedded and decoded at every step
        feats = torch.as_tensor(probe.obsm["X_histology"], device=dev)
        with autocast:
            module.sample(feats, n_samples, n_steps, incremental=False)

    spot_steps = probe.n_obs * n_samples * n_steps  # (steps that reveal nothing are skipped; none with G ≥ T)
    gen_flops = count_flops(lambda: generate(probe)) / spot_steps  # (`generate` puts the module in eval mode)
    ref_flops = count_flops(reference) / spot_steps
    generate(probe)  # warm-up
    sync()
    t0, w0 = clock(), time.perf_counter()
    generate()
    sync()
    gen_s, gen_wall = clock() - t0, time.perf_counter() - w0
    dtype = torch.bfloat16 if bf16 else torch.float32
    peak = max(peak, matmul_peak(dev, dtype, clock, sync))
    # the model's most common matmul, a training batch of tokens times a d × d weight: what one matmul of the
    # model's own shape reaches alone, the ceiling of achieved/peak when nothing else took time
    d = backbone.config.d_model
    model_matmul = matmul_rate(batch_size * (n_genes + 1), d, d, dev, dtype, clock, sync, repeats=5)
    mem = torch.cuda.max_memory_allocated() / 2**20 if cuda else _rss_mb()
    total = n_spots * n_samples * n_steps
    row = {
        "n_genes": n_genes,
        "n_spots": n_spots,
        "n_samples": n_samples,
        "n_steps": n_steps,
        "precision": precision,
        "device": dev.type,
        "threads": threads,
        "peak_gflops": peak / 1e9,
        "model_matmul_vs_peak": model_matmul / peak,
        "train_mflop_per_sample": train_flops / batch_size / 1e6,
        "train_util": train_flops / best / peak,
        "train_samples_per_s": train_rate,
        "train_ms_per_sample": 1e3 / train_rate,
        "gen_mflop_per_spot_step": gen_flops / 1e6,
        "gen_ref_mflop_per_spot_step": ref_flops / 1e6,
        "gen_util": gen_flops * total / gen_s / peak,
        "gen_effective_util": ref_flops * total / gen_s / peak,
        "generate_spots_per_s": n_spots / gen_s,
        "generate_s": gen_s,
        "generate_wall_s": gen_wall,
        "peak_memory_mb": mem,
        "memory_increment_mb": mem - (0.0 if cuda else idle),
        "load_1min": os.getloadavg()[0],
    }
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with torch_profile(activities=activities) as prof:
            generate(probe)
        row["profile"] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20)
        module.train()
        with torch_profile(activities=activities) as prof:
            train_step()
        row["train_profile"] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20)
    return row


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


def performance_table(
    genes: list[int], spots: list[int], samples: list[int] | None = None, *, isolate: bool = True, **kwargs
) -> pd.DataFrame:
    """Scaling with genes (at ``spots[0]`` spots), spots (at ``genes[0]``) and samples ``S`` (at both)."""
    base_genes, base_spots = genes[0], spots[0]
    base_samples = kwargs.pop("n_samples", 4)
    samples = samples or [base_samples]
    configs = [(g, base_spots, base_samples) for g in genes] + [(base_genes, s, base_samples) for s in spots]
    configs += [(base_genes, base_spots, s) for s in samples]
    run = measure_isolated if isolate else measure
    rows = [run(n_genes=g, n_spots=s, n_samples=k, **kwargs) for g, s, k in dict.fromkeys(configs)]
    return pd.DataFrame(rows)


def to_markdown(table: pd.DataFrame) -> str:
    """Format the performance table in markdown, with readable column names (the columns of :data:`COLUMNS`)."""
    cols = [c for c in COLUMNS if c in table.columns]
    return markdown(table[cols].rename(columns=COLUMNS), floatfmt=".3g")


def main() -> None:
    """Print the performance table (and the profiles) for the configurations given on the command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--genes", type=int, nargs="+", default=[200, 1000, 2000])
    parser.add_argument("--spots", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--samples", type=int, nargs="+", default=[4, 8])
    add_model_args(parser, d_model=128, n_heads=8)
    parser.add_argument("--features", type=int, default=80)
    parser.add_argument("--batch-size", type=int, default=32, help="Training batch.")
    parser.add_argument("--generate-batch", type=int, default=None, help="Spots per generation batch (default: auto).")
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--shape", default=None, choices=["cellfm-80m", "cellfm-800m"],
                        help="Full-size backbone shape (overrides --d-model/--n-layers/--n-heads).")
    parser.add_argument("--head-rank", type=int, default=None, help="Low-rank SoftAdaLN heads.")
    parser.add_argument("--precision", default="32", choices=["32", "bf16"], help="bf16 autocast.")
    parser.add_argument("--profile", action="store_true", help="Print torch.profiler tables of generation and training.")
    parser.add_argument("--csv", default=None, help="Also write the table to this CSV file.")
    args = parser.parse_args()
    table = performance_table(
        args.genes, args.spots, args.samples, d_model=args.d_model, n_layers=args.n_layers,
        n_heads=args.n_heads, n_features=args.features, batch_size=args.batch_size, n_iter=args.iters,
        n_samples=args.samples[0], n_steps=args.steps, generate_batch=args.generate_batch, device=args.device,
        threads=args.threads, shape=args.shape, head_rank=args.head_rank, precision=args.precision,
        profile=args.profile,
    )  # fmt: skip
    for column, what in (("profile", "Generation"), ("train_profile", "Training step")):
        if column in table:
            for text in table.pop(column).dropna().unique()[:1]:
                print(f"{what} profile (first configuration):\n{text}\n")
    if args.csv:
        table.to_csv(args.csv, index=False)
    print(f"uptime load (1 min) during the runs: {', '.join(f'{v:.1f}' for v in table['load_1min'])}")
    print(to_markdown(table))


if __name__ == "__main__":
    main()
