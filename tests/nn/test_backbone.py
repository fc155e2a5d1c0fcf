from __future__ import annotations

import math

import pytest
import torch

import hinge_sc as hs
from hinge_sc.nn import CELLFM_SHAPES, Backbone, BackboneConfig, MultiHeadRetention, RetentionLayer, per_head_rms_norm
from hinge_sc.nn._retention import post_norm_residual

GENES = [f"GENE{i}" for i in range(40)]


@pytest.fixture
def backbone():
    bb = hs.Backbone.random(GENES, d_model=32, n_layers=4, n_heads=4, seed=0)
    return bb.eval()


def test_forward_shapes(backbone):
    ids, missing = backbone.token_ids(GENES[:10])
    assert missing == [] and ids.tolist() == list(range(1, 11))
    out = backbone(torch.randn(3, 10), ids, torch.ones(3, 10))
    assert out.shape == (3, 10) and out.dtype == torch.float32


def test_gene_table_padded_to_multiple_of_8(backbone):
    assert backbone.gene_emb.shape[0] % 8 == 0 and backbone.gene_emb.shape[0] >= len(GENES) + 1
    assert torch.all(backbone.gene_emb[0] == 0)


def test_token_ids_case_insensitive_and_missing(backbone):
    ids, missing = backbone.token_ids(["gene3", "GENE4", "NOPE"])
    assert ids.tolist() == [4, 5, 0]
    assert missing == ["NOPE"]


def test_retention_equals_quadratic_form():
    torch.manual_seed(0)
    ret = MultiHeadRetention(16, 4)
    x = torch.randn(2, 7, 16)
    b, n, h, dh = 2, 7, 4, 4
    q = torch.relu(ret.q_proj(x)).view(b, n, h, dh).transpose(1, 2) / 2
    k = torch.relu(ret.k_proj(x)).view(b, n, h, dh).transpose(1, 2) / 2
    v = ret.v_proj(x).view(b, n, h, dh).transpose(1, 2) / math.sqrt(n - 1)
    o = per_head_rms_norm((q @ k.transpose(-1, -2)) @ v).transpose(1, 2).reshape(b, n, 16)
    expected = ret.o_proj(o * torch.nn.functional.silu(ret.u_proj(x)))
    torch.testing.assert_close(ret(x), expected, rtol=1e-5, atol=1e-5)


def test_retention_with_key_mask_equals_masked_quadratic_form():
    torch.manual_seed(1)
    ret = MultiHeadRetention(16, 4)
    x, mask = torch.randn(2, 7, 16), torch.tensor([[1.0, 1, 0, 1, 0, 1, 1], [1.0, 0, 0, 1, 1, 1, 0]])
    b, n, h, dh = 2, 7, 4, 4
    m = mask[:, None, :, None]
    q = torch.relu(ret.q_proj(x)).view(b, n, h, dh).transpose(1, 2) / 2
    k = torch.relu(ret.k_proj(x)).view(b, n, h, dh).transpose(1, 2) / 2 * m
    v = ret.v_proj(x).view(b, n, h, dh).transpose(1, 2) / math.sqrt(n - 1) * m
    o = per_head_rms_norm((q @ k.transpose(-1, -2)) @ v).transpose(1, 2).reshape(b, n, 16)
    expected = ret.o_proj(o * torch.nn.functional.silu(ret.u_proj(x)))
    torch.testing.assert_close(ret(x, mask), expected, rtol=1e-5, atol=1e-5)


def test_fused_projections_respect_forward_hooks():
    """LoRA adds its update with forward hooks on the projections; the fused matmul must not bypass them."""
    torch.manual_seed(0)
    layer = RetentionLayer(16, 4, 32, layer_index=1, n_layers=2).eval()
    x = torch.randn(2, 5, 16)
    plain = layer(x)
    for lin in (layer.attn.k_proj, layer.ffn.v_proj):
        lin.register_forward_hook(lambda module, inputs, output: output * 2.0)
    hooked = layer(x)
    assert not torch.allclose(plain, hooked, atol=1e-4)


def test_post_norm_residual_is_deepnorm():
    torch.manual_seed(0)
    norm = torch.nn.LayerNorm(16, eps=1e-5)
    torch.nn.init.normal_(norm.weight)
    h, u, gate = torch.randn(3, 4, 16), torch.randn(3, 4, 16), torch.rand(3, 1, 16)
    for g in (gate, 0.7, 1.0):
        torch.testing.assert_close(post_norm_residual(norm, h, u, g, alpha=1.7), norm(1.7 * h + g * u))


def test_hidden_tokens_are_not_keys_in_first_half():
    torch.manual_seed(0)
    first = RetentionLayer(16, 4, 16, layer_index=0, n_layers=4).eval()
    second = RetentionLayer(16, 4, 16, layer_index=2, n_layers=4).eval()
    assert first.masks_hidden_keys and not second.masks_hidden_keys
    x = torch.randn(1, 6, 16)
    key_mask = torch.tensor([[1.0, 1, 0, 1, 0, 1]])
    x2 = x.clone()
    x2[:, [2, 4]] += 5.0  # change only the hidden tokens
    visible = key_mask.bool()[0]
    torch.testing.assert_close(first(x, key_mask)[:, visible], first(x2, key_mask)[:, visible])
    assert not torch.allclose(second(x, key_mask)[:, visible], second(x2, key_mask)[:, visible])


def test_mask_emb_ignores_hidden_values(backbone):
    ids, _ = backbone.token_ids(GENES[:12])
    x = torch.randn(2, 12)
    vis = torch.ones(2, 12)
    vis[:, 3:7] = 0
    x2 = x.clone()
    x2[:, 3:7] = torch.randn(2, 4)
    torch.testing.assert_close(backbone(x, ids, vis), backbone(x2, ids, vis))


def test_zero_emb_mechanism_uses_fill_values():
    bb = hs.Backbone.random(GENES, d_model=32, n_layers=2, n_heads=4, mask_mechanism="zero_emb").eval()
    ids, _ = bb.token_ids(GENES[:12])
    x = torch.randn(2, 12)
    vis = torch.ones(2, 12)
    vis[:, 3:7] = 0
    x2 = x.clone()
    x2[:, 3:7] += 1.0
    assert not torch.allclose(bb(x, ids, vis), bb(x2, ids, vis))


def test_negative_slope_default_is_cellfm():
    assert BackboneConfig().negative_slope == 0.2


def test_init_gains_use_own_depth():
    bb = hs.Backbone.random(GENES, d_model=64, n_layers=8, n_heads=4, seed=1)
    beta = (8 * 8) ** -0.25
    w = bb.encoder[0].attn.o_proj.weight
    assert w.std().item() == pytest.approx(beta * math.sqrt(2 / (64 + 64)), rel=0.1)
    assert bb.encoder[0].alpha == pytest.approx((2 * 8) ** 0.25)
    assert bb.encoder[0].dropout.p == 0 and bb.encoder[4].dropout.p == pytest.approx(0.1 * 4 / 8)


def test_random_is_seeded():
    a = hs.Backbone.random(GENES, d_model=16, n_layers=2, n_heads=2, seed=3)
    b = hs.Backbone.random(GENES, d_model=16, n_layers=2, n_heads=2, seed=3)
    assert a.checksum() == b.checksum()


@pytest.mark.parametrize("shape", sorted(CELLFM_SHAPES))
def test_cellfm_shapes_build(shape):
    # full-size shapes, built on the meta device (no memory) to check the parameter layout
    with torch.device("meta"):
        bb = Backbone(GENES, BackboneConfig(**CELLFM_SHAPES[shape]))
    assert bb.config.d_model == 1536 and bb.encoder[0].attn.n_heads == 48
    assert len(bb.encoder) == CELLFM_SHAPES[shape]["n_layers"]
    per_layer = sum(p.numel() for p in bb.encoder[0].parameters())
    assert per_layer == 8 * 1536 * 1536 + 4 * 1536


def test_cellfm_80m_shape_runs_forward():
    bb = hs.Backbone.random(GENES, shape="cellfm-80m").eval()
    ids, _ = bb.token_ids(GENES[:8])
    with torch.no_grad():
        assert bb(torch.randn(1, 8), ids).shape == (1, 8)


def test_save_load_roundtrip(tmp_path, backbone):
    path = backbone.save(tmp_path / "bb.pt")
    loaded = hs.Backbone.load(path).eval()
    assert loaded.genes == backbone.genes and loaded.config == backbone.config
    assert loaded.checksum() == backbone.checksum()
    ids, _ = backbone.token_ids(GENES[:5])
    x = torch.randn(2, 5)
    torch.testing.assert_close(loaded(x, ids), backbone(x, ids), rtol=0, atol=0)
    with pytest.raises(FileExistsError, match="overwrite"):
        backbone.save(path)


def test_load_rejects_other_files(tmp_path):
    torch.save({"a": 1}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a hinge_sc backbone"):
        hs.Backbone.load(tmp_path / "x.pt")
    with pytest.raises(FileNotFoundError, match="Backbone.save"):
        hs.Backbone.load(tmp_path / "missing.pt")


@pytest.mark.parametrize(("genes", "match"), [([], "empty"), (["A", "A"], "duplicate")])
def test_bad_vocabulary(genes, match):
    with pytest.raises(ValueError, match=match):
        Backbone(genes)


def test_heads_must_divide_width():
    with pytest.raises(ValueError, match="divisible"):
        hs.Backbone.random(GENES, d_model=30, n_layers=1, n_heads=4)
