from __future__ import annotations

import re

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import hinge_sc as hs
from hinge_sc.train._pretrain import masked_reconstruction_error, sample_tokens

from ..conftest import DATA_DIR


@pytest.mark.parametrize(("n_expressed", "n_genes", "n_tokens"), [(500, 1000, 64), (10, 1000, 64), (990, 1000, 64), (5, 20, 64)])
def test_sample_tokens(n_expressed, n_genes, n_tokens):
    rng = np.random.default_rng(0)
    cols = np.sort(rng.choice(n_genes, n_expressed, replace=False))
    chosen = sample_tokens(cols, n_genes, n_tokens, rng)
    assert len(chosen) == min(n_tokens, n_genes) == len(set(chosen))
    n_zero = (~np.isin(chosen, cols)).sum()
    assert n_zero >= min(n_tokens // 4, n_genes - n_expressed)  # zeros are shown too
    assert len(chosen) - n_zero == min(n_expressed, len(chosen) - min(n_tokens // 4, n_genes - n_expressed))


@pytest.fixture(scope="module")
def count_only_section():
    """Real count-only spots (her2st H3, no image): the pre-training data of the paper's setting."""
    path = DATA_DIR / "her2st" / "counts" / "H3.tsv.gz"
    df = pd.read_csv(path, sep="\t", index_col=0)
    df = df.loc[:, df.sum() > 0]
    top = df.sum().sort_values(ascending=False).index[:300]  # keep the test small
    adata = ad.AnnData(sp.csr_matrix(df[top].to_numpy(np.float32)))
    adata.var_names = list(top)
    return adata


def test_pretrain_on_real_counts(count_only_section, tmp_path):
    adata = count_only_section
    bb = hs.pretrain_backbone(
        adata, d_model=32, n_layers=2, n_heads=4, n_tokens=64, max_epochs=4, batch_size=32, accelerator="cpu",
        show_progress_bar=False, checkpoint_dir=str(tmp_path / "ckpt"),
    )
    info = bb.provenance.pretraining
    assert info.n_spots == adata.n_obs and info.n_genes == 300 and len(info.history) == 4
    val = [row["validation_loss"] for row in info.history]
    assert min(val[1:]) < val[0]
    assert (tmp_path / "ckpt" / "last.ckpt").is_file()
    assert not bb.training
    # the prior beats imputing the gene mean on masked values of spots it did not see
    held_out = adata[-60:]
    x = np.log2(adata[:-60].X.toarray() + 1)
    ids, _ = bb.token_ids(list(adata.var_names))
    err = masked_reconstruction_error(bb, held_out.X.tocsr(), ids.numpy(), x.mean(0), n_tokens=64)
    assert err["mse_backbone"] < err["mse_mean_imputation"]
    loaded = hs.Backbone.load(bb.save(tmp_path / "bb.pt"))
    assert loaded.provenance == bb.provenance
    with pytest.warns(FutureWarning, match=r"`Backbone.meta` is deprecated.*`Backbone.provenance`"):
        assert loaded.meta["pretraining"]["history"] == info.history


def test_pretrain_vocabulary_and_errors(count_only_section):
    genes = list(count_only_section.var_names[:50])
    with pytest.warns(UserWarning, match="10 of 50 genes are not in the backbone vocabulary"):
        bb = hs.pretrain_backbone(
            count_only_section, genes=genes, vocabulary=genes[10:] + ["EXTRA"], d_model=16, n_layers=2, n_heads=2,
            n_tokens=16, max_epochs=1, accelerator="cpu", show_progress_bar=False,
        )
    assert bb.genes == genes[10:] + ["EXTRA"] and bb.provenance.pretraining.n_genes == 40
    # "EXTRA" is in the vocabulary but was never pre-trained: reported, warned about, kept out of panels
    assert bb.unseen_in_pretraining(["EXTRA", genes[10], genes[0]]) == ["EXTRA"]
    assert hs.Backbone.random(genes, d_model=16, n_layers=1, n_heads=2).unseen_in_pretraining(genes) == []
    rng = np.random.default_rng(0)
    adata = ad.AnnData(sp.csr_matrix(rng.poisson(3.0, size=(40, 11)).astype(np.float32)))
    adata.var_names = genes[10:20] + ["EXTRA"]
    adata.obsm["X_histology"] = rng.normal(size=(40, 4)).astype(np.float32)
    hs.HINGE.setup_anndata(adata)
    with pytest.warns(UserWarning, match=r"1 panel genes are in the backbone vocabulary but not in its pre-training"):
        model = hs.HINGE(adata, bb)
    assert "EXTRA" in model.panel_genes_  # kept (the user chose it), but reported
    with pytest.warns(UserWarning, match="not in its pre-training data"):
        panel = hs.pp.select_genes(adata, n_genes=11, method="highly_expressed", section_key=None, vocabulary=bb)
    assert "EXTRA" not in panel and len(panel) == 10
    with pytest.raises(KeyError, match="not in `adata.var_names`"):
        hs.pretrain_backbone(count_only_section, genes=["NOPE"], max_epochs=1)
    with pytest.raises(ValueError, match="mask_ratio"):
        hs.pretrain_backbone(count_only_section, d_model=16, n_layers=1, n_heads=2, mask_ratio=1.5, max_epochs=1)


def test_hinge_warns_on_scale_mismatch(count_only_section):
    bb = hs.Backbone.random(list(count_only_section.var_names), d_model=16, n_layers=2, n_heads=2)
    bb.provenance.target_scale = "log1p_cp10k"
    adata = count_only_section.copy()
    adata.obsm["X_histology"] = np.random.default_rng(0).normal(size=(adata.n_obs, 4)).astype(np.float32)
    hs.HINGE.setup_anndata(adata)
    with pytest.warns(UserWarning, match="pre-trained on the 'log1p_cp10k' scale"):
        hs.HINGE(adata, bb)


def test_pretrain_prints_one_line_per_epoch_in_a_log_file(count_only_section, capsys):
    # stderr is captured (not a TTY), as when it goes to a log file: one line per epoch instead of a progress bar
    hs.pretrain_backbone(
        count_only_section[:80], d_model=16, n_layers=1, n_heads=2, n_tokens=16, max_epochs=2, batch_size=32,
        accelerator="cpu",
    )  # fmt: skip
    err = capsys.readouterr().err
    assert re.search(r"^Epoch 1/2: train_loss [\d.]+ · validation_loss [\d.]+ · [\d.]+ s$", err, re.M), err
    assert re.search(r"^Epoch 2/2: ", err, re.M) and "\r" not in err and "Tip" not in err


def test_progress_choice():
    import io

    from hinge_sc.train._progress import format_epoch, use_epoch_lines

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert use_epoch_lines(True, io.StringIO()) and not use_epoch_lines(True, Terminal())
    assert not use_epoch_lines(False, io.StringIO())
    line = format_epoch(3, 20, {"train_loss": 1.5, "validation_loss": 2.0, "t_max": 17.0}, 2.44, 50)
    assert line == "Epoch 3/20: train_loss 1.5 (t ≤ 17 of 50) · validation_loss 2 (uniform t) · 2.4 s"

def test_pretrain_scgpt_shaped_prior(count_only_section, tmp_path):
    adata = count_only_section
    bb = hs.pretrain_backbone(
        adata, architecture="scgpt", d_model=16, n_layers=1, n_heads=2, n_tokens=32, max_epochs=3, batch_size=32,
        lr=3e-3, accelerator="cpu", show_progress_bar=False,
    )  # fmt: skip
    assert isinstance(bb, hs.nn.ScGPTBackbone) and bb.config.name == "hinge_sc-pretrained-scgpt"
    assert bb.config.attention_dropout == 0.0 and bb.config.hidden_token == "flag"
    val = [row["validation_loss"] for row in bb.provenance.pretraining.history]
    assert len(val) == 3 and min(val[1:]) < val[0]
    loaded = hs.Backbone.load(bb.save(tmp_path / "bb.pt"))
    assert isinstance(loaded, hs.nn.ScGPTBackbone) and loaded.checksum() == bb.checksum()
    with pytest.raises(ValueError, match="`architecture` must be one of"):
        hs.pretrain_backbone(adata, architecture="nope", max_epochs=1)
