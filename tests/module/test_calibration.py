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
