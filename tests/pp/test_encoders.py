"""Encoder registry: sizes, normalisation, output rules and concatenation (stand-in modules, no timm needed)."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import hinge_sc as hs
from hinge_sc.pp._encoder_hub import build_architecture
from hinge_sc.pp._encoders import ENCODERS, get_spec, state_dict_sha256

HAS_TIMM = importlib.util.find_spec("timm") is not None
HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None
PAPER_DIMS = {"uni": 1024, "uni2-h": 1536, "conch": 512, "virchow2": 2560, "h-optimus-0": 1536, "phikon": 768,
              "phikon-v2": 1024, "resnet50": 2048}  # fmt: skip


class StandIn(torch.nn.Module):
    """Records its input; returns ``dim`` features (or tokens) that depend on the input."""

    def __init__(self, dim: int, tokens: int = 0):
        super().__init__()
        self.proj = torch.nn.Linear(3, dim)
        self.tokens = tokens
        self.seen: torch.Tensor | None = None

    def forward(self, x=None, pixel_values=None):
        if pixel_values is not None:  # the transformers interface
            return SimpleNamespace(last_hidden_state=self(pixel_values)[:, None, :])
        self.seen = x.detach().clone()
        pooled = self.proj(x.mean((2, 3)))
        if self.tokens:  # (B, tokens, dim): class token, then the others
            return pooled[:, None, :] * torch.arange(1, self.tokens + 1, dtype=x.dtype)[None, :, None]
        return pooled

    def encode_image(self, x, proj_contrast=True, normalize=True):  # the CONCH interface
        assert proj_contrast is False and normalize is False
        return self(x)


def _grey(n=2, side=40, value=128):
    return np.full((n, side, side, 3), value, dtype=np.uint8)


def test_registry_matches_the_models():
    assert {k: s.dim for k, s in ENCODERS.items()} == PAPER_DIMS
    assert get_spec("conch").input_size == 448 and get_spec("UNI").input_size == 224
    assert get_spec("H_optimus_0") is get_spec("hoptimus0") is ENCODERS["h-optimus-0"]
    assert get_spec("UNI2-h").architecture == "vit_giant_patch14_224"
    with pytest.raises(ValueError, match="`encoder='gigapath2'` is not known"):
        get_spec("gigapath2")


@pytest.mark.parametrize("name", ["uni", "conch", "h-optimus-0", "phikon-v2"])
def test_input_size_and_normalisation(name):
    spec = get_spec(name)
    stand_in = StandIn(spec.dim)
    enc = hs.pp.load_encoder(name, model=stand_in)
    out = enc(_grey(value=128))
    assert out.shape == (2, spec.dim) and out.dtype == np.float32
    seen = stand_in.seen
    assert seen.shape == (2, 3, spec.input_size, spec.input_size)
    expected = (128 / 255 - np.asarray(spec.mean)) / np.asarray(spec.std)
    np.testing.assert_allclose(seen.mean((0, 2, 3)).numpy(), expected, rtol=1e-4)


def test_virchow_reads_class_token_and_mean_patch_token():
    enc = hs.pp.load_encoder("virchow2", model=StandIn(1280, tokens=7))
    out = enc(_grey())
    assert out.shape == (2, 2560)
    cls, mean = out[:, :1280], out[:, 1280:]
    np.testing.assert_allclose(mean, cls * np.mean([6, 7]), rtol=1e-5)  # tokens 5, 6 (after 1 cls + 4 registers)


def test_concatenation_as_in_the_paper(her2st_crop, tmp_path):
    adata = her2st_crop[:4].copy()
    uni, conch = StandIn(1024), StandIn(512)
    encoders = [hs.pp.load_encoder("uni", model=uni), hs.pp.load_encoder("conch", model=conch)]
    hs.pp.histology_features(adata, encoder=encoders, views=1, batch_size=3, context=None, standardize=None,
                             show_progress_bar=False)  # fmt: skip
    x = adata.obsm["X_histology"]
    assert x.shape == (4, 1536)
    assert uni.seen.shape[-1] == 224 and conch.seen.shape[-1] == 448  # patches cut at 448, resized for UNI
    params = adata.uns["X_histology"]["params"]
    assert params["encoder"] == "uni+conch" and params["out_size"] == 448
    parts = list(params["encoder_info"]["parts"].values())
    assert [p["name"] for p in parts] == ["uni", "conch"] and parts[1]["input_size"] == 448
    assert parts[0]["weights_sha256"] == state_dict_sha256(uni) and parts[0]["weights"] == "user"
    np.testing.assert_allclose(x[:, :1024], encoders[0](hs.pp.extract_patches(adata, out_size=448,
                               show_progress_bar=False)), rtol=1e-5, atol=1e-6)  # fmt: skip
    adata.write_h5ad(tmp_path / "features.h5ad")  # the recorded settings can be stored


def test_handcrafted_in_a_list_is_resized(her2st_crop):
    adata = her2st_crop[:3].copy()
    hs.pp.histology_features(adata, encoder=["handcrafted", hs.pp.load_encoder("uni", model=StandIn(8))], views=1,
                             context=None, standardize=None, show_progress_bar=False)  # fmt: skip
    assert adata.obsm["X_histology"].shape == (3, 80 + 8)
    alone = hs.pp.histology_features(adata, views=1, context=None, standardize=None, copy=True, key_added="h",
                                     show_progress_bar=False).obsm["h"]  # fmt: skip
    assert np.corrcoef(alone.ravel(), adata.obsm["X_histology"][:, :80].ravel())[0, 1] > 0.99


def test_hub_failure_says_how_to_get_the_weights(monkeypatch):
    from hinge_sc.pp import _encoder_hub

    def gated(spec, token):
        raise RuntimeError("401 Client Error: access to model MahmoodLab/uni is restricted")

    monkeypatch.setattr(_encoder_hub, "_from_hub", gated)
    with pytest.raises(OSError, match=r"huggingface\.co/MahmoodLab/uni failed .*`token=`.*weights="):
        hs.pp.load_encoder("uni")


def test_missing_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"`weights=.*does not exist"):
        hs.pp.load_encoder("uni", weights=tmp_path / "nope.bin")


@pytest.mark.skipif(HAS_TIMM, reason="timm is installed; this checks the message when it is absent")
def test_missing_timm_is_explained():
    with pytest.raises(ImportError, match=r"needs the `timm` package.*hinge_sc\[encoders\]"):
        hs.pp.load_encoder("uni", pretrained=False)


@pytest.mark.parametrize("name", [n for n, s in ENCODERS.items() if s.library in ("timm", "transformers")])
def test_architectures_build_offline(name):
    spec = get_spec(name)
    if not (HAS_TIMM if spec.library == "timm" else HAS_TRANSFORMERS):
        pytest.skip(f"{spec.library} is not installed (optional extra `encoders`); stand-ins test the registry")
    with torch.device("meta"):  # the architecture without allocating its weights
        model = build_architecture(spec)
        x = torch.empty(1, 3, spec.input_size, spec.input_size)
        if spec.output == "cls":
            out = model(pixel_values=x).last_hidden_state[:, 0]
        else:
            out = model(x)
        if spec.output == "cls_mean":
            out = torch.cat([out[:, 0], out[:, spec.n_prefix_tokens :].mean(1)], dim=-1)
    assert out.shape == (1, spec.dim)


@pytest.mark.parametrize(("name", "library"), [("resnet50", "timm"), ("phikon", "transformers")])
def test_weights_file_roundtrip(name, library, tmp_path):
    if not (HAS_TIMM if library == "timm" else HAS_TRANSFORMERS):
        pytest.skip(f"{library} is not installed (optional extra `encoders`)")
    torch.manual_seed(0)
    random = hs.pp.load_encoder(name, pretrained=False)
    path = tmp_path / "weights.bin"
    torch.save(random.model.state_dict(), path)
    loaded = hs.pp.load_encoder(name, weights=path)
    assert loaded.weights == str(path) and loaded.weights_sha256 == random.weights_sha256
    patches = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    np.testing.assert_allclose(loaded(patches), random(patches), rtol=1e-5, atol=1e-5)


def test_device_is_selectable(her2st_crop):
    adata = her2st_crop[:2].copy()
    module = StandIn(4)
    hs.pp.histology_features(adata, encoder=module, out_size=16, views=1, device="cpu", context=None,
                             standardize=None, show_progress_bar=False)  # fmt: skip
    assert adata.obsm["X_histology"].shape == (2, 4) and not module.training
    assert adata.uns["X_histology"]["params"]["encoder_info"]["weights_sha256"] == state_dict_sha256(module)
