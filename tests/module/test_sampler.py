from __future__ import annotations

import numpy as np
import pytest
import torch

import hinge_sc as hs
from hinge_sc._random import Noise
from hinge_sc.module import GaussianLikelihood, HINGEModule, hidden_schedule, reverse_step_grid, sample_masked

GENES = [f"G{i}" for i in range(40)]


@pytest.fixture(scope="module")
def module():
    bb = hs.Backbone.random(GENES, d_model=32, n_layers=2, n_heads=4, seed=0)
    ids, _ = bb.token_ids(GENES[:25])
    return HINGEModule(bb, ids, n_features=6, diffusion_steps=10, likelihood="mse", readout=False).eval()


def test_grid():
    assert list(reverse_step_grid(50)) == list(range(50, -1, -1))
    assert list(reverse_step_grid(50, 5)) == [50, 40, 30, 20, 10, 0]
    with pytest.raises(ValueError, match="n_steps"):
        reverse_step_grid(50, 51)


@pytest.mark.parametrize(("n_genes", "n_steps", "grid_steps"), [(25, 10, None), (25, 10, 4), (20, 50, None)])
def test_revealed_genes_never_change(n_genes, n_steps, grid_steps):
    counts = torch.as_tensor(hidden_schedule(n_genes, n_steps))
    grid = reverse_step_grid(n_steps, grid_steps)
    calls = []

    def denoise(x_t, visible, t, visible_prev):
        # visible genes in the input keep the value written when they were revealed
        if calls:
            assert torch.all((x_t * visible) == (calls[-1][1] * visible))
        step_value = float(len(calls) + 1)
        calls.append((visible.clone(), None))
        return torch.full_like(x_t, step_value)

    def fill(x, visible, noise):
        out = x * visible + 1000.0 * (1 - visible)
        if calls:
            calls[-1] = (calls[-1][0], x.clone())
        return out

    noise = Noise.shared(torch.Generator().manual_seed(0), 3)
    x = sample_masked(denoise, fill, counts, n_genes, grid=grid, noise=noise)
    assert torch.all(x > 0) and torch.all(x <= len(calls))  # every gene set, by exactly one step
    # each step wrote the genes it revealed: per sample, the number of genes carrying value j is the reveal count
    revealed_per_call = [int(counts[t]) - int(counts[s]) for t, s in zip(grid[:-1], grid[1:]) if counts[t] != counts[s]]
    for j, n_rev in enumerate(revealed_per_call, start=1):
        assert torch.all((x == j).sum(1) == n_rev)


def test_sample_seeded(module):
    feats = torch.randn(4, 6)
    a = module.sample(feats, 3, generator=torch.Generator().manual_seed(0))
    b = module.sample(feats, 3, generator=torch.Generator().manual_seed(0))
    c = module.sample(feats, 3, generator=torch.Generator().manual_seed(1))
    assert a.shape == (4, 3, 25)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.isfinite(a).all()


def test_fewer_steps_still_sets_every_gene(module):
    out = module.sample(torch.randn(2, 6), 2, n_steps=3, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 2, 25) and torch.isfinite(out).all()
    assert np.all(out.numpy() != 0)


# ----------------------------------------------------------------- distributional reveal (issue 13)
def test_sample_reveal_reproduces_a_known_conditional_distribution():
    """Each revealed gene is drawn from N(mu, sigma^2) of the denoiser; samples reproduce mean and variance."""
    n_genes, n_steps, n_rows = 6, 6, 4000
    mu = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    sigma = torch.tensor([0.1, 0.3, 0.5, 0.2, 0.4, 0.6])

    def denoise(x_t, visible, t, visible_prev):
        return {"mean": mu.expand_as(x_t).clone(), "log_variance": (2 * sigma.log()).expand_as(x_t).clone()}

    noise = Noise.shared(torch.Generator().manual_seed(0), n_rows)
    counts = torch.as_tensor(hidden_schedule(n_genes, n_steps))
    grid = reverse_step_grid(n_steps)
    gaussian = GaussianLikelihood(n_genes)
    x = sample_masked(denoise, lambda x, v, e: x * v, counts, n_genes, grid=grid, noise=noise, reveal="sample",
                      likelihood=gaussian)  # fmt: skip
    torch.testing.assert_close(x.mean(0), mu, atol=0.03, rtol=0)
    torch.testing.assert_close(x.std(0), sigma, atol=0.02, rtol=0.05)
    mean_only = sample_masked(denoise, lambda x, v, e: x * v, counts, n_genes, grid=grid, noise=noise, reveal="mean",
                              likelihood=gaussian)  # fmt: skip
    assert torch.equal(mean_only, mu.expand_as(mean_only))


def test_sample_reveal_conditions_later_genes_on_drawn_values():
    """A denoiser whose mean for gene 1 copies the value drawn for gene 0: samples keep that dependence."""
    n_genes, n_rows = 2, 3000

    def denoise(x_t, visible, t, visible_prev):
        mean = torch.zeros_like(x_t)
        mean[:, 0] = 5.0
        mean[:, 1] = torch.where(visible[:, 0] > 0, x_t[:, 0], torch.full_like(x_t[:, 0], 5.0))
        return {"mean": mean, "log_variance": torch.zeros_like(x_t)}  # sigma = 1

    noise = Noise.shared(torch.Generator().manual_seed(1), n_rows)
    counts = torch.as_tensor([0, 1, 2])  # one gene revealed per step
    x = sample_masked(denoise, lambda x, v, e: x * v, counts, n_genes, grid=np.array([2, 1, 0]), noise=noise,
                      reveal="sample", likelihood=GaussianLikelihood(n_genes))  # fmt: skip
    r = np.corrcoef(x[:, 0].numpy(), x[:, 1].numpy())[0, 1]
    # gene 0 is revealed first in half of the orders (then x1 = x0 + e: cov 1, var 2), else both are independent:
    # r = 0.5 / sqrt(1 · 1.5) ≈ 0.41 — a dependence a mean-writing sampler could not produce (it gives constants)
    assert abs(r - 0.5 / np.sqrt(1.5)) < 0.06


def test_revealed_genes_never_change_with_sampling(module):
    feats = torch.randn(3, 6)
    gaussian = HINGEModule(module.backbone, module.token_ids, 6, diffusion_steps=10, likelihood="gaussian", readout=False).eval()
    out = gaussian.sample(feats, 4, generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, 4, 25) and torch.isfinite(out).all() and (out >= 0).all()
    with pytest.raises(ValueError, match="likelihood that draws"):
        module.sample(feats, 2, generator=torch.Generator().manual_seed(0), reveal="sample")


def test_gaussian_likelihood_loss_trains_the_variance_only_through_nll(module):
    gaussian = HINGEModule(module.backbone, module.token_ids, 6, diffusion_steps=10, likelihood="gaussian", readout=False).train()
    tensors = {"counts": torch.poisson(torch.full((8, 25), 3.0)), "library": torch.full((8,), 100.0),
               "features": torch.randn(8, 6)}  # fmt: skip
    _, gen_out, loss = gaussian(tensors, inference_kwargs={"generator": torch.Generator().manual_seed(0)})
    assert set(loss.extra_metrics) >= {"mse", "nll"}
    torch.testing.assert_close(loss.loss, loss.extra_metrics["mse"] + loss.extra_metrics["nll"])
    loss.loss.backward()
    assert gaussian.denoiser.heads["log_variance"].out.weight.grad.abs().sum() > 0


def test_rectified_mean_matches_monte_carlo():
    """E[max(0, X)], X ~ N(mu, sigma^2), in closed form: against 400k draws, including mu < 0 and mu >> sigma."""
    from hinge_sc.module import rectified_mean

    mu = torch.tensor([-1.0, 0.0, 0.5, 3.0], dtype=torch.float64)
    sigma = torch.tensor([1.0, 0.5, 2.0, 0.1], dtype=torch.float64)
    draws = (mu + sigma * torch.randn(400_000, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    expected = draws.clamp_min(0).mean(0)
    torch.testing.assert_close(rectified_mean(mu, 2 * sigma.log()), expected, atol=5e-3, rtol=0)
    assert rectified_mean(torch.tensor([3.0]), torch.tensor([-20.0])).item() == pytest.approx(3.0)


def test_expected_values_estimate_the_conditional_mean_with_less_noise():
    """Gene 1's mean copies gene 0's drawn value: averaging the expected values (Rao–Blackwell) and averaging the
    draws estimate the same mean (5), but the expected values vary less across samples."""
    n_genes, n_rows = 2, 4000

    def denoise(x_t, visible, t, visible_prev):
        mean = torch.zeros_like(x_t)
        mean[:, 0] = 5.0
        mean[:, 1] = torch.where(visible[:, 0] > 0, x_t[:, 0], torch.full_like(x_t[:, 0], 5.0))
        return {"mean": mean, "log_variance": torch.zeros_like(x_t)}  # sigma = 1, far from the floor at 0

    noise = Noise.shared(torch.Generator().manual_seed(2), n_rows)
    x, expected = sample_masked(denoise, lambda x, v, e: x * v, torch.as_tensor([0, 1, 2]), n_genes,
                                grid=np.array([2, 1, 0]), noise=noise, reveal="sample", return_expected=True,
                                likelihood=GaussianLikelihood(n_genes))  # fmt: skip
    torch.testing.assert_close(expected.mean(0), torch.full((2,), 5.0), atol=0.05, rtol=0)
    torch.testing.assert_close(x.mean(0), torch.full((2,), 5.0), atol=0.08, rtol=0)
    assert (expected.var(0) < 0.8 * x.var(0)).all()  # gene 0: 0 vs 1; gene 1: 0.5 vs 1.5
    x_mean, e_mean = sample_masked(denoise, lambda x, v, e: x * v, torch.as_tensor([0, 1, 2]), n_genes,
                                   grid=np.array([2, 1, 0]), noise=noise, reveal="mean", return_expected=True,
                                   likelihood=GaussianLikelihood(n_genes))  # fmt: skip
    assert torch.equal(x_mean, e_mean)


def test_calibrate_variance_is_the_mean_squared_z_score(module):
    """tau^2 = sum d (x0 - mean)^2 / sigma^2 / sum d, recomputed by hand from the same masks; sampling then draws
    with sigma^2 tau^2."""
    from hinge_sc._constants import MODULE_KEYS

    gaussian = HINGEModule(module.backbone, module.token_ids, 6, diffusion_steps=10, likelihood="gaussian", readout=False).eval()
    gen = torch.Generator().manual_seed(0)
    batch = {"counts": torch.poisson(torch.full((16, 25), 4.0), generator=gen), "library": torch.full((16,), 200.0),
             "features": torch.randn(16, 6, generator=gen)}  # fmt: skip
    tau2 = gaussian.calibrate_likelihood([batch], n_repeats=2, generator=torch.Generator().manual_seed(5))
    gaussian.likelihood.log_variance_offset.zero_()
    replay = torch.Generator().manual_seed(5)
    num = den = 0.0
    for _ in range(2):
        inf = gaussian.inference(batch["counts"], batch["library"], batch["features"], generator=replay)
        out = gaussian.denoiser(inf[MODULE_KEYS.X_T], inf[MODULE_KEYS.VISIBLE], inf[MODULE_KEYS.CONDITION],
                                gaussian.token_ids)  # fmt: skip
        mean, log_var = out["mean"], out["log_variance"]
        d = inf[MODULE_KEYS.VISIBLE_PREV] - inf[MODULE_KEYS.VISIBLE]
        num += float((d * (inf[MODULE_KEYS.TARGET] - mean) ** 2 / log_var.exp()).sum())
        den += float(d.sum())
    assert tau2 == pytest.approx(num / den, rel=1e-5)
    assert tau2 > 1.5  # an untrained head says sigma = 1; log2 counts of mean 4 are off by more
    # a larger tau widens the draws
    feats = torch.randn(2, 6, generator=gen)
    narrow = gaussian.sample(feats, 64, generator=torch.Generator().manual_seed(1))
    gaussian.likelihood.log_variance_offset.fill_(float(np.log(tau2)))
    wide = gaussian.sample(feats, 64, generator=torch.Generator().manual_seed(1))
    assert wide.std(1).mean() > narrow.std(1).mean()
    assert module.calibrate_likelihood([batch]) is None  # the point likelihood has nothing to calibrate
