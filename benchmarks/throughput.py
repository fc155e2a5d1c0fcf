"""Training and sampling throughput of HINGE on synthetic data of real shapes; prints a markdown table.

Usage::

    python benchmarks/throughput.py                # small configurations, CPU
    python benchmarks/throughput.py --device cuda --configs 256,8,8 1536,2,48

Each configuration is ``d_model,n_layers,n_heads``. Training: optimiser steps of the full masked-diffusion
objective (forward + backward through the frozen backbone, AdamW on the SoftAdaLN parameters). Sampling:
the reverse process for ``--spots`` spots × ``--samples`` samples × ``--steps`` steps.
"""

from __future__ import annotations

import argparse
import time

import torch

from hinge_sc._constants import MODULE_KEYS
from hinge_sc.module import HINGEModule
from hinge_sc.nn import Backbone, BackboneConfig


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(d_model, n_layers, n_heads, *, n_genes, n_features, batch_size, n_iter, spots, samples, steps, device):
    genes = [f"G{i}" for i in range(n_genes)]
    backbone = Backbone(genes, BackboneConfig(d_model=d_model, n_layers=n_layers, n_heads=n_heads))
    backbone.reset_parameters()
    ids, _ = backbone.token_ids(genes)
    module = HINGEModule(backbone, ids, n_features).to(device)
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)
    batch = {
        MODULE_KEYS.COUNTS: torch.poisson(torch.full((batch_size, n_genes), 2.0)).to(device),
        MODULE_KEYS.LIBRARY: torch.full((batch_size,), 1e4, device=device),
        MODULE_KEYS.FEATURES: torch.randn(batch_size, n_features, device=device),
    }
    module.train()
    for i in range(n_iter + 1):
        if i == 1:  # first step is warm-up
            _sync(device)
            t0 = time.perf_counter()
        _, _, out = module(batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    _sync(device)
    train_rate = n_iter * batch_size / (time.perf_counter() - t0)
    module.eval()
    feats = torch.randn(spots, n_features, device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    t0 = time.perf_counter()
    module.sample(feats, samples, steps, gen)
    _sync(device)
    sample_rate = spots / (time.perf_counter() - t0)
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return train_rate, sample_rate, trainable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["64,4,4", "128,4,8", "256,8,8"])
    parser.add_argument("--genes", type=int, default=200)
    parser.add_argument("--features", type=int, default=46)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--spots", type=int, default=16)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device={device}, threads={torch.get_num_threads()}, G={args.genes}, batch={args.batch_size}, "
          f"sampling: {args.samples} samples × {args.steps} steps")
    print("| d | L | H | trainable params | train samples/s | generated spots/s |")
    print("|---|---|---|---|---|---|")
    for cfg in args.configs:
        d, n_layers, n_heads = map(int, cfg.split(","))
        train_rate, sample_rate, trainable = measure(
            d, n_layers, n_heads, n_genes=args.genes, n_features=args.features, batch_size=args.batch_size,
            n_iter=args.iters, spots=args.spots, samples=args.samples, steps=args.steps, device=device,
        )
        print(f"| {d} | {n_layers} | {n_heads} | {trainable:,} | {train_rate:.1f} | {sample_rate:.2f} |", flush=True)


if __name__ == "__main__":
    main()
