from __future__ import annotations

import pytest
import torch

import hinge_sc as hs
from hinge_sc._constants import MODULE_KEYS
from hinge_sc.module import HINGEModule, expression_target

GENES = [f"G{i}" for i in range(60)]


def _module(n_genes=50, n_steps=10, **kwargs):
    bb = hs.Backbone.random(GENES, d_model=16, n_layers=2, n_heads=2, seed=0)
    ids, _ = bb.token_ids(GENES[:n_genes])
    return HINGEModule(bb, ids, n_features=4, diffusion_steps=n_steps, **{"likelihood": "mse", "readout": False, **kwargs})


def _batch(n=8, g=50):
    gen = torch.Generator().manual_seed(0)
    return {
        MODULE_KEYS.COUNTS: 1.0 + torch.poisson(torch.full((n, g), 3.0), generator=gen),
        MODULE_KEYS.LIBRARY: torch.full((n,), 1000.0),
        MODULE_KEYS.FEATURES: torch.randn(n, 4, generator=gen),
    }


@pytest.mark.parametrize("loss_on", ["revealed", "hidden"])
def test_loss_touches_only_selected_entries(loss_on):
    module = _module(loss_on=loss_on)
    batch = _batch()
    inf = module.inference(**module._get_inference_input(batch), generator=torch.Generator().manual_seed(3))
    x0_hat = torch.zeros_like(inf[MODULE_KEYS.TARGET], requires_grad=True)
    out = module.loss(batch, inf, {MODULE_KEYS.PREDICTION: x0_hat})
    out.loss.backward()
    vis, vis_prev = inf[MODULE_KEYS.VISIBLE], inf[MODULE_KEYS.VISIBLE_PREV]
    selected = (vis_prev - vis) if loss_on == "revealed" else (1 - vis)
    assert torch.all((x0_hat.grad != 0) <= selected.bool())
    assert (x0_hat.grad != 0).sum() == selected.sum()  # targets are > 0 so every selected entry has a gradient
    expected = ((inf[MODULE_KEYS.TARGET] ** 2) * selected).sum() / selected.sum()
    torch.testing.assert_close(out.loss, expected)


def test_revealed_genes_are_hidden_at_t_and_visible_at_t_minus_1():
    module = _module()
    inf = module.inference(**module._get_inference_input(_batch()))
    vis, vis_prev = inf[MODULE_KEYS.VISIBLE], inf[MODULE_KEYS.VISIBLE_PREV]
    assert torch.all(vis <= vis_prev)
    k = module.n_hidden
    t = inf[MODULE_KEYS.STEP]
    assert torch.all((1 - vis).sum(1) == k[t]) and torch.all((1 - vis_prev).sum(1) == k[t - 1])


def test_inputs_filled_only_where_hidden():
    for fill in ("gauss", "zero"):
        module = _module(mask_fill=fill)
        inf = module.inference(**module._get_inference_input(_batch()))
        vis = inf[MODULE_KEYS.VISIBLE].bool()
        assert torch.equal(inf[MODULE_KEYS.X_T][vis], inf[MODULE_KEYS.TARGET][vis])
        hidden = inf[MODULE_KEYS.X_T][~vis]
        assert torch.all(hidden == 0) if fill == "zero" else hidden.std() > 0.5


def test_warm_start_cap_bounds_steps():
    module = _module()
    inf = module.inference(**module._get_inference_input(_batch(n=64)), t_max=2)
    assert inf[MODULE_KEYS.STEP].max() <= 2 and inf[MODULE_KEYS.STEP].min() >= 1


def test_step_revealing_nothing_gives_zero_not_nan():
    module = _module(n_genes=20, n_steps=50)  # clamp active: some steps reveal no gene
    k = module.n_hidden
    empty_t = int(next(t for t in range(1, 51) if k[t] == k[t - 1]))
    batch = _batch(g=20)
    inf = module.inference(**module._get_inference_input(batch))
    inf[MODULE_KEYS.VISIBLE] = (torch.arange(20) >= k[empty_t]).float().expand(8, 20)
    inf[MODULE_KEYS.VISIBLE_PREV] = inf[MODULE_KEYS.VISIBLE].clone()
    out = module.loss(batch, inf, {MODULE_KEYS.PREDICTION: torch.zeros(8, 20)})
    assert out.loss.item() == 0.0


def test_targets():
    counts = torch.tensor([[0.0, 1.0, 3.0]])
    torch.testing.assert_close(expression_target(counts, torch.tensor([4.0]), "log2p1"), torch.tensor([[0.0, 1.0, 2.0]]))
    cp = expression_target(counts, torch.tensor([4.0]), "log1p_cp10k")
    torch.testing.assert_close(cp, torch.log1p(torch.tensor([[0.0, 2500.0, 7500.0]])))


@pytest.mark.parametrize(("kwargs", "match"), [({"mask_fill": "uniform"}, "mask_fill"), ({"loss_on": "all"}, "loss_on"), ({"target_scale": "raw"}, "target_scale")])
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _module(**kwargs)
