"""The incremental sampler gives the reference sampler's values (issue 14)."""

from __future__ import annotations

import pytest
import torch

import hinge_sc as hs
from hinge_sc.module import HINGEModule

GENES = [f"G{i}" for i in range(30)]


def _module(mask_mechanism, likelihood, mask_fill, n_layers=3, readout=False):
    bb = hs.Backbone.random(GENES, d_model=32, n_layers=n_layers, n_heads=4, seed=0)
    module = HINGEModule(bb, bb.token_ids(GENES)[0], n_features=5, diffusion_steps=12, mask_mechanism=mask_mechanism,
                         likelihood=likelihood, mask_fill=mask_fill, readout=readout, linear_skip=readout)  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # move the adaptation away from its identity initialisation
        for p in module.parameters():
            if p.requires_grad:
                p.add_(0.3 * torch.randn(p.shape, generator=gen))
    if readout:  # and give the linear skip a value
        module.set_linear_skip(torch.randn(5, len(GENES), generator=gen), torch.randn(len(GENES), generator=gen))
    return module.eval()


@pytest.mark.parametrize(
    ("mask_mechanism", "likelihood", "mask_fill", "n_layers", "readout"),
    [("mask_emb", "mse", "gauss", 3, False), ("zero_emb", "gaussian", "gauss", 2, True),
     ("zero_emb", "mse", "zero", 1, False), ("mask_emb", "gaussian", "gauss", 2, True)],
)  # fmt: skip
@pytest.mark.parametrize("n_steps", [None, 5])
def test_incremental_equals_reference(mask_mechanism, likelihood, mask_fill, n_layers, readout, n_steps):
    module = _module(mask_mechanism, likelihood, mask_fill, n_layers, readout)
    feats = torch.randn(4, 5, generator=torch.Generator().manual_seed(1))
    ref = module.sample(feats, 3, n_steps, torch.Generator().manual_seed(2), incremental=False)
    new = module.sample(feats, 3, n_steps, torch.Generator().manual_seed(2), incremental=True)
    assert new.shape == ref.shape == (4, 3, len(GENES))
    scale = ref.abs().max().clamp_min(1.0)
    torch.testing.assert_close(new / scale, ref / scale, rtol=0, atol=2e-5)
    other = module.sample(feats, 3, n_steps, torch.Generator().manual_seed(3), incremental=True)
    assert not torch.allclose(other, new)


def test_unsupported_modules_use_the_reference_path():
    from hinge_sc.nn import IncrementalDenoiser

    module = _module("mask_emb", "mse", "gauss")
    assert IncrementalDenoiser.supports(module.denoiser)
    assert not IncrementalDenoiser.supports(module.train().denoiser)  # dropout would be skipped
    bb = hs.Backbone.random(GENES, d_model=16, n_layers=2, n_heads=2, seed=0)
    lora = HINGEModule(bb, bb.token_ids(GENES)[0], n_features=5, diffusion_steps=6, lora_rank=2, likelihood="mse", readout=False).eval()
    assert not IncrementalDenoiser.supports(lora.denoiser)  # its forward hooks would be bypassed
    out = lora.sample(torch.randn(2, 5), 2, 3, torch.Generator().manual_seed(0))
    assert out.shape == (2, 2, len(GENES)) and torch.isfinite(out).all()
