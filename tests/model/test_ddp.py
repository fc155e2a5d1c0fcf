"""Multi-process training through Lightning DDP (gloo, 2 CPU processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import anndata as ad, numpy as np, scipy.sparse as sp, torch
    import hinge_sc as hs

    out = sys.argv[1]
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(64, 6)).astype(np.float32)
    counts = rng.poisson(np.exp(1 + feats @ rng.normal(size=(6, 12)) / 3)).astype(np.float32)
    adata = ad.AnnData(sp.csr_matrix(counts))
    adata.var_names = [f"G{i}" for i in range(12)]
    adata.obsm["X_histology"] = feats
    backbone = hs.Backbone.random(adata.var_names, d_model=16, n_layers=2, n_heads=2)
    if sys.argv[2] == "collection":  # four sections of 16 spots, one file each, streamed
        for i in range(4):
            part = adata[16 * i : 16 * (i + 1)].copy()
            part.obs_names = [f"s{i}_{j}" for j in range(16)]
            part.write_h5ad(os.path.join(out, f"sec{i}.h5ad"))
        coll = hs.io.SectionCollection([os.path.join(out, f"sec{i}.h5ad") for i in range(4)])
        model = hs.HINGE.from_collection(coll, backbone, diffusion_steps=8)
    else:
        hs.HINGE.setup_anndata(adata)
        model = hs.HINGE(adata, backbone, diffusion_steps=8)
    frozen = {k: v.clone() for k, v in backbone.state_dict().items()}
    model.train(max_epochs=2, batch_size=8, warmup_epochs=1, accelerator="cpu", devices=2, strategy="ddp",
                show_progress_bar=False)
    trainer = model.trainer
    heads = torch.cat([p.detach().flatten() for p in model.module.denoiser.layers.parameters()])
    result = {
        "world_size": trainer.world_size,
        "rank": trainer.global_rank,
        "frozen_unchanged": all(torch.equal(frozen[k], v) for k, v in backbone.state_dict().items()),
        "heads_sum": float(heads.sum()),
        "epochs": int(trainer.current_epoch),
    }
    with open(os.path.join(out, f"rank{trainer.global_rank}.json"), "w") as f:
        json.dump(result, f)
    """
)


@pytest.mark.parametrize("data", ["adata", "collection"])
def test_ddp_two_cpu_processes(tmp_path, data):
    """In memory, and streamed from a collection (every rank streams the same order, keeps every 2nd batch)."""
    script = tmp_path / "train_ddp.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path), data], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 for r in results)
    assert all(r["frozen_unchanged"] for r in results)
    assert all(r["epochs"] == 2 for r in results)
    # DDP keeps the replicas in sync: both ranks end with the same trained weights
    assert abs(results[0]["heads_sum"] - results[1]["heads_sum"]) < 1e-5
