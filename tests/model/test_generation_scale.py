"""Whole slides: generation streamed into a zarr store, resumed after an interruption, and sharded (issue 14)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import zarr

import hinge_sc as hs
import hinge_sc.model._generation as driver
import hinge_sc.model._store as store_module

from .conftest import synthetic_adata


@pytest.fixture(scope="module")
def model():
    bb = hs.Backbone.random([f"GENE{i}" for i in range(24)], d_model=16, n_layers=2, n_heads=2)
    adata = synthetic_adata(n_spots=30)
    hs.HINGE.setup_anndata(adata, features_key="X_histology")
    return hs.HINGE(adata, bb, diffusion_steps=6, seed=0)


def test_store_equals_memory_and_resumes_after_an_interruption(model, tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "BLOCK_SPOTS", 8)  # 4 blocks of 8 spots (batches of 4)
    adata = synthetic_adata(n_spots=30)
    kwargs = {"n_samples": 2, "n_steps": 3, "seed": 5, "batch_size": 4, "show_progress_bar": False}
    ref = model.generate(adata, return_samples=True, **kwargs)
    path = tmp_path / "run.zarr"

    real = driver.iter_batches

    def interrupted(*args, **kw):  # stop after 5 batches: 2 blocks written, the third half done
        for i, item in enumerate(real(*args, **kw)):
            if i == 5:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(driver, "iter_batches", interrupted)
    with pytest.raises(KeyboardInterrupt):
        hs.tl.generate(model, adata, store=path, save_samples=True, **kwargs)
    assert zarr.open_group(str(path), mode="r")["done"][:].tolist() == [True, True, False, False]
    monkeypatch.setattr(driver, "iter_batches", real)

    with pytest.raises(FileExistsError, match="resume=True"):
        hs.tl.generate(model, adata, store=path, **kwargs)
    with pytest.raises(ValueError, match="n_samples"):
        hs.tl.generate(model, adata, store=path, resume=True, save_samples=True, **{**kwargs, "n_samples": 3})

    calls = []
    monkeypatch.setattr(driver, "iter_batches", lambda *a, **kw: calls.extend(a[3]) or real(*a, **kw))
    hs.tl.generate(model, adata, store=path, resume=True, save_samples=True, **{**kwargs, "seed": None})
    assert calls[0] == (16, 20)  # only the missing blocks were generated
    pd.testing.assert_frame_equal(adata.obsm["hinge"], ref.mean, atol=1e-5)
    pd.testing.assert_frame_equal(adata.obsm["hinge_std"], ref.std, atol=1e-5)
    np.testing.assert_allclose(adata.obsm["hinge_samples"], ref.samples, atol=1e-5)
    assert adata.uns["hinge"]["params"]["seed"] == 5  # the store's seed


def test_default_batch_size_depends_on_the_device():
    import torch

    from hinge_sc.module import resolve_batch_size

    assert resolve_batch_size(None, 8, torch.device("cpu")) == 4
    assert resolve_batch_size(None, 1, torch.device("cpu")) == 32
    assert resolve_batch_size(None, 8, torch.device("meta")) == 256
    assert resolve_batch_size(7, 8, torch.device("cpu")) == 7


SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import hinge_sc as hs
    sys.path.insert(0, sys.argv[2])
    from conftest import synthetic_adata

    adata = synthetic_adata(n_spots=21)
    hs.HINGE.setup_anndata(adata, features_key="X_histology")
    bb = hs.Backbone.random([f"GENE{i}" for i in range(24)], d_model=16, n_layers=2, n_heads=2)
    model = hs.HINGE(adata, bb, diffusion_steps=6, seed=0)
    kwargs = dict(n_samples=2, n_steps=3, seed=11, batch_size=4, return_samples=True, show_progress_bar=False)
    shared = model.generate(adata, accelerator="cpu", devices=2, strategy="ddp", **kwargs)
    alone = model.generate(adata, **kwargs)
    import torch.distributed as dist
    rank = dist.get_rank()
    result = {"world_size": dist.get_world_size(), "max_diff": float(np.abs(shared.samples - alone.samples).max()),
              "index_equal": bool(shared.mean.index.equals(alone.mean.index)), "sum": float(shared.samples.sum())}
    with open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w") as f:
        json.dump(result, f)
    """
)


def test_generation_on_two_processes_equals_one(tmp_path):
    script = tmp_path / "generate_ddp.py"
    script.write_text(SCRIPT)
    src = os.path.dirname(os.path.dirname(hs.__file__))  # the hinge_sc under test, also in the subprocess
    path = os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "PYTHONPATH": path}
    here = os.path.dirname(__file__)
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path), here], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 for r in results)
    assert all(r["index_equal"] and r["max_diff"] < 1e-5 for r in results)
    assert results[0]["sum"] == results[1]["sum"]  # both ranks hold every spot
