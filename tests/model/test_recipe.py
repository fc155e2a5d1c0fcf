"""One training recipe (issue 21): section-grouped validation, the variance scale on held-out sections, one default."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest

import hinge_sc as hs
from hinge_sc.model import DEFAULT_RECIPE, PAPER_RECIPE, TrainingRecipe
from hinge_sc.train._recipe import resolve_recipe
from hinge_sc.train import split_sections

from .conftest import synthetic_adata

FAST = {"max_epochs": 2, "accelerator": "cpu", "show_progress_bar": False}


def four_sections(seed: int = 0):
    adata = synthetic_adata(seed, n_spots=128)
    adata.obs["section"] = np.repeat(["S1", "S2", "S3", "S4"], 32)
    return adata


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_sections_holds_out_whole_sections(seed):
    groups = np.repeat(["A", "B", "C", "D", "E"], [5, 7, 3, 9, 6])
    train, val, held_out = split_sections(groups, 0.2, seed)
    assert len(held_out) == 1
    assert set(groups[val]) == set(held_out)
    assert not set(groups[train]) & set(held_out)
    assert len(train) + len(val) == len(groups)
    assert split_sections(groups, 0.2, seed)[2] == held_out  # seeded


def test_split_sections_keeps_one_section_for_training():
    groups = np.repeat(["A", "B"], 4)
    _, val, held = split_sections(groups, 0.9, 0)
    assert len(held) == 1 and len(val) == 4


def test_train_validates_on_held_out_sections_and_fits_the_variance_scale_there(backbone):
    adata = four_sections()
    hs.HINGE.setup_anndata(adata, features_key="X_histology", section_key="section")
    model = hs.HINGE(adata, backbone, diffusion_steps=10)
    model.train(**FAST)
    params = model.train_params_
    assert params["validation"] == "section"
    assert len(params["validation_sections"]) == 1
    sections = adata.obs["section"].to_numpy()
    val_sections = set(sections[model.validation_indices_])
    assert val_sections == set(params["validation_sections"])
    assert not val_sections & set(sections[model.train_indices_])
    assert params["variance_scale"] is not None  # fitted on the held-out section's spots
    assert params["spread_scale"] > 0 and float(model.module.spread_scale) == pytest.approx(params["spread_scale"])
    assert params["recipe"] == DEFAULT_RECIPE.replace(max_epochs=2).to_dict()
    assert params["median_library_size"] > 0


def test_auto_falls_back_to_spots_with_two_sections_and_says_so(backbone, caplog):
    adata = synthetic_adata()  # two sections
    hs.HINGE.setup_anndata(adata, features_key="X_histology", section_key="section")
    model = hs.HINGE(adata, backbone, diffusion_steps=10)
    with caplog.at_level(logging.INFO, logger="hinge_sc"):
        model.train(**FAST)
    assert model.train_params_["validation"] == "spots"
    assert "Validation on random spots: only 2 section(s)" in caplog.text


def test_section_validation_needs_sections(backbone):
    adata = synthetic_adata()
    hs.HINGE.setup_anndata(adata, features_key="X_histology")
    model = hs.HINGE(adata, backbone, diffusion_steps=10)
    with pytest.raises(ValueError, match=r"`validation='section'` needs ≥ 2 sections"):
        model.train(validation="section", **FAST)


def test_missing_section_labels_are_an_error(backbone):
    adata = four_sections()
    adata.obs["section"] = adata.obs["section"].astype(object)
    adata.obs.iloc[3, adata.obs.columns.get_loc("section")] = np.nan
    with pytest.raises(ValueError, match=r"1 of 128 spots without a section label"):
        hs.HINGE.setup_anndata(adata, features_key="X_histology", section_key="section")
    adata = four_sections()
    hs.HINGE.setup_anndata(adata, features_key="X_histology", section_key="section")
    model = hs.HINGE(adata, backbone, diffusion_steps=10)
    adata.obs["section"] = adata.obs["section"].astype(object)
    adata.obs.iloc[3, adata.obs.columns.get_loc("section")] = np.nan  # edited after setup
    with pytest.raises(ValueError, match=r"has 1 missing labels"):
        model.train(**FAST)


def test_milestones_are_fractions_of_the_epochs_run():
    assert TrainingRecipe(max_epochs=40).milestone_epochs() == [20, 35]
    assert TrainingRecipe(max_epochs=8).milestone_epochs() == [4, 7]
    assert TrainingRecipe(max_epochs=8, lr_milestones=(3, 6)).milestone_epochs() == [3, 6]  # epochs as given
    assert PAPER_RECIPE.milestone_epochs() == [20, 35]
    with pytest.raises(ValueError, match="lr_milestones"):
        TrainingRecipe(lr_milestones=(0.5, -1))


def test_recipe_overrides_and_scvi_configs():
    recipe, rest = resolve_recipe(None, 3, {"lr": 1e-3, "plan_config": {"weight_decay": 0.1}, "limit_train_batches": 2})
    assert (recipe.max_epochs, recipe.lr, recipe.weight_decay) == (3, 1e-3, 0.1)
    assert rest == {"limit_train_batches": 2}
    recipe, rest = resolve_recipe(None, None, {"trainer_config": {"gradient_clip_val": 0.5, "log_every_n_steps": 1}})
    assert recipe.gradient_clip_val == 0.5 and rest == {"log_every_n_steps": 1}
    with pytest.raises(TypeError, match="TrainingRecipe"):
        resolve_recipe({"lr": 1}, None, {})
    with pytest.raises(TypeError, match=r"\['learning_rate'\] are not fields of TrainingRecipe"):
        DEFAULT_RECIPE.replace(learning_rate=1)


def test_one_recipe_for_api_cli_demo_and_benchmark():
    """The defaults of HINGE.train, `hinge-sc train`, `hinge-sc demo` and benchmarks/her2st.py are one object."""
    import argparse
    import inspect

    from hinge_sc._cli import _parser as build_parser
    from hinge_sc._cli._common import recipe_from_args

    assert resolve_recipe(None, None, {})[0] is DEFAULT_RECIPE
    signature = inspect.signature(hs.HINGE.train)
    overrides = {n: p.default for n, p in signature.parameters.items() if n in TrainingRecipe.fields()}
    assert overrides == {"max_epochs": None}  # no second copy of a default: None means "the recipe's"
    parser = build_parser()
    train_args = parser.parse_args(["train", "in.h5ad", "model"])
    demo_args = parser.parse_args(["demo"])
    assert recipe_from_args(train_args) is DEFAULT_RECIPE
    assert recipe_from_args(demo_args) is DEFAULT_RECIPE
    assert recipe_from_args(parser.parse_args(["train", "in.h5ad", "model", "--recipe", "paper"])) is PAPER_RECIPE
    assert recipe_from_args(parser.parse_args(["demo", "--lr", "0.01"])).lr == 0.01
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    try:
        import her2st
    finally:
        sys.path.pop(0)
    assert her2st.recipe(her2st.parse_args(["--out", "x"])) is DEFAULT_RECIPE
    assert isinstance(train_args, argparse.Namespace)
