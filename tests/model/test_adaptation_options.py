"""Fine-tuning and LoRA options of the adaptation (docs/method.md §4, options)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import hinge_sc as hs

from .conftest import synthetic_adata


def _train(model):
    model.train(max_epochs=2, batch_size=32, lr=1e-3, warmup_epochs=1, accelerator="cpu", show_progress_bar=False)


def test_full_fine_tuning_leaves_callers_backbone_alone(backbone, tmp_path):
    adata = synthetic_adata()
    hs.HINGE.setup_anndata(adata)
    before = backbone.checksum()
    model = hs.HINGE(adata, backbone, diffusion_steps=10, freeze_backbone=False)
    assert model.trainable_parameters()["backbone"] == sum(p.numel() for p in backbone.parameters())
    _train(model)
    assert backbone.checksum() == before
    assert model.backbone_info_["checksum"] == model.module.backbone.checksum() != before
    expected = model.generate(n_samples=2, seed=0, show_progress_bar=False)
    model.save(tmp_path / "ft")
    loaded = hs.HINGE.load(tmp_path / "ft")
    pd.testing.assert_frame_equal(loaded.generate(adata, n_samples=2, seed=0, show_progress_bar=False).mean, expected.mean)


def test_lora_starts_at_identity_and_trains_only_adapters(backbone, tmp_path):
    adata = synthetic_adata()
    hs.HINGE.setup_anndata(adata)
    plain = hs.HINGE(adata, backbone, diffusion_steps=10)
    lora = hs.HINGE(adata, backbone, diffusion_steps=10, lora_rank=4)
    lora.module.load_state_dict(plain.module.state_dict(), strict=False)
    plain.module.eval(), lora.module.eval()
    feats = torch.as_tensor(adata.obsm["X_histology"][:5])
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    torch.testing.assert_close(plain.module.sample(feats, 2, generator=gen()), lora.module.sample(feats, 2, generator=gen()))
    assert lora.trainable_parameters()["lora"] == 2 * (5 + 3) * 4 * (32 + 32)
    frozen = {k: v.clone() for k, v in lora.module.backbone.state_dict().items()}
    _train(lora)
    assert all(torch.equal(frozen[k], v) for k, v in lora.module.backbone.state_dict().items())
    assert any(a.B.abs().sum() > 0 for a in lora.module.denoiser.lora.values())
    assert backbone.checksum() == lora.backbone_info_["checksum"]  # LoRA works on a copy; the prior is unchanged
    expected = lora.generate(n_samples=2, seed=0, show_progress_bar=False)
    lora.save(tmp_path / "lora")
    got = hs.HINGE.load(tmp_path / "lora").generate(adata, n_samples=2, seed=0, show_progress_bar=False)
    pd.testing.assert_frame_equal(got.mean, expected.mean)


def test_lora_rank_checked(backbone):
    adata = synthetic_adata()
    hs.HINGE.setup_anndata(adata)
    with pytest.raises(ValueError, match="lora_rank"):
        hs.HINGE(adata, backbone, lora_rank=-1)
