"""No wrong input passes silently (issue 9): one table of bad inputs with their errors, one of their warnings."""

from __future__ import annotations

import json
import re
import warnings

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from PIL import Image

import hinge_sc as hs
from hinge_sc._cli import main
from hinge_sc.benchmark import MLPRegressor, RidgeProbe
from hinge_sc.pp._image import open_image_file

N_SPOTS, N_GENES, N_FEATURES = 24, 8, 6
GENES = [f"GENE{i}" for i in range(N_GENES)]


def make_adata(n_spots: int = N_SPOTS, *, dense: bool = False, seed: int = 0) -> ad.AnnData:
    """Tiny spots × genes AnnData with integer counts and image features recorded like `histology_features`."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(3.0, size=(n_spots, N_GENES)).astype(np.float32)
    adata = ad.AnnData(counts if dense else sp.csr_matrix(counts))
    adata.var_names = GENES
    adata.obs_names = [f"spot{i}" for i in range(n_spots)]
    adata.obs["section"] = "S1"
    adata.obsm["X_histology"] = rng.normal(size=(n_spots, N_FEATURES)).astype(np.float32)
    adata.obsm["spatial"] = rng.uniform(20, 80, size=(n_spots, 2))
    adata.uns["X_histology"] = {
        "params": {"encoder": "handcrafted", "n_features": N_FEATURES, "patch_size_um": 112.0, "out_size": 64,
                   "views": 1, "context": "none", "microns_per_pixel": {"S1": 0.5}}  # fmt: skip
    }
    return adata


def with_image(adata: ad.AnnData, image: np.ndarray, *, mpp: float = 1.0) -> ad.AnnData:
    """Put ``image`` as the section's hires image (scale 1, ``mpp`` µm/px)."""
    adata.uns["spatial"] = {"S1": {"images": {"hires": image},
                                   "scalefactors": {"tissue_hires_scalef": 1.0, "microns_per_pixel": mpp}}}  # fmt: skip
    return adata


def lognorm(adata: ad.AnnData) -> ad.AnnData:
    """Log-normalised values in place of the counts, kept sparse or dense."""
    adata.X = adata.X.log1p() if sp.issparse(adata.X) else np.log1p(adata.X)
    return adata


def edit(adata: ad.AnnData, change) -> ad.AnnData:
    """``adata`` after ``change(adata)``."""
    change(adata)
    return adata


def _with_params(**params) -> ad.AnnData:
    """Tiny data whose recorded feature settings differ from the training data's by ``params``."""
    adata = make_adata()
    adata.uns["X_histology"]["params"].update(params)
    return adata


def object_features(adata: ad.AnnData) -> np.ndarray:
    """The features as an object array (e.g. read from a table with mixed columns)."""
    return adata.obsm["X_histology"].astype(object)


def registered(adata: ad.AnnData | None = None) -> ad.AnnData:
    adata = make_adata() if adata is None else adata
    hs.HINGE.setup_anndata(adata, features_key="X_histology")
    return adata


def backbone(genes=GENES) -> hs.Backbone:
    return hs.Backbone.random(list(genes), d_model=16, n_layers=1, n_heads=2, seed=0)


def tiny_trained_model() -> hs.HINGE:
    """A HINGE model trained one epoch on the tiny data (no validation)."""
    m = hs.HINGE(registered(), backbone(), diffusion_steps=4)
    m.train(max_epochs=1, batch_size=8, warmup_epochs=0, accelerator="cpu", show_progress_bar=False,
            validation_size=0.0, early_stopping=False)  # fmt: skip
    return m


@pytest.fixture(scope="module")
def model() -> hs.HINGE:
    """A HINGE model trained one epoch on the tiny data."""
    return tiny_trained_model()


def generate(model: hs.HINGE, adata: ad.AnnData, **kwargs):
    return model.generate(adata, n_samples=1, n_steps=2, seed=0, show_progress_bar=False, **kwargs)


def predicted(adata: ad.AnnData) -> ad.AnnData:
    """``adata`` with a prediction frame as `tl.generate` writes it."""
    adata.obsm["hinge"] = np.log2(adata.to_df() + 1)
    return adata


def pretrain(adata: ad.AnnData, **kwargs):
    return hs.pretrain_backbone(adata, d_model=16, n_layers=1, n_heads=2, n_tokens=4, max_epochs=1,
                                accelerator="cpu", show_progress_bar=False, **kwargs)  # fmt: skip


def sdata_with_table(adata: ad.AnnData):
    import spatialdata

    return spatialdata.SpatialData(tables={"table": adata})


def channel_first_adata() -> ad.AnnData:
    image = np.full((3, 200, 200), 128, dtype=np.uint8)
    return with_image(make_adata(4), image)


def histology(adata: ad.AnnData, **kwargs):
    return hs.pp.histology_features(adata, key_added="X_new", views=1, out_size=8, show_progress_bar=False, **kwargs)


def image_adata(side: int = 200, n_spots: int = 4) -> ad.AnnData:
    image = np.random.default_rng(0).integers(0, 255, size=(side, side, 3), dtype=np.uint8)
    adata = make_adata(n_spots)
    adata.obsm["spatial"] = np.full((n_spots, 2), side / 2)
    return with_image(adata, image)


def with_views(adata: ad.AnnData, identity: np.ndarray) -> ad.AnnData:
    """``adata`` with two augmented views whose identity view (view 0) is ``identity``."""
    views = np.repeat(adata.obsm["X_histology"][:, None], 2, axis=1)
    views[:, 0] = identity
    adata.obsm["X_histology_views"] = views
    return adata


def no_section(adata: ad.AnnData, n_missing: int = 2) -> ad.AnnData:
    """``adata`` whose first ``n_missing`` spots have no section label (NaN)."""
    adata.obs["section"] = adata.obs["section"].astype(object)
    adata.obs.iloc[:n_missing, adata.obs.columns.get_loc("section")] = np.nan
    return adata


def uint16_adata(peak: int, side: int = 200) -> ad.AnnData:
    """Tiny data whose section image is uint16 with values up to ``peak`` (e.g. 4095: a 12-bit camera)."""
    image = np.random.default_rng(0).integers(0, peak + 1, size=(side, side, 3)).astype(np.uint16)
    image[0, 0] = peak
    adata = make_adata(4)
    adata.obsm["spatial"] = np.full((4, 2), side / 2)
    return with_image(adata, image)


NOT_INTEGER = r"non-integer values .*not integer counts.*`layer=`.*`allow_non_integer=True`"
NO_SPOTS = r"`adata` has no spots \(n_obs = 0"
FEW_SPOTS = r"`adata` has {} spot\(s\); training needs at least 3 spots"
NO_GENES = r"is empty: no genes given"
BATCH = r"`batch_size` must be a positive integer"
PATCH = r"`patch_size_um` must be a finite number > 0"
KEY_ADDED = r"`key_added=.*` (is empty|contains '/'); expected a non-empty name without '/'"
CHANNEL_FIRST = r"looks channel-first \(C, H, W\).*Transpose it to \(H, W, 3\)"

ERROR_CASES = {
    # non-integer counts (log-normalised data) wherever raw counts are read
    "setup_anndata/non_integer_sparse": (lambda: registered(lognorm(make_adata())), ValueError, NOT_INTEGER),
    "setup_anndata/non_integer_dense": (lambda: registered(lognorm(make_adata(dense=True))), ValueError, NOT_INTEGER),
    "setup_anndata/scaled_layer": (
        lambda: hs.HINGE.setup_anndata(
            edit(make_adata(), lambda a: a.layers.__setitem__("scaled", a.X * 0.5)), layer="scaled"
        ), ValueError, r"`adata.layers\['scaled'\]` has non-integer values"),  # fmt: skip
    "setup_spatialdata/non_integer": (lambda: hs.HINGE.setup_spatialdata(sdata_with_table(lognorm(make_adata()))),
                                      ValueError, NOT_INTEGER),
    "evaluate/non_integer": (lambda: hs.tl.evaluate(lognorm(predicted(make_adata())), key="hinge"),
                             ValueError, NOT_INTEGER),
    "pretrain/non_integer": (lambda: pretrain(lognorm(make_adata())), ValueError, NOT_INTEGER),
    "baseline_fit/non_integer": (lambda: RidgeProbe().fit(lognorm(make_adata())), ValueError, NOT_INTEGER),
    "select_genes/non_integer": (lambda: hs.pp.select_genes(lognorm(make_adata()), n_genes=2),
                                 ValueError, NOT_INTEGER),
    "setup_anndata/absurd_counts": (
        lambda: registered(edit(make_adata(dense=True), lambda a: a.X.__setitem__((0, 0), 1e15))),
        ValueError, r"`adata.X` has values up to 1e\+15, above 1e\+09.*`layer=`"),  # fmt: skip
    "evaluate/absurd_counts": (
        lambda: hs.tl.evaluate(predicted(edit(make_adata(dense=True), lambda a: a.X.__setitem__((1, 1), 1e15))),
                               key="hinge"), ValueError, r"values up to 1e\+15"),  # fmt: skip
    # zero spots, too few spots
    "setup_anndata/no_spots": (lambda: registered(make_adata(0)), ValueError, NO_SPOTS),
    "setup_anndata/one_spot": (lambda: registered(make_adata(1)), ValueError, FEW_SPOTS.format(1)),
    "setup_anndata/two_spots": (lambda: registered(make_adata(2)), ValueError, FEW_SPOTS.format(2)),
    "setup_anndata/duplicate_obs_names": (
        lambda: registered(edit(make_adata(), lambda a: setattr(a, "obs_names", ["s0", "s0", *a.obs_names[2:]]))),
        ValueError, r"`adata.obs_names` has 1 duplicated spot names.*`adata.obs_names_make_unique\(\)`"),  # fmt: skip
    "setup_anndata/section_nan": (
        lambda: hs.HINGE.setup_anndata(no_section(make_adata()), section_key="section"),
        ValueError, r"`adata.obs\['section'\]` \(`section_key`\) has 2 of 24 spots without a section label"),
    "generate/no_spots": (lambda m: generate(m, make_adata(0)), ValueError, NO_SPOTS),
    "tl_generate/no_spots": (lambda m: hs.tl.generate(m, make_adata(0), n_samples=1, n_steps=2, seed=0,
                                                       show_progress_bar=False), ValueError, NO_SPOTS),
    "evaluate/no_spots": (lambda: hs.tl.evaluate(predicted(make_adata(0)), key="hinge"), ValueError, NO_SPOTS),
    "pretrain/no_spots": (lambda: pretrain(make_adata(0)), ValueError, NO_SPOTS),
    "baseline_fit/no_spots": (lambda: RidgeProbe().fit(make_adata(0)), ValueError, NO_SPOTS),
    "baseline_predict/no_spots": (lambda: RidgeProbe().fit(make_adata()).predict(make_adata(0)), ValueError, NO_SPOTS),
    # genes
    "setup_anndata/duplicate_var_names": (
        lambda: registered(edit(make_adata(), lambda a: setattr(a, "var_names", ["A", "A", *GENES[2:]]))),
        ValueError, r"duplicated gene names.*`adata.var_names_make_unique\(\)`"),  # fmt: skip
    "HINGE/empty_genes": (lambda: hs.HINGE(registered(), backbone(), genes=[]), ValueError, NO_GENES),
    "baseline_fit/empty_genes": (lambda: RidgeProbe().fit(make_adata(), genes=[]), ValueError, NO_GENES),
    "select_genes/empty_vocabulary": (lambda: hs.pp.select_genes(make_adata(), n_genes=2, vocabulary=[]),
                                      ValueError, r"`vocabulary` is empty: no genes given"),
    "pretrain/empty_genes": (lambda: pretrain(make_adata(), genes=[]), ValueError, NO_GENES),
    "evaluate/empty_genes": (lambda: hs.tl.evaluate(predicted(make_adata()), key="hinge", genes=[]),
                             ValueError, NO_GENES),
    "HINGE/genes_not_in_vocabulary": (
        lambda: hs.HINGE(registered(), backbone(GENES[:-2]), genes=GENES[:4] + GENES[-2:]),
        KeyError, r"2 of the 6 requested `genes` are not in the backbone vocabulary.*GENE6.*`drop_missing_genes=True`",
    ),  # fmt: skip
    # features
    "setup_anndata/object_features": (
        lambda: registered(edit(make_adata(), lambda a: a.obsm.__setitem__("X_histology", object_features(a)))),
        TypeError, r"`adata.obsm\['X_histology'\]` \(`features_key`\) has dtype object"),  # fmt: skip
    "setup_anndata/zero_width_features": (
        lambda: registered(edit(make_adata(), lambda a: a.obsm.__setitem__("X_histology", np.zeros((24, 0))))),
        ValueError, r"`adata.obsm\['X_histology'\]` \(`features_key`\) has shape \(24, 0\): zero features"),
    "setup_anndata/constant_features": (
        lambda: registered(edit(make_adata(), lambda a: a.obsm.__setitem__("X_histology", np.zeros((24, 6))))),
        ValueError, r"\(`features_key`\) is constant: each of its 6 features.*carry no information"),
    "setup_anndata/views_not_features": (
        lambda: registered(with_views(make_adata(), make_adata(seed=1).obsm["X_histology"])),
        ValueError, r"identity view `adata.obsm\['X_histology_views'\]\[:, 0\]` \(`views_key`\) differs from the "
                    r"features `adata.obsm\['X_histology'\]` \(`features_key`\) in 24 spots"),  # fmt: skip
    "generate/other_encoder": (
        lambda m: generate(m, _with_params(encoder="uni")),
        ValueError, r"\['encoder'\]` is 'uni', but the model was trained on features with encoder 'handcrafted'"),
    "generate/other_width": (
        lambda m: generate(m, _with_params(n_features=99)),
        ValueError, r"\['n_features'\]` is 99"),
    # batch sizes
    "train/batch_size_0": (lambda: hs.HINGE(registered(), backbone()).train(max_epochs=1, batch_size=0),
                           ValueError, BATCH),
    "generate/batch_size_0": (lambda m: generate(m, make_adata(), batch_size=0), ValueError, BATCH),
    "tl_generate/batch_size_-1": (lambda m: hs.tl.generate(m, make_adata(), batch_size=-1, n_samples=1, seed=0,
                                                            show_progress_bar=False), ValueError, BATCH),
    "pretrain/batch_size_0": (lambda: pretrain(make_adata(), batch_size=0), ValueError, BATCH),
    "generate/batch_size_float": (lambda m: generate(m, make_adata(), batch_size=2.5), TypeError, BATCH),
    "baseline_mlp/batch_size_0": (lambda: MLPRegressor(batch_size=0), ValueError, r"`batch_size` must be ≥ 1"),
    # pre-training's Trainer
    "pretrain/trainer_kwargs_clash": (lambda: pretrain(make_adata(), logger=False, enable_model_summary=True),
                                      TypeError, r"sets the Trainer arguments `enable_model_summary`, `logger` itself"),
    # patches and images
    "histology_features/patch_size_nan": (lambda: histology(image_adata(), patch_size_um=float("nan")),
                                          ValueError, PATCH),
    "histology_features/patch_size_inf": (lambda: histology(image_adata(), patch_size_um=float("inf")),
                                          ValueError, PATCH),
    "extract_patches/patch_size_0": (lambda: hs.pp.extract_patches(image_adata(), patch_size_um=0,
                                                                   show_progress_bar=False), ValueError, PATCH),
    "extract_patches/patch_size_negative": (lambda: hs.pp.extract_patches(image_adata(), patch_size_um=-5,
                                                                          show_progress_bar=False), ValueError, PATCH),
    "tile_slide/spacing_inf": (lambda: hs.pp.tile_slide(np.zeros((50, 50, 3), np.uint8), spacing_um=float("inf"),
                                                        microns_per_pixel=1.0),
                               ValueError, r"`spacing_um` must be a finite number > 0"),  # fmt: skip
    "extract_patches/channel_first": (lambda: hs.pp.extract_patches(channel_first_adata(), show_progress_bar=False),
                                      ValueError, CHANNEL_FIRST),
    "histology_features/channel_first": (lambda: histology(channel_first_adata()), ValueError, CHANNEL_FIRST),
    "tile_slide/channel_first": (lambda: hs.pp.tile_slide(np.zeros((3, 80, 80), np.uint8), microns_per_pixel=1.0),
                                 ValueError, CHANNEL_FIRST),
    "histology_features/empty_image": (lambda: histology(with_image(make_adata(4), np.zeros((0, 0, 3), np.uint8))),
                                       ValueError, r"has shape \(0, 0, 3\): an empty image"),
    "histology_features/two_channels": (lambda: histology(with_image(make_adata(4), np.zeros((50, 50, 2), np.uint8))),
                                        ValueError, r"has shape \(50, 50, 2\): 2 channels; expected 1 .*3 .*or 4"),
    "tile_slide/empty_image": (lambda: hs.pp.tile_slide(np.zeros((0, 5, 3), np.uint8), microns_per_pixel=1.0),
                               ValueError, r"an empty image"),
    # keys written
    "tl_generate/key_added_empty": (lambda m: hs.tl.generate(m, make_adata(), key_added="", n_samples=1, n_steps=2,
                                                              seed=0, show_progress_bar=False),
                                    ValueError, KEY_ADDED),  # fmt: skip
    "tl_generate/key_added_slash": (lambda m: hs.tl.generate(m, make_adata(), key_added="a/b", n_samples=1, n_steps=2,
                                                              seed=0, show_progress_bar=False),
                                    ValueError, KEY_ADDED),  # fmt: skip
    "histology_features/key_added_slash": (lambda: hs.pp.histology_features(image_adata(), key_added="X/hist",
                                                                            views=1, out_size=8,
                                                                            show_progress_bar=False),
                                           ValueError, KEY_ADDED),  # fmt: skip
    "baseline_predict/key_added_empty": (lambda: RidgeProbe().fit(make_adata()).predict(make_adata(), key_added=""),
                                         ValueError, KEY_ADDED),
    # selections by name or position
    "to_adata/missing_layer": (lambda: hs.tl.to_adata(predicted(make_adata()), key="hinge", layer="nope"),
                               KeyError, r"`layer='nope'` is not in `adata.layers` \(available: none\)"),
    "get_expression/index_out_of_range": (
        lambda m: m.get_expression(make_adata(), indices=[10**6], n_samples=1, n_steps=2, seed=0),
        IndexError, r"`indices` has 1 position\(s\) out of range, e.g. 1000000; the data has 24 spots"),  # fmt: skip
    "get_expression/negative_index": (
        lambda m: m.get_expression(make_adata(), indices=[-100], n_samples=1, n_steps=2, seed=0),
        IndexError, r"`indices` has 1 position\(s\) out of range, e.g. -100"),  # fmt: skip
    "HINGE/seed_float": (lambda: hs.HINGE(registered(), backbone(GENES), seed=1.5),
                         TypeError, r"`seed` must be an integer or None, found float 1.5"),
    "HINGE/seed_str": (lambda: hs.HINGE(registered(), backbone(GENES), seed="0"),
                       TypeError, r"`seed` must be an integer or None, found str '0'"),
    "Backbone.random/seed_float": (lambda: hs.Backbone.random(GENES, d_model=8, n_layers=1, n_heads=2, seed=1.5),
                                   TypeError, r"`seed` must be an integer or None, found float"),
    "pretrain_backbone/seed_str": (lambda: pretrain(make_adata(), seed="0"),
                                   TypeError, r"`seed` must be an integer or None, found str"),
    "generate/n_samples_float": (lambda m: m.generate(make_adata(), n_samples=1.5, n_steps=2, show_progress_bar=False),
                                 TypeError, r"`n_samples` must be a positive integer, found float 1.5"),
    "tl.generate/n_samples_str": (
        lambda m: hs.tl.generate(m, make_adata(), n_samples="8", n_steps=2, show_progress_bar=False),
        TypeError, r"`n_samples` must be a positive integer, found str '8'"),  # fmt: skip
}


@pytest.mark.parametrize("case", list(ERROR_CASES), ids=list(ERROR_CASES))
def test_bad_input_raises(case, request):
    call, error, match = ERROR_CASES[case]
    needs_model = call.__code__.co_argcount == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # only the error matters here
        with pytest.raises(error, match=match):
            call(request.getfixturevalue("model")) if needs_model else call()


def _reorder_cache(adata, tmp_path):
    """A cache whose record says it was written for other spots (or another spot order)."""
    histology(adata.copy(), cache_dir=tmp_path)
    cache = next(tmp_path.glob("*.json"))
    cache.write_text(json.dumps({**json.loads(cache.read_text()), "spots_sha256": "other"}))
    return histology(adata, cache_dir=tmp_path)


def _nan_cache(adata, tmp_path):
    """A cache file whose values were corrupted to NaN."""
    histology(adata.copy(), cache_dir=tmp_path)
    npy = next(tmp_path.glob("*.npy"))
    np.save(npy, np.full_like(np.load(npy), np.nan))
    return histology(adata, cache_dir=tmp_path)


WARNING_CASES = {
    "HINGE/drop_missing_genes": (
        lambda: hs.HINGE(registered(), backbone(GENES[:-1]), genes=GENES, drop_missing_genes=True),
                                 r"1 of 8 genes are not in the backbone vocabulary and were dropped"),  # fmt: skip
    "HINGE/all_genes_missing_some": (lambda: hs.HINGE(registered(), backbone(GENES[:-1])),
                                     r"1 of 8 genes are not in the backbone vocabulary and were dropped"),
    "generate/other_patch_size": (lambda m: generate(m, _with_params(patch_size_um=56.0)),
                                  r"other settings.*patch_size_um: 56.0 \(trained on 112.0\)"),
    "generate/other_magnification": (lambda m: generate(m, _with_params(microns_per_pixel={"S9": 2.0})),
                                     r"other settings.*microns_per_pixel"),
    "generate/other_context": (lambda m: generate(m, _with_params(context="knn")), r"context: 'knn'"),
    "histology_features/tiny_image_padding": (lambda: histology(image_adata(side=4)),
                                              r"4 of 4 patches of section 'S1' are more than 50% padding"),
    "extract_patches/one_pixel_image": (lambda: hs.pp.extract_patches(image_adata(side=1, n_spots=2),
                                                                      show_progress_bar=False),
                                        r"2 of 2 patches .* more than 50% padding"),  # fmt: skip
    "histology_features/cache_other_spots": (lambda tmp: _reorder_cache(image_adata(), tmp),
                                             r"cached features .* not used: it was written for other spots"),
    "histology_features/cache_not_finite": (lambda tmp: _nan_cache(image_adata(), tmp),
                                            r"cached features .* not used: it has NaN or infinite values"),
    "histology_features/12_bit_uint16": (lambda: histology(uint16_adata(4095)),
                                         r"stored as uint16 but its values only reach 4095.*12-bit image"),
    "setup_anndata/one_feature": (
        lambda: registered(edit(make_adata(), lambda a: a.obsm.__setitem__("X_histology", np.arange(24.0)))),
        r"has a single feature per spot \(anndata stores a 1-D array as one column\)"),  # fmt: skip
}


@pytest.mark.parametrize("case", list(WARNING_CASES), ids=list(WARNING_CASES))
def test_doubtful_input_warns(case, request, tmp_path):
    call, match = WARNING_CASES[case]
    arg = call.__code__.co_varnames[0] if call.__code__.co_argcount else None
    with pytest.warns(UserWarning, match=match):
        if arg is None:
            call()
        else:
            call(request.getfixturevalue("model") if arg == "m" else tmp_path)


# ------------------------------------------------------------------ files
def _rewrite(folder, name, change):
    """Apply ``change`` to the JSON file ``folder / name`` and record its new size and SHA-256 in the manifest."""
    from hinge_sc._files import sha256

    path = folder / name
    path.write_text(json.dumps(change(json.loads(path.read_text()))))
    if name != "manifest.json":
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["files"][name] = {"bytes": path.stat().st_size, "sha256": sha256(path)}
        (folder / "manifest.json").write_text(json.dumps(manifest))


def test_load_attaches_the_saved_anndata(model, tmp_path):
    model.save(tmp_path / "m", save_anndata=True)
    loaded = hs.HINGE.load(tmp_path / "m", device="cpu")
    assert loaded.adata is not None and list(loaded.adata.obs_names) == list(model.adata.obs_names)
    assert loaded.get_expression(n_samples=1, n_steps=2, seed=0).shape == (N_SPOTS, len(model.panel_genes_))
    assert hs.HINGE.load(tmp_path / "m", adata=make_adata(seed=3), device="cpu").adata.n_obs == N_SPOTS
    model.save(tmp_path / "bare")
    assert hs.HINGE.load(tmp_path / "bare", device="cpu").adata is None  # nothing saved, nothing attached


@pytest.mark.parametrize("entry", ["../outside.txt", "ABSOLUTE", "sub/outside.txt", "sub\\outside.txt", ".."])
def test_manifest_entries_must_be_plain_names(model, tmp_path, entry):
    from hinge_sc._files import FileIntegrityError, sha256

    outside = tmp_path / "outside.txt"
    outside.write_text("not the model's")
    entry = str(outside) if entry == "ABSOLUTE" else entry
    model.save(tmp_path / "m")
    record = {"bytes": outside.stat().st_size, "sha256": sha256(outside)}
    _rewrite(tmp_path / "m", "manifest.json", lambda m: {**m, "files": {**m["files"], entry: record}})
    with pytest.raises(FileIntegrityError, match=rf"lists the entry {re.escape(repr(entry))}, which is not a plain"):
        hs.HINGE.load(tmp_path / "m", device="cpu")


def test_edited_model_json_with_unknown_argument_is_named(model, tmp_path):
    from hinge_sc._files import FileIntegrityError

    def add_argument(metadata):
        metadata["attributes"]["init_params_"]["non_kwargs"]["n_stepz"] = 4
        return metadata

    model.save(tmp_path / "m")
    _rewrite(tmp_path / "m", "model.json", add_argument)
    with pytest.raises(FileIntegrityError, match=r"model.json records init argument\(s\) 'n_stepz' of HINGE.*edited"):
        hs.HINGE.load(tmp_path / "m", device="cpu")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_backbone_with_non_finite_weights_is_refused(tmp_path, value):
    import torch

    from hinge_sc._files import FileIntegrityError

    bb = backbone()
    with torch.no_grad():
        bb.zero_emb.view(-1)[0] = value
        bb.value_enc.mask_emb.view(-1)[:2] = value
    bb.save(tmp_path / "bb.pt")
    with pytest.raises(FileIntegrityError, match=r"NaN or infinite weights: tensor 'zero_emb' has 1 of 16 values"):
        hs.Backbone.load(tmp_path / "bb.pt")


def test_vocabulary_not_utf8_is_named(tmp_path):
    vocab = tmp_path / "genes.csv"
    vocab.write_bytes("gene\nGENE1\nG\u00e9NE2\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"The `vocabulary` file .*genes.csv is not UTF-8 text"):
        hs.Backbone.from_cellfm(tmp_path / "never_read.ckpt", vocabulary=vocab, n_heads=2)


def test_12_bit_image_is_scaled_by_its_bit_depth():
    from hinge_sc.pp._image import from_array

    image = np.full((8, 8, 3), 4095, np.uint16)
    image[:4] = 2048
    with pytest.warns(UserWarning, match=r"looks like a 12-bit image"):
        slide = from_array(image)
    crop = slide.crops(np.array([[4.0, 4.0]]), 8, None)[0]
    assert crop[6, 0, 0] == 255 and crop[0, 0, 0] == round(2048 * 255 / 4095)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        full = from_array(np.full((8, 8, 3), 65535, np.uint16))  # really 16-bit: no warning, 65535 → 255
    assert full.max_value is None and full.crops(np.array([[4.0, 4.0]]), 8, None).min() == 255


# ------------------------------------------------------------------ accepted inputs
@pytest.mark.parametrize("dense", [False, True])
def test_allow_non_integer_keeps_corrected_counts(dense):
    adata = make_adata(dense=dense)
    adata.X = adata.X * 0.7  # e.g. ambient-RNA corrected: non-negative, non-integer
    hs.HINGE.setup_anndata(adata, features_key="X_histology", allow_non_integer=True)
    assert hs.HINGE(adata, backbone()).setup_args["allow_non_integer"] is True
    RidgeProbe().fit(adata, allow_non_integer=True)


def test_integer_counts_in_float_storage_pass():
    registered(make_adata(dense=True))  # float32 integers: raw counts


def test_provenance_is_recorded_as_plain_types(model):
    record = model.registry_["feature_provenance"]
    assert record["encoder"] == "handcrafted" and record["n_features"] == N_FEATURES
    assert record["microns_per_pixel"] == {"S1": 0.5}
    json.dumps(record)  # JSON-able


def test_provenance_is_saved_with_the_model(model, tmp_path):
    model.save(tmp_path / "m")
    loaded = hs.HINGE.load(tmp_path / "m")
    assert loaded.registry_["feature_provenance"] == model.registry_["feature_provenance"]
    with pytest.raises(ValueError, match=r"trained on features with encoder 'handcrafted'"):
        generate(loaded, _with_params(encoder="conch"))


def test_generate_without_a_record_is_not_checked(model):
    adata = make_adata()
    del adata.uns["X_histology"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        generate(model, adata)


def test_slide_reader_keeps_pil_guard(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)  # a 100 × 100 px image is a "bomb" for this limit
    path = tmp_path / "slide.png"
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(path)
    assert open_image_file(path).shape == (100, 100)
    assert Image.MAX_IMAGE_PIXELS == 1_000
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)  # everyone else keeps PIL's guard


def test_pil_guard_is_on_after_import():
    assert Image.MAX_IMAGE_PIXELS is not None


# ------------------------------------------------------------------ CLI
def fake_her2st(root, sections=("C2", "C3")):
    for sub in ("counts", "spots", "images"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for s in sections:
        (root / "counts" / f"{s}.tsv.gz").write_bytes(b"")
        (root / "spots" / f"{s}_selection.tsv").write_text("")
        (root / "images" / f"{s}.jpg").write_bytes(b"")
    return root


CLI_CASES = {
    "data_missing": (lambda d: ["--data", str(d / "nope")], r"`--data` .* is not a folder"),
    "data_not_her2st": (lambda d: ["--data", str(d.parent)], r"does not look like the her2st data"),
    "section_missing": (lambda d: ["--data", str(d), "--test", "C9"], r"Sections \['C9'\] .* are not in `--data`"),
    "test_in_train": (lambda d: ["--data", str(d), "--train", "C2", "--test", "C2"], r"also in `--train`"),
    "epochs_0": (lambda d: ["--data", str(d), "--epochs", "0"], r"`--epochs` must be a positive integer"),
    "batch_size_negative": (lambda d: ["--data", str(d), "--batch-size", "-4"], r"`--batch-size` must be a positive"),
    "sampling_gt_diffusion": (lambda d: ["--data", str(d), "--sampling-steps", "60"],
                              r"`--sampling-steps` \(60\) must be ≤ `--diffusion-steps` \(50\)"),
    "patch_size_nan": (lambda d: ["--data", str(d), "--patch-size-um", "nan"], r"`--patch-size-um` must be a finite"),
    "backbone_missing": (lambda d: ["--data", str(d), "--backbone", str(d / "bb.pt")],
                         r"`--backbone` .* is not a file"),
    "vocabulary_missing": (lambda d: ["--data", str(d), "--vocabulary", str(d / "v.csv")],
                           r"`--vocabulary` .* is not a file"),
}


@pytest.mark.parametrize("case", list(CLI_CASES), ids=list(CLI_CASES))
def test_cli_user_error_is_one_line_and_creates_nothing(case, tmp_path, capsys):
    args, match = CLI_CASES[case]
    data, out = fake_her2st(tmp_path / "her2st", ["C2", "C3", "C4", "C5", "C6"]), tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", *args(data), "--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith("hinge-sc demo: error: ")
    assert re.search(match, err), err
    assert not out.exists()


@pytest.mark.parametrize("earlier", ["model/model.pt", "report.json", "generated_C6.csv"])
def test_cli_refuses_to_replace_an_earlier_run(earlier, tmp_path, capsys):
    data, out = fake_her2st(tmp_path / "her2st", ["C2", "C3", "C4", "C5", "C6"]), tmp_path / "out"
    (out / earlier).parent.mkdir(parents=True, exist_ok=True)
    (out / earlier).write_bytes(b"first run")
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--data", str(data), "--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"already holds the outputs of a run ({earlier.split('/')[0]})" in err and "`--overwrite`" in err
    assert (out / earlier).read_bytes() == b"first run"


def test_cli_overwrite_passes_the_check(tmp_path):
    from hinge_sc._cli import _parser, check_args

    data, out = fake_her2st(tmp_path / "her2st", ["C2", "C3", "C4", "C5", "C6"]), tmp_path / "out"
    (out / "model").mkdir(parents=True)
    check_args(_parser().parse_args(["demo", "--data", str(data), "--out", str(out), "--overwrite"]))



def test_spots_off_the_tissue_warn():
    """A wrong hires scale factor puts the spots on blank background: the features say nothing (issue 24)."""
    image = np.full((400, 400, 3), 240, dtype=np.uint8)
    image[:100, :100] = np.random.default_rng(0).integers(0, 255, size=(100, 100, 3))  # tissue in one corner
    adata = make_adata(6)
    adata.obsm["spatial"] = np.full((6, 2), 50.0)  # the spots' full-resolution coordinates: on the tissue at scale 1
    with_image(adata, image)
    adata.uns["spatial"]["S1"]["scalefactors"]["tissue_hires_scalef"] = 6.0  # wrong: maps them onto glass
    with pytest.warns(UserWarning, match=r"6 of 6 patches of section 'S1' are blank"):
        histology(adata, patch_size_um=10)


# ------------------------------------------------------------------ outputs the operating system refuses
def _refuse_writes(monkeypatch):
    """Every new temporary file or folder fails as on a read-only disk (root can write anywhere, so simulate it)."""
    import errno
    import tempfile

    def refused(*args, dir=None, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(dir))

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    monkeypatch.setattr(tempfile, "mkdtemp", refused)


def test_unwritable_outputs_name_the_argument(model, tmp_path, monkeypatch):
    from hinge_sc._files import OutputNotWritableError

    adata = make_adata()
    _refuse_writes(monkeypatch)
    with pytest.raises(OutputNotWritableError, match=r"`dir_path` .*saved: cannot write there \(Permission denied"):
        model.save(tmp_path / "saved")
    with pytest.raises(OutputNotWritableError, match=r"`path` .*bb.pt: cannot write there"):
        backbone(GENES).save(tmp_path / "bb.pt")
    with pytest.raises(OutputNotWritableError, match=r"`cache_dir` .*: cannot write there"):
        histology(image_adata(), cache_dir=tmp_path / "cache")


def test_unwritable_store_names_the_argument(model, tmp_path, monkeypatch):
    import errno

    import zarr

    from hinge_sc._files import OutputNotWritableError

    def refused(*args, **kwargs):
        raise PermissionError(errno.EROFS, "Read-only file system", str(tmp_path / "s.zarr"))

    monkeypatch.setattr(zarr, "open_group", refused)
    with pytest.raises(OutputNotWritableError, match=r"`store` .*s.zarr: cannot write there \(Read-only"):
        hs.tl.generate(model, make_adata(), store=tmp_path / "s.zarr", n_samples=1, n_steps=2, show_progress_bar=False)


def test_cli_unwritable_output_is_one_line(tmp_path, monkeypatch, capsys):
    adata = image_adata()
    del adata.obsm["X_histology"], adata.uns["X_histology"]
    adata.write_h5ad(tmp_path / "in.h5ad")
    _refuse_writes(monkeypatch)
    with pytest.raises(SystemExit) as exit_info:
        main(["features", str(tmp_path / "in.h5ad"), str(tmp_path / "out.h5ad"), "--encoder", "handcrafted"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    last = err.splitlines()[-1]
    assert re.match(r"hinge-sc features: error: `output` .*out.h5ad: cannot write there \(Permission denied", last), last


@pytest.mark.parametrize("content", [b"\xff\xd8\xff\xe0 truncated", b"not an image at all"])
def test_unreadable_section_image_names_the_section_and_its_path(tmp_path, content):
    path = tmp_path / "slide.jpg"
    if content.startswith(b"\xff"):  # a real JPEG cut in half
        Image.fromarray(np.zeros((300, 300, 3), np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[:200])
    else:
        path.write_bytes(content)
    adata = image_adata()
    adata.uns["spatial"]["S1"]["metadata"] = {"source_image_path": str(path)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"image of section 'S1' .*source_image_path.* is not usable: .*slide.jpg"):
            histology(adata)
