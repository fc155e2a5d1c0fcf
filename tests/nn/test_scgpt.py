"""scGPT checkpoints as HINGE backbones (issue 15).

The folder reader, the forward pass against a plain-torch reference of scGPT's, identity initialisation under
SoftAdaLN, and HINGE on real her2st spots.
"""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hinge_sc as hs
from hinge_sc.nn import AdaptedBackbone, ScGPTBackbone

from ..conftest import DATA_DIR

GENES = ["CD3E", "MS4A1", "EPCAM", "ERBB2", "SEPTIN7", "KRT19", "PTPRC", "ACTB", "GAPDH", "VIM"]
D, LAYERS, HEADS, D_HID = 16, 2, 4, 24


# ----------------------------------------------------------------- an scGPT folder written in scGPT's own naming
def scgpt_state(vocab_size: int, *, naming="flash", style="continuous", n_bins=7, flag=True, seed=0, d=D):
    """Draw a random state dict with the keys scGPT's ``TransformerModel`` saves (heads HINGE does not use included)."""
    g = torch.Generator().manual_seed(seed)

    def t(*shape):
        return torch.randn(*shape, generator=g) * 0.3

    state = {"encoder.embedding.weight": t(vocab_size, d), "encoder.enc_norm.weight": 1 + t(d),
             "encoder.enc_norm.bias": t(d)}  # fmt: skip
    if style == "continuous":
        state |= {"value_encoder.linear1.weight": t(d, 1), "value_encoder.linear1.bias": t(d),
                  "value_encoder.linear2.weight": t(d, d), "value_encoder.linear2.bias": t(d),
                  "value_encoder.norm.weight": 1 + t(d), "value_encoder.norm.bias": t(d)}  # fmt: skip
    else:
        state |= {"value_encoder.embedding.weight": t(n_bins, d), "value_encoder.enc_norm.weight": 1 + t(d),
                  "value_encoder.enc_norm.bias": t(d)}  # fmt: skip
    if flag:
        state["flag_encoder.weight"] = t(2, d)
    qkv = {
        "plain": ("self_attn.in_proj_weight", "self_attn.in_proj_bias", "self_attn.out_proj."),
        "flash": ("self_attn.Wqkv.weight", "self_attn.Wqkv.bias", "self_attn.out_proj."),
        "wrapped": ("self_attn._impl.Wqkv.weight", "self_attn._impl.Wqkv.bias", "self_attn._impl.out_proj."),
    }[naming]
    for i in range(LAYERS):
        p = f"transformer_encoder.layers.{i}."
        state |= {p + qkv[0]: t(3 * d, d), p + qkv[1]: t(3 * d), p + qkv[2] + "weight": t(d, d),
                  p + qkv[2] + "bias": t(d), p + "linear1.weight": t(D_HID, d), p + "linear1.bias": t(D_HID),
                  p + "linear2.weight": t(d, D_HID), p + "linear2.bias": t(d), p + "norm1.weight": 1 + t(d),
                  p + "norm1.bias": t(d), p + "norm2.weight": 1 + t(d), p + "norm2.bias": t(d)}  # fmt: skip
    state |= {"decoder.fc.0.weight": t(d, d), "decoder.fc.0.bias": t(d), "decoder.fc.2.weight": t(d, d),
              "decoder.fc.2.bias": t(d), "decoder.fc.4.weight": t(1, d), "decoder.fc.4.bias": t(1),
              "mvc_decoder.gene2query.weight": t(d, d), "mvc_decoder.gene2query.bias": t(d),
              "mvc_decoder.W.weight": t(d, d)}  # fmt: skip
    return state


def write_scgpt(folder, genes=GENES, *, specials_first=False, state=None, args=None, **state_kwargs):
    """Write ``best_model.pt``, ``vocab.json`` and ``args.json`` as scGPT publishes them; return state, vocab, args."""
    folder.mkdir(parents=True, exist_ok=True)
    specials = ["<pad>", "<cls>", "<eoc>"]
    tokens = specials + list(genes) if specials_first else list(genes) + specials
    vocab = {tok: i for i, tok in enumerate(tokens)}
    style = state_kwargs.get("style", "continuous")
    settings = {"embsize": D, "nlayers": LAYERS, "nheads": HEADS, "d_hid": D_HID, "dropout": 0.2, "n_bins": 5,
                "input_style": "binned", "input_emb_style": style, "pad_token": "<pad>", "mask_value": -1,
                "pad_value": -2, "fast_transformer": True, "MVC": True}  # fmt: skip
    if style == "category":
        settings |= {"pad_value": 5, "mask_value": 6}
    settings |= args or {}
    state = scgpt_state(len(vocab), **state_kwargs) if state is None else state
    torch.save(state, folder / "best_model.pt")
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "args.json").write_text(json.dumps(settings))
    return state, vocab, settings


# ----------------------------------------------------------------- scGPT's forward, in plain torch
def reference_forward(state, vocab, settings, genes, values, visible):
    """Run scGPT's ``TransformerModel`` forward (post-LN ``nn.TransformerEncoderLayer``s), generative masking.

    A hidden gene is its gene embedding + ``flag_encoder(1)`` and no other token attends to it.
    """
    d, style = settings["embsize"], settings["input_emb_style"]
    s = {
        re.sub(r"self_attn\.(_impl\.)?Wqkv\.", "self_attn.in_proj_", k).replace("_impl.", ""): v
        for k, v in state.items()
    }  # the flash names → nn.MultiheadAttention's, as scGPT's own loader does

    def gene_encoder(ids):
        return F.layer_norm(
            s["encoder.embedding.weight"][ids], (d,), s["encoder.enc_norm.weight"], s["encoder.enc_norm.bias"]
        )

    def value_encoder(x):
        if style == "category":
            return F.layer_norm(s["value_encoder.embedding.weight"][x.long()], (d,), s["value_encoder.enc_norm.weight"],
                                s["value_encoder.enc_norm.bias"])  # fmt: skip
        h = F.relu(
            F.linear(x.unsqueeze(-1).clamp(max=512), s["value_encoder.linear1.weight"], s["value_encoder.linear1.bias"])
        )
        h = F.linear(h, s["value_encoder.linear2.weight"], s["value_encoder.linear2.bias"])
        return F.layer_norm(h, (d,), s["value_encoder.norm.weight"], s["value_encoder.norm.bias"])

    b = values.shape[0]
    ids = torch.tensor([vocab["<cls>"]] + [vocab[g] for g in genes])
    vals = torch.cat([torch.full((b, 1), float(settings["pad_value"])), values], dim=1)
    total = gene_encoder(ids)[None] + value_encoder(vals)
    keep = torch.cat([torch.ones(b, 1, dtype=torch.bool), visible.bool()], dim=1)
    flag_token = gene_encoder(ids)[None].expand(b, -1, -1) + s["flag_encoder.weight"][1]
    total = torch.where(keep[..., None], total, flag_token)
    n = total.shape[1]
    allowed = keep[:, None, :] | torch.eye(n, dtype=torch.bool)
    src_mask = (~allowed).repeat_interleave(settings["nheads"], dim=0)  # (B·H, N, N), True = not attended
    h = total
    for i in range(settings["nlayers"]):
        layer = nn.TransformerEncoderLayer(
            d, settings["nheads"], settings["d_hid"], settings["dropout"], batch_first=True
        )
        prefix = f"transformer_encoder.layers.{i}."
        layer.load_state_dict({k[len(prefix) :]: v for k, v in s.items() if k.startswith(prefix)})
        h = layer.eval()(h, src_mask=src_mask)
    fc = nn.Sequential(nn.Linear(d, d), nn.LeakyReLU(), nn.Linear(d, d), nn.LeakyReLU(), nn.Linear(d, 1))
    fc.load_state_dict({k[len("decoder.fc.") :]: v for k, v in s.items() if k.startswith("decoder.fc.")})
    return fc(h[:, 1:]).squeeze(-1)


def _inputs(n_genes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    values = torch.rand(3, n_genes, generator=g) * 4
    visible = (torch.rand(3, n_genes, generator=g) > 0.4).float()
    return values, visible


# ----------------------------------------------------------------- tests
@pytest.mark.parametrize("naming", ["plain", "flash", "wrapped"])
@pytest.mark.parametrize("specials_first", [False, True])
def test_every_tensor_loads_exactly(tmp_path, naming, specials_first):
    state, vocab, _ = write_scgpt(tmp_path / "m", naming=naming, specials_first=specials_first)
    bb = hs.Backbone.from_scgpt(tmp_path / "m")
    assert isinstance(bb, ScGPTBackbone) and bb.genes == GENES
    assert (bb.config.d_model, bb.config.n_layers, bb.config.n_heads, bb.config.ffn_width) == (D, LAYERS, HEADS, D_HID)
    params = dict(bb.named_parameters())
    table = state["encoder.embedding.weight"]
    assert torch.equal(params["gene_emb"], table[[vocab["<pad>"]] + [vocab[g] for g in GENES]])
    assert torch.equal(params["cls_token"], table[vocab["<cls>"]])
    from hinge_sc.nn._scgpt_checkpoint import backbone_name

    used = {backbone_name(k): k for k in state if backbone_name(k) is not None}
    assert set(used) | {"cls_token"} == set(params)  # every parameter comes from the file
    for name, key in used.items():
        if name != "gene_emb":
            assert torch.equal(params[name], state[key]), key


@pytest.mark.parametrize("style", ["continuous", "category"])
def test_forward_equals_reference_scgpt(tmp_path, style):
    state, vocab, settings = write_scgpt(tmp_path / "m", naming="plain", style=style)
    bb = hs.Backbone.from_scgpt(tmp_path / "m").eval()
    genes = ["ERBB2", "CD3E", "VIM", "ACTB", "KRT19", "EPCAM"]
    values, visible = _inputs(len(genes))
    if style == "category":
        values = values.round()
    ids, _ = bb.token_ids(genes)
    with torch.no_grad():
        expected = reference_forward(state, vocab, settings, genes, values, visible)
        torch.testing.assert_close(bb(values, ids, visible), expected, rtol=1e-5, atol=1e-5)
        all_visible = reference_forward(state, vocab, settings, genes, values, torch.ones_like(visible))
        torch.testing.assert_close(bb(values, ids, torch.ones_like(visible)), all_visible, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(bb(values, ids), all_visible, rtol=1e-5, atol=1e-5)


def test_hidden_genes_cannot_be_seen(tmp_path):
    """Changing a hidden gene's value changes nothing; changing a visible one changes the others' outputs."""
    write_scgpt(tmp_path / "m")
    bb = hs.Backbone.from_scgpt(tmp_path / "m").eval()
    ids, _ = bb.token_ids(GENES)
    values, visible = _inputs()
    visible[:, 0], visible[:, 1] = 0.0, 1.0
    with torch.no_grad():
        base = bb(values, ids, visible)
        hidden_changed, visible_changed = values.clone(), values.clone()
        hidden_changed[:, 0] += 3.0
        visible_changed[:, 1] += 3.0
        torch.testing.assert_close(bb(hidden_changed, ids, visible), base)
        assert not torch.allclose(bb(visible_changed, ids, visible)[:, 2:], base[:, 2:])


def test_identity_init_through_adapted_backbone(tmp_path):
    write_scgpt(tmp_path / "m")
    bb = hs.Backbone.from_scgpt(tmp_path / "m")
    model = AdaptedBackbone(bb, n_features=8, n_genes=len(GENES)).eval()
    with torch.no_grad():
        for layer in model.layers:
            layer.head.up.bias[2 * D : 3 * D] = 1e4  # gates -> exactly 1
            layer.head.up.bias[5 * D : 6 * D] = 1e4
            layer.norm1.b.fill_(-1e4)  # SoftNorm lambda -> exactly 0
            layer.norm2.b.fill_(-1e4)
        model.final.norm.b.fill_(-1e4)
        ids, _ = bb.token_ids(GENES)
        values, visible = _inputs()
        c = torch.randn(3, D)
        torch.testing.assert_close(model(values, visible, c, ids)["mean"], bb(values, ids, visible), rtol=1e-5, atol=1e-5)
    assert not any(p.requires_grad for p in bb.parameters())
    lora = AdaptedBackbone(bb, n_features=8, n_genes=len(GENES), lora_rank=2)  # LoRA wraps the linear children
    assert len(lora.lora) == LAYERS * 4


def test_gene_matching_and_special_tokens(tmp_path):
    write_scgpt(tmp_path / "m", specials_first=True)
    bb = hs.Backbone.from_scgpt(tmp_path / "m")
    with pytest.warns(UserWarning, match="same vocabulary token"):  # ERBB2 and erbb2
        ids, report = bb.match_genes(["ERBB2", "erbb2", "SEPT7", "<pad>", "<cls>", "<eoc>", "NOPE"])
    assert report["match"].tolist() == ["exact", "case", "alias", "none", "none", "none", "none"]
    assert ids[0] == ids[1] == bb.genes.index("ERBB2") + 1 and ids[2] == bb.genes.index("SEPTIN7") + 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda s: s.pop("transformer_encoder.layers.1.linear2.weight"),
            r"missing \(1\): transformer_encoder\.layers\.1\.linear2\.weight \(expected \(16, 24\)\)",
        ),
        (
            lambda s: s.__setitem__("batch_encoder.embedding.weight", torch.zeros(3, D)),
            r"unexpected \(1\): batch_encoder\.embedding\.weight",
        ),
        (
            lambda s: s.__setitem__("transformer_encoder.layers.0.linear1.weight", torch.zeros(32, D)),
            r"mis-shaped \(1\): transformer_encoder\.layers\.0\.linear1\.weight: expected \(24, 16\), found \(32, 16\)",
        ),
        (
            lambda s: s.__setitem__("encoder.embedding.weight", torch.zeros(len(GENES) + 2, D)),
            r"encoder\.embedding\.weight: expected \(13, 16\), found \(12, 16\)",
        ),
    ],
)
def test_one_precise_error(tmp_path, change, message):
    state = scgpt_state(len(GENES) + 3)
    change(state)
    write_scgpt(tmp_path / "m", state=state)
    with pytest.raises(ValueError, match=message):
        hs.Backbone.from_scgpt(tmp_path / "m")


def test_unused_heads_skipped_and_ignore(tmp_path):
    state = scgpt_state(len(GENES) + 3)
    state["cls_decoder.out_layer.weight"] = torch.zeros(1, D)
    state["extra.thing"] = torch.zeros(2)
    write_scgpt(tmp_path / "m", state=state)
    with pytest.raises(ValueError, match=r"unexpected \(1\): extra\.thing"):
        hs.Backbone.from_scgpt(tmp_path / "m")
    assert isinstance(hs.Backbone.from_scgpt(tmp_path / "m", ignore=("extra.",)), ScGPTBackbone)


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="No scGPT model folder"):
        hs.Backbone.from_scgpt(tmp_path / "absent")
    write_scgpt(tmp_path / "m")
    (tmp_path / "m" / "args.json").write_text(json.dumps({"embsize": D, "nlayers": LAYERS, "nheads": HEADS,
                                                          "d_hid": D_HID, "pre_norm": True}))  # fmt: skip
    with pytest.raises(ValueError, match="pre-LayerNorm"):
        hs.Backbone.from_scgpt(tmp_path / "m")
    write_scgpt(tmp_path / "p")
    (tmp_path / "p" / "best_model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(hs.FileIntegrityError, match=r"best_model\.pt"):
        hs.Backbone.from_scgpt(tmp_path / "p")


def test_mask_value_variant_without_flag_encoder(tmp_path):
    """A checkpoint without ``flag_encoder`` hides genes with the value embedding of ``mask_value``."""
    write_scgpt(tmp_path / "m", flag=False)
    bb = hs.Backbone.from_scgpt(tmp_path / "m").eval()
    assert bb.config.hidden_token == "mask_value" and bb.flag_emb is None
    ids, _ = bb.token_ids(GENES)
    values, visible = _inputs()
    masked = torch.where(visible.bool(), values, torch.full_like(values, -1.0))
    with torch.no_grad():  # hidden = the value -1 (scGPT's mask_value), and hidden keys removed
        torch.testing.assert_close(bb.embed(values, ids, visible), bb.embed(masked, ids, None))


def test_save_load_and_from_pretrained_cache(tmp_path, monkeypatch):
    write_scgpt(tmp_path / "cache" / "scgpt-human")
    bb = hs.Backbone.from_pretrained("scgpt-human", cache_dir=tmp_path / "cache")  # found in the cache: no network
    assert isinstance(bb, ScGPTBackbone) and bb.config.name == "scgpt-human"
    loaded = hs.Backbone.load(bb.save(tmp_path / "bb.pt"))
    assert isinstance(loaded, ScGPTBackbone) and loaded.checksum() == bb.checksum()
    assert loaded.provenance.checkpoint.format == "scgpt"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(ConnectionError, match=r"from_scgpt\("):
        hs.Backbone.from_pretrained("scgpt-human", cache_dir=tmp_path / "empty")
    assert time.perf_counter() - t0 < 5


def test_random_and_pretrained_scgpt_shape():
    bb = ScGPTBackbone.random(GENES, d_model=16, n_layers=2, n_heads=4, seed=3)
    assert torch.equal(bb.gene_emb, ScGPTBackbone.random(GENES, d_model=16, n_layers=2, n_heads=4, seed=3).gene_emb)
    assert bb.gene_emb.abs().max() <= 0.1
    with pytest.raises(ValueError, match="divisible"):
        ScGPTBackbone.random(GENES, d_model=10, n_heads=4)


def test_hinge_trains_and_generates_on_her2st(tmp_path, her2st_c):
    """The real scGPT vocabulary (60,697 tokens), a tiny checkpoint: HINGE trains one epoch and generates."""
    vocab = json.loads((DATA_DIR / "vocab" / "scgpt" / "vocab.json").read_text())
    folder = tmp_path / "m"
    folder.mkdir()
    settings = json.loads((DATA_DIR / "vocab" / "scgpt" / "args.json").read_text())
    settings |= {"embsize": D, "nlayers": LAYERS, "nheads": HEADS, "d_hid": D_HID}
    torch.save(scgpt_state(len(vocab)), folder / "best_model.pt")
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "args.json").write_text(json.dumps(settings))
    bb = hs.Backbone.from_scgpt(folder)
    assert len(bb.genes) == len(vocab) - 3
    adata = her2st_c[:64].copy()
    hs.pp.histology_features(adata, views=1, show_progress_bar=False)
    train, test = adata[:48].copy(), adata[48:].copy()
    panel = hs.pp.select_genes(train, n_genes=20, section_key=None, vocabulary=bb)
    hs.HINGE.setup_anndata(train, features_key="X_histology")
    model = hs.HINGE(train, bb, genes=panel, diffusion_steps=10)
    frozen = {k: v.clone() for k, v in bb.state_dict().items()}
    model.train(max_epochs=1, batch_size=16, warmup_epochs=0, accelerator="cpu", show_progress_bar=False)
    assert all(torch.equal(frozen[k], v) for k, v in bb.state_dict().items())
    hs.tl.generate(model, test, n_samples=2, n_steps=4, seed=0, show_progress_bar=False)
    assert test.obsm["hinge"].shape == (test.n_obs, 20) and np.isfinite(test.obsm["hinge"].to_numpy()).all()
    model.save(tmp_path / "model")
    again = hs.HINGE.load(tmp_path / "model", adata=train)
    assert isinstance(again.module.backbone, ScGPTBackbone)
