from __future__ import annotations

import dataclasses
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


# ----------------------------------------------------------------- architectures and their registry (issue 22)
@dataclasses.dataclass(frozen=True)
class ToyConfig:
    d_model: int = 8
    n_layers: int = 1
    n_heads: int = 1
    mask_mechanism: str = "mask_emb"
    name: str = "toy"


class ToyLayer(torch.nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.lin = torch.nn.Linear(d, d)

    def forward(self, h, key_mask=None):
        return h + torch.tanh(self.lin(h))


class ToyBackbone(Backbone):
    """The smallest architecture: linear value encoder, residual tanh layers, linear decoder."""

    architecture = "toy"
    config_class = ToyConfig

    def __init__(self, genes, config=None):
        super().__init__(genes, config)
        d = self.config.d_model
        self.gene_emb = torch.nn.Parameter(torch.zeros(len(self.vocabulary) + 1, d))
        self.cls_token = torch.nn.Parameter(torch.zeros(d))
        self.mask_emb = torch.nn.Parameter(torch.zeros(d))
        self.value_enc = torch.nn.Linear(1, d)
        self.encoder = torch.nn.ModuleList(ToyLayer(d) for _ in range(self.config.n_layers))
        self.value_dec = torch.nn.Sequential(torch.nn.Linear(d, 1), torch.nn.Flatten(-2))

    def reset_parameters(self):
        for p in self.parameters():
            torch.nn.init.normal_(p, std=0.1)

    def embed_values(self, values, visible, mask_mechanism):
        v = self.value_enc(values.unsqueeze(-1))
        if visible is None:
            return v
        return torch.lerp(v, self.mask_emb.to(v.dtype), (1.0 - visible).unsqueeze(-1).to(v.dtype))

    def embed_genes(self, token_ids):
        return self.gene_emb[token_ids]

    def embed_cls(self, values, dtype):
        return self.cls_token.expand(values.shape[0], 1, -1).to(dtype)


@pytest.fixture
def toy_registered():
    from hinge_sc.nn import BACKBONES, register_backbone

    assert register_backbone(ToyBackbone) is ToyBackbone
    yield ToyBackbone
    BACKBONES.pop("toy")


def test_registry_holds_the_built_in_architectures():
    from hinge_sc.nn import BACKBONES, CellFMBackbone, ScGPTBackbone

    assert BACKBONES["cellfm"] is CellFMBackbone and BACKBONES["scgpt"] is ScGPTBackbone
    assert list(BACKBONES)[:2] == ["cellfm", "scgpt"]
    assert issubclass(CellFMBackbone, Backbone) and issubclass(ScGPTBackbone, Backbone)
    assert not issubclass(ScGPTBackbone, CellFMBackbone) and not issubclass(CellFMBackbone, ScGPTBackbone)


def test_both_architectures_are_backbones():
    cellfm = hs.Backbone.random(GENES, d_model=16, n_layers=1, n_heads=2)
    scgpt = hs.nn.ScGPTBackbone.random(GENES, d_model=16, n_layers=1, n_heads=2)
    assert isinstance(cellfm, hs.Backbone) and isinstance(scgpt, hs.Backbone)
    assert type(cellfm) is hs.nn.CellFMBackbone and type(scgpt) is hs.nn.ScGPTBackbone
    assert cellfm.architecture == "cellfm" and scgpt.architecture == "scgpt"


def test_base_class_builds_the_architecture_of_its_config():
    from hinge_sc.nn import CellFMBackbone, ScGPTBackbone, ScGPTConfig

    assert type(Backbone(GENES)) is CellFMBackbone
    assert type(Backbone(GENES, BackboneConfig(d_model=16, n_layers=1, n_heads=2))) is CellFMBackbone
    assert type(Backbone(GENES, config=ScGPTConfig(d_model=16, n_layers=1, n_heads=2))) is ScGPTBackbone
    with pytest.raises(TypeError, match="registered backbone architecture"):
        Backbone(GENES, {"d_model": 16})
    with pytest.raises(TypeError, match="must be a BackboneConfig"):
        CellFMBackbone(GENES, ScGPTConfig(d_model=16, n_layers=1, n_heads=2))


def test_random_on_a_sibling_class_builds_that_class():
    bb = hs.nn.ScGPTBackbone.random(GENES, d_model=16, n_layers=1, n_heads=2, seed=0)
    assert type(bb) is hs.nn.ScGPTBackbone and bb.config.name == "random-scgpt"
    assert hs.nn.CellFMBackbone.random(GENES, d_model=16, n_layers=1, n_heads=2).checksum() == hs.Backbone.random(
        GENES, d_model=16, n_layers=1, n_heads=2
    ).checksum()
    with pytest.raises(ValueError, match="`shape` names a published CellFM model"):
        hs.nn.ScGPTBackbone.random(GENES, shape="cellfm-80m")


def test_load_reads_the_architecture_the_file_names_on_any_class(tmp_path):
    scgpt = hs.nn.ScGPTBackbone.random(GENES, d_model=16, n_layers=1, n_heads=2).save(tmp_path / "s.pt")
    cellfm = hs.Backbone.random(GENES, d_model=16, n_layers=1, n_heads=2).save(tmp_path / "c.pt")
    assert type(hs.nn.CellFMBackbone.load(scgpt)) is hs.nn.ScGPTBackbone
    assert type(hs.nn.ScGPTBackbone.load(cellfm)) is hs.nn.CellFMBackbone


def test_file_without_architecture_loads_as_cellfm(tmp_path, backbone):
    """Files of the first format do not name their architecture: they are CellFM-style."""
    path = backbone.save(tmp_path / "bb.pt")
    payload = torch.load(path, weights_only=True)
    del payload["architecture"]
    torch.save(payload, tmp_path / "old.pt")
    loaded = hs.Backbone.load(tmp_path / "old.pt")
    assert type(loaded) is hs.nn.CellFMBackbone and loaded.checksum() == backbone.checksum()


def test_unknown_architecture_in_a_file_names_the_known_ones(tmp_path, backbone):
    path = backbone.save(tmp_path / "bb.pt")
    payload = torch.load(path, weights_only=True)
    payload["architecture"] = "geneformer"
    torch.save(payload, tmp_path / "other.pt")
    known = r"unknown backbone architecture 'geneformer' \(known: 'cellfm', 'scgpt'\)"
    with pytest.raises(ValueError, match=known) as err:
        hs.Backbone.load(tmp_path / "other.pt")
    assert "register_backbone" in str(err.value) and "other.pt" in str(err.value)
    assert not isinstance(err.value, hs.FileIntegrityError)  # the file is sound; its class is not registered
    payload["architecture"] = 3  # not a name at all: a corrupt file
    torch.save(payload, tmp_path / "corrupt.pt")
    with pytest.raises(hs.FileIntegrityError, match="unknown backbone architecture 3"):
        hs.Backbone.load(tmp_path / "corrupt.pt")


def test_registered_toy_architecture_round_trips(tmp_path, toy_registered):
    from hinge_sc.nn import BACKBONES

    assert BACKBONES["toy"] is ToyBackbone
    bb = ToyBackbone.random(GENES, d_model=8, n_layers=2, n_heads=1, seed=3).eval()
    assert bb.config == ToyConfig(d_model=8, n_layers=2, n_heads=1, name="random-toy")
    assert isinstance(bb, hs.Backbone) and type(Backbone(GENES, ToyConfig())) is ToyBackbone
    ids, _ = bb.token_ids(GENES[:6])
    x, vis = torch.randn(2, 6), torch.tensor([[1.0, 0, 1, 1, 0, 1]] * 2)
    assert bb.embed(x, ids, vis).shape == (2, 7, 8)
    loaded = hs.Backbone.load(bb.save(tmp_path / "toy.pt")).eval()
    assert type(loaded) is ToyBackbone and loaded.config == bb.config and loaded.checksum() == bb.checksum()
    torch.testing.assert_close(loaded(x, ids, vis), bb(x, ids, vis), rtol=0, atol=0)
    BACKBONES.pop("toy")
    with pytest.raises(ValueError, match=r"unknown backbone architecture 'toy' \(known: 'cellfm', 'scgpt'\)"):
        hs.Backbone.load(tmp_path / "toy.pt")
    BACKBONES["toy"] = ToyBackbone  # for the fixture's clean-up


def test_register_backbone_refuses_what_it_cannot_read_back(toy_registered):
    from hinge_sc.nn import BACKBONES, register_backbone

    assert register_backbone(ToyBackbone) is ToyBackbone  # the same class again: nothing changes

    class Other(ToyBackbone):
        pass

    with pytest.raises(ValueError, match="'toy' is already registered"):
        register_backbone(Other)
    assert register_backbone(Other, replace=True) is Other and BACKBONES["toy"] is Other
    with pytest.raises(TypeError, match="subclass of hinge_sc.Backbone"):
        register_backbone(torch.nn.Linear)
    with pytest.raises(TypeError, match="subclass of hinge_sc.Backbone"):
        register_backbone(Backbone)

    class Nameless(Backbone):
        config_class = ToyConfig

    with pytest.raises(TypeError, match="`architecture`"):
        register_backbone(Nameless)

    class NoConfig(Backbone):
        architecture = "noconfig"
        config_class = dict

    with pytest.raises(TypeError, match="`config_class` \\(a dataclass\\)"):
        register_backbone(NoConfig)
    assert "noconfig" not in BACKBONES


def test_pretraining_is_not_a_backbone_method():
    """The entry point to training sits above `nn` (`hs.pretrain_backbone`), so `nn` imports nothing above it."""
    from hinge_sc.train import pretrain_backbone

    assert not hasattr(hs.Backbone, "pretrain")
    assert hs.pretrain_backbone is pretrain_backbone and "pretrain_backbone" in hs.__all__
