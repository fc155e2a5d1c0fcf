"""The benchmark script runs end to end in its tiny configuration (one fold, one seed, one epoch)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from ..conftest import DATA_DIR

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "her2st.py"


def test_tiny_benchmark_runs(tmp_path, her2st_path):
    spec = importlib.util.spec_from_file_location("her2st_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "bench"
    methods = ["hinge", "hinge_paper", "hinge_no_readout", "hinge_no_rb", "hinge_no_calibration", "hinge_gaussian", "ridge", "ridge_cv",
               "ridge_cv_plain", "ridge_prob", "mlp", "knn", "mean"]  # fmt: skip
    text = module.main(["--out", str(out), "--data", str(DATA_DIR), "--tiny", "--methods", *methods])
    for name in ("results.md", "per_section.csv", "per_gene.csv", "performance.csv", "features_field_section.h5ad",
                 "gene_scores_log2p1.png", "spatial_hinge.png", "coexpression_ridge_cv.png",
                 "training_history_hinge.png"):  # fmt: skip
        assert (out / name).is_file(), name
    runs = next((out / "runs").iterdir())
    assert (runs / "C3_hinge_no_readout_s0_model" / "manifest.json").is_file()  # reused by the generation variants
    per_section = pd.read_csv(out / "per_section.csv")
    assert set(per_section["method"]) == set(methods)
    assert per_section.loc[per_section["method"] == "hinge", "crps"].notna().all()
    rows = per_section.set_index(["method", "scale"])
    # the generation-only variants reuse the trained model: same draws, so the same coverage with the same s.d.
    reused = rows.loc[("hinge_no_readout", "log2p1")]
    assert rows.loc[("hinge_no_rb", "log2p1"), "coverage_90"] == reused["coverage_90"]
    assert rows.loc[("hinge_no_rb", "log2p1"), "pcc_50"] != reused["pcc_50"]
    assert set(per_section["scale"]) == {"log2p1", "log1p_cp10k"} and set(per_section["section"]) == {"C3"}
    assert per_section.loc[per_section["method"] == "ridge", "pcc_50"].notna().all()
    assert "### log2p1: correlation" in text and "| hinge |" in text and "generated spots/s" in text
    # --rescore scores the stored predictions again without refitting: same code, same numbers
    cached = list(runs.glob("*.pkl"))
    module.main(["--out", str(out), "--data", str(DATA_DIR), "--tiny", "--methods", "hinge", "ridge_prob", "--rescore",
                 "--perf-genes"])  # fmt: skip
    again = pd.read_csv(out / "per_section.csv").set_index(["method", "scale"])
    assert again.loc[("hinge", "log2p1"), "coverage_90"] == rows.loc[("hinge", "log2p1"), "coverage_90"]
    assert len(cached) == len(list(runs.glob("*.pkl")))  # nothing new was fitted


def test_tiny_cross_patient_protocol_runs(tmp_path, her2st_path):
    """Train on patient C, test on A1 (another patient) with HINGE, its depth-given generation and the baselines."""
    spec = importlib.util.spec_from_file_location("her2st_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "cross"
    methods = ["hinge", "hinge_depth_given", "hinge_depth_prior", "hinge_new_patient", "ridge_cv", "ridge_prob", "knn"]
    text = module.main(["--out", str(out), "--data", str(DATA_DIR), "--tiny", "--protocol", "cross-patient",
                        "--methods", *methods, "--perf-genes", "--depth-reference", "D1", "H1"])  # fmt: skip
    per_section = pd.read_csv(out / "per_section.csv")
    assert set(per_section["section"]) == {"A1"} and set(per_section["method"]) == set(methods)
    assert "cross-patient: trained on C2, C3, tested on A1" in text
    rows = per_section.set_index(["method", "scale"])
    # the measured depth moves the levels on log2(count + 1), not the depth-normalised scale's correlations much
    assert rows.loc[("hinge_depth_given", "log2p1"), "mse"] != rows.loc[("hinge", "log2p1"), "mse"]
    assert rows.loc[("hinge", "log2p1"), "coverage_90"] >= 0
    # an unknown depth widens the samples, not the mean
    assert rows.loc[("hinge_depth_prior", "log2p1"), "pcc_50"] == pytest.approx(rows.loc[("hinge", "log2p1"), "pcc_50"])
    assert rows.loc[("hinge_depth_prior", "log2p1"), "crps"] != rows.loc[("hinge", "log2p1"), "crps"]
    # unknown gene levels as well (level_sd from the reference sections): wider again, the mean unchanged
    new = rows.loc[("hinge_new_patient", "log2p1")]
    assert new["pcc_50"] == pytest.approx(rows.loc[("hinge", "log2p1"), "pcc_50"])
    assert new["crps"] != rows.loc[("hinge_depth_prior", "log2p1"), "crps"]
