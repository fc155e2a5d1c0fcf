"""The spread scale of generated samples, fitted on held-out values (module/_calibration.py)."""

from __future__ import annotations

import numpy as np
import pytest

from hinge_sc.module import spread_scale
from hinge_sc.tl._uncertainty import central_interval, interval_coverage


@pytest.mark.parametrize("true_sd", [0.5, 1.0, 2.0])
def test_spread_scale_recovers_the_missing_width(true_sd):
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(4000, 8, 5))  # the sampler's spread: s.d. 1
    y = rng.normal(scale=true_sd, size=(4000, 5))  # held-out values: s.d. true_sd
    c = spread_scale(y, samples)
    # y − mean has variance true_sd² + 1/S; the predictive interval assumes (1 + 1/S) × the samples' variance
    assert c == pytest.approx(np.sqrt((true_sd**2 + 1 / 8) / (1 + 1 / 8)), rel=0.05)
    centre = samples.mean(axis=1, keepdims=True)
    widened = centre + c * (samples - centre)
    for level in (0.5, 0.9):
        lo, hi = central_interval(level, samples=widened)
        assert interval_coverage(y, lo, hi) == pytest.approx(level, abs=0.03)


def test_spread_scale_without_spread_is_one():
    assert spread_scale(np.ones((3, 2)), np.zeros((3, 8, 2))) == 1.0
    assert spread_scale(np.ones((3, 2)), np.zeros((3, 1, 2))) == 1.0


def test_correction_weight_keeps_the_part_that_generalises():
    """Issue 21: w = 1 where the network's correction is right, 0 where it is noise, the least-squares fraction where
    half of it is right; genes without a correction keep 1."""
    from hinge_sc.module import correction_weight

    rng = np.random.default_rng(0)
    n = 400
    skip = rng.normal(size=(n, 4))
    signal = rng.normal(size=(n, 4))
    y = skip + signal
    point = skip.copy()
    point[:, 0] += signal[:, 0]  # the correction is exactly right
    point[:, 1] += rng.normal(size=n)  # pure noise
    point[:, 2] += 2 * signal[:, 2]  # twice too large: w = 1/2
    w = correction_weight(y, point, skip)  # gene 3: no correction
    assert w.shape == (4,) and w.dtype == np.float32
    assert w[0] == pytest.approx(1.0)
    assert w[1] < 0.15
    assert w[2] == pytest.approx(0.5, abs=0.02)
    assert w[3] == 1.0
    with pytest.raises(ValueError, match="one shape"):
        correction_weight(y, point[:, :3], skip)
