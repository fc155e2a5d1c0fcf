from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import hinge_sc as hs


def _results() -> pd.DataFrame:
    rows = []
    # method a: seeds 0/1 give 0.4/0.6 on S1 and 0.6/0.8 on S2; method b is deterministic
    for section, values in (("S1", (0.4, 0.6)), ("S2", (0.6, 0.8))):
        for seed, v in enumerate(values):
            rows.append({"method": "a", "section": section, "seed": seed, "pcc_50": v, "mse": 1.0, "n_spots": 9})
        rows.append({"method": "b", "section": section, "seed": 0, "pcc_50": 0.3, "mse": np.nan, "n_spots": 9})
    rows.append({"method": "a", "section": "mean", "seed": 0, "pcc_50": 99.0, "mse": 99.0, "n_spots": 9})
    return pd.DataFrame(rows)


def test_aggregate_averages_seeds_then_sections():
    table = hs.tl.aggregate(_results())
    assert list(table.index) == ["a", "b"]
    assert table.loc["a", ("pcc_50", "mean")] == pytest.approx(0.6)  # the "mean" row is dropped
    assert table.loc["a", ("pcc_50", "sd")] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert table.loc["a", ("pcc_50", "seed_sd")] == pytest.approx(np.std([0.4, 0.6], ddof=1))
    assert table.loc["a", ("pcc_50", "n")] == 2
    assert np.isnan(table.loc["b", ("mse", "mean")]) and table.loc["b", ("mse", "n")] == 0
    assert "n_spots" not in table.columns.get_level_values("metric")


def test_aggregate_without_replicates_and_bad_columns():
    results = _results().drop(columns="seed")
    table = hs.tl.aggregate(results, metrics=["pcc_50"])
    assert table.loc["b", ("pcc_50", "sd")] == pytest.approx(0.0)
    with pytest.raises(KeyError, match="`by` names columns missing"):
        hs.tl.aggregate(results, by="model")


def test_compare_paired_wilcoxon():
    rng = np.random.default_rng(0)
    sections = [f"S{i}" for i in range(8)]
    base = rng.uniform(0.3, 0.5, size=8)
    results = pd.concat([
        pd.DataFrame({"method": "hinge", "section": sections, "pcc_50": base + 0.1}),
        pd.DataFrame({"method": "ridge", "section": sections, "pcc_50": base}),
        pd.DataFrame({"method": "same", "section": sections, "pcc_50": base + 0.1}),
    ])  # fmt: skip
    out = hs.tl.compare(results, metric="pcc_50", reference="hinge", replicate=None)
    assert out.loc["ridge", "n_pairs"] == 8
    assert out.loc["ridge", "mean_difference"] == pytest.approx(0.1)
    assert out.loc["ridge", "pvalue"] == pytest.approx(2 / 2**8)  # exact test: all 8 differences positive
    assert out.loc["same", "pvalue"] == 1.0
    with pytest.raises(KeyError, match="`reference='stem'`"):
        hs.tl.compare(results, metric="pcc_50", reference="stem", replicate=None)
