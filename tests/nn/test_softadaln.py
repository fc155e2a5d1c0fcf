from __future__ import annotations

import math

import pytest
import torch

import hinge_sc as hs
from hinge_sc.nn import AdaptedBackbone, ConditionEmbedding, ModulationHead, SoftNorm, timestep_embedding

GENES = [f"G{i}" for i in range(30)]


def _adapted(head_rank=None, conditioning="sum", readout=False):
    bb = hs.Backbone.random(GENES, d_model=32, n_layers=4, n_heads=4, seed=0)
    return AdaptedBackbone(bb, n_features=12, n_genes=20, conditioning=conditioning, head_rank=head_rank,
                           readout=readout).eval()  # fmt: skip


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 20, generator=g)
    vis = (torch.rand(3, 20, generator=g) > 0.4).float()
    c = torch.randn(3, 32, generator=g)
    return x, vis, c


def _force_identity(model):
    with torch.no_grad():
        for layer in model.layers:
            d = layer.norm1.d_model
            layer.head.up.bias[2 * d : 3 * d] = 1e4  # gate -> exactly 1
            layer.head.up.bias[5 * d : 6 * d] = 1e4
            layer.norm1.b.fill_(-1e4)  # lambda -> exactly 0
            layer.norm2.b.fill_(-1e4)
        model.final.norm.b.fill_(-1e4)


@pytest.mark.parametrize(("head_rank", "readout"), [(None, False), (8, False), (None, True)])
def test_identity_with_gates_forced_to_one(head_rank, readout):
    model = _adapted(head_rank, readout=readout)
    _force_identity(model)
    x, vis, c = _inputs()
    ids, _ = model.backbone.token_ids(GENES[:20])
    torch.testing.assert_close(model(x, vis, c, ids)["mean"], model.backbone(x, ids, vis), rtol=1e-5, atol=1e-5)


def test_default_init_differs_only_through_gate():
    model = _adapted()
    x, vis, c = _inputs()
    ids, _ = model.backbone.token_ids(GENES[:20])
    plain = model.backbone(x, ids, vis)
    adapted = model(x, vis, c, ids)["mean"]
    diff = (adapted - plain).abs().max().item()
    assert 0 < diff < 0.05 * plain.abs().max().item()
    # the condition has no effect at initialisation: modulation heads output zeros
    c2 = torch.randn_like(c)
    torch.testing.assert_close(model(x, vis, c2, ids)["mean"], adapted)


def test_readout_adds_a_per_gene_linear_term_of_the_condition():
    model = _adapted(readout=True)
    x, vis, c = _inputs()
    ids, _ = model.backbone.token_ids(GENES[:20])
    before = model(x, vis, c, ids)["mean"]
    with torch.no_grad():
        model.readout.weight[3, 0] = 2.0
        model.readout.bias[5] = -1.0
    after = model(x, vis, c, ids)["mean"]
    expected = before.clone()
    expected[:, 3] += 2.0 * c[:, 0]
    expected[:, 5] -= 1.0
    torch.testing.assert_close(after, expected)
    genes = torch.tensor([[3, 5], [5, 0], [0, 3]])
    torch.testing.assert_close(model.readout_values(c, genes), torch.gather(model.readout(c), 1, genes))
    assert model.trainable_parameters()["readout"] == 20 * 32 + 20


def test_head_init():
    head = ModulationHead(16, 6, gate_chunks=(2, 5))
    assert torch.all(head.up.weight == 0)
    bias = head.up.bias.view(6, 16)
    assert torch.all(bias[[0, 1, 3, 4]] == 0) and torch.all(bias[[2, 5]] == 6)
    assert torch.sigmoid(torch.tensor(6.0)).item() == pytest.approx(0.9975, abs=1e-4)
    with pytest.raises(ValueError, match="head_rank"):
        ModulationHead(16, 6, rank=16)


def test_softnorm_starts_near_identity():
    norm = SoftNorm(8)
    assert norm.weight.item() == pytest.approx(1 / (1 + math.exp(12)))
    h = torch.randn(2, 3, 8) * 5 + 2
    assert (norm(h) - h).abs().max() < 1e-3


def test_backbone_is_frozen_and_heads_train():
    model = _adapted()
    assert not any(p.requires_grad for p in model.backbone.parameters())
    trainable = model.trainable_parameters()
    assert trainable["softadaln_layers"] == 4 * (2 + 32 * 6 * 32 + 6 * 32)
    assert trainable["final"] == 1 + 32 * 2 * 32 + 2 * 32


def test_timestep_embedding_cosines_first():
    e = timestep_embedding(torch.tensor([0, 3]), dim=8)
    assert e.shape == (2, 8)
    torch.testing.assert_close(e[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    assert e[1, 0].item() == pytest.approx(math.cos(3.0))


@pytest.mark.parametrize("mode", ["sum", "concat"])
def test_condition_shapes(mode):
    cond = ConditionEmbedding(12, 20, 32, mode=mode)
    c = cond(torch.tensor([1, 5, 9]), torch.randn(3, 12), torch.ones(3, 20))
    assert c.shape == (3, 32)
    assert all(torch.all(m.bias == 0) for m in cond.modules() if isinstance(m, torch.nn.Linear))


def test_condition_mode_checked():
    with pytest.raises(ValueError, match="conditioning"):
        ConditionEmbedding(4, 4, 8, mode="product")


def test_mask_mechanism_override_is_used():
    bb = hs.Backbone.random(GENES, d_model=32, n_layers=2, n_heads=4, seed=0)
    default = AdaptedBackbone(bb, 12, 20).eval()
    other = AdaptedBackbone(bb, 12, 20, mask_mechanism="zero_emb").eval()
    assert default.mask_mechanism == "mask_emb" and other.mask_mechanism == "zero_emb"
    x, vis, c = _inputs()
    ids, _ = bb.token_ids(GENES[:20])
    assert not torch.allclose(default(x, vis, c, ids)["mean"], other(x, vis, c, ids)["mean"])
    with pytest.raises(ValueError, match="mask_mechanism"):
        AdaptedBackbone(bb, 12, 20, mask_mechanism="replace")
