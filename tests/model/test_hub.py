"""HINGE.save_to_hub / HINGE.load_from_hub (issue 23): a local stand-in for the Hub, no network.

``HfApi.create_repo`` and ``HfApi.upload_folder`` are replaced by a fake that writes the uploaded folder into a
local cache laid out as huggingface_hub's (``models--owner--name/{blobs,snapshots/<commit>,refs/main}``), which
``snapshot_download(..., local_files_only=True)`` then reads like any cached download.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

import hinge_sc as hs
from hinge_sc._files import FileIntegrityError, sha256
from hinge_sc.model._hub import CARD_FILE, TAGS, backbone_record
from hinge_sc.nn import CheckpointRecord
from hinge_sc.nn._backbone_io import SOURCE_ATTR

from .conftest import synthetic_adata

huggingface_hub = pytest.importorskip("huggingface_hub", reason="the `hub` extra is part of the `test` extra")
from huggingface_hub.file_download import repo_folder_name  # noqa: E402

REPO = "my-lab/hinge-tiny"


class FakeHub:
    """``create_repo`` / ``upload_folder`` of ``HfApi`` writing into a local Hub cache instead of the network."""

    def __init__(self, cache: Path):
        self.cache, self.calls = cache, {}

    def storage(self, repo_id: str) -> Path:
        return self.cache / repo_folder_name(repo_id=repo_id, repo_type="model")

    def snapshot(self, repo_id: str = REPO) -> Path:
        storage = self.storage(repo_id)
        return storage / "snapshots" / (storage / "refs" / "main").read_text()

    def create_repo(self, repo_id, **kwargs):
        self.calls["create_repo"] = {"repo_id": repo_id, **kwargs}
        return f"https://huggingface.co/{repo_id}"

    def create_branch(self, repo_id, *, branch, **kwargs):
        self.calls["create_branch"] = {"repo_id": repo_id, "branch": branch, **kwargs}

    def upload_folder(self, *, repo_id, folder_path, revision=None, **kwargs):
        self.calls["upload_folder"] = {"repo_id": repo_id, "revision": revision, **kwargs}
        storage, files = self.storage(repo_id), sorted(p for p in Path(folder_path).iterdir() if p.is_file())
        commit = hashlib.sha1("".join(sha256(p) for p in files).encode()).hexdigest()  # 40 hex digits, like git
        snapshot = storage / "snapshots" / commit
        snapshot.mkdir(parents=True)
        (storage / "blobs").mkdir(exist_ok=True)
        for path in files:  # blobs named by content, snapshot entries are relative links to them
            blob = storage / "blobs" / sha256(path)
            shutil.copyfile(path, blob)
            (snapshot / path.name).symlink_to(os.path.relpath(blob, snapshot))
        (storage / "refs").mkdir(exist_ok=True)
        (storage / "refs" / (revision or "main")).write_text(commit)  # no newline, as huggingface_hub writes it
        return commit


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def hub(monkeypatch, tmp_path):
    fake = FakeHub(tmp_path / "hub")
    for name in ("create_repo", "create_branch", "upload_folder"):  # bound methods of `fake`: no HfApi `self`
        monkeypatch.setattr(huggingface_hub.HfApi, name, getattr(fake, name))
    return fake


@pytest.fixture
def untrained(backbone):
    adata = synthetic_adata()
    hs.HINGE.setup_anndata(adata, features_key="X_histology", section_key="section")
    return hs.HINGE(adata, backbone, diffusion_steps=10)


def _load(hub, **kwargs):
    return hs.HINGE.load_from_hub(REPO, cache_dir=hub.cache, local_files_only=True, accelerator="cpu", **kwargs)


def test_round_trip_through_the_hub_cache(trained, hub):
    expected = trained.generate(n_samples=3, seed=11, show_progress_bar=False)
    trained.save_to_hub(REPO, metrics=pd.Series({"pcc_50": 0.41, "crps": 0.3}))
    assert hub.calls["create_repo"] == {"repo_id": REPO, "private": True, "exist_ok": True, "repo_type": "model"}
    names = sorted(p.name for p in hub.snapshot().iterdir())
    assert names == [CARD_FILE, "backbone.pt", "manifest.json", "model.json", "model.safetensors"]
    loaded = _load(hub)
    assert loaded.panel_genes_ == trained.panel_genes_
    got = loaded.generate(trained.adata, n_samples=3, seed=11, show_progress_bar=False)
    pd.testing.assert_frame_equal(got.mean, expected.mean)
    pd.testing.assert_frame_equal(got.std, expected.std)


def test_card_front_matter_names_library_licence_and_tags(trained, hub):
    trained.save_to_hub(REPO, model_card={"datasets": ["her2st"], "tags": ["breast"]})
    card = huggingface_hub.ModelCard.load(hub.snapshot() / CARD_FILE)
    assert card.data.library_name == "hinge_sc"
    assert card.data.license == "unknown"  # a random backbone: no recorded licence
    assert card.data.tags == [*TAGS, "breast"]
    assert card.data.datasets == ["her2st"]


def test_card_body_describes_data_panel_units_and_metrics(trained, hub):
    trained.save_to_hub(REPO, metrics={"pcc_50": 0.4123}, description="Tiny synthetic model.")
    text = (hub.snapshot() / CARD_FILE).read_text()
    assert "Tiny synthetic model." in text
    assert f"{len(trained.panel_genes_)} genes: `GENE0`" in text
    assert "log2(count+1)" in text and "| pcc_50 | 0.4123 |" in text
    assert "| sections | 2: S1, S2 |" in text
    assert f"hinge_sc {hs.__version__}" in text


@pytest.mark.parametrize(
    ("record", "license"),
    [
        (CheckpointRecord(format="mindspore", path="/ckpt/CellFM_80M_weight.ckpt", name="cellfm-80m"),
         "cc-by-nc-nd-4.0"),
        (CheckpointRecord(format="scgpt", path="/models/scgpt", name="scgpt-human"), "mit"),
        (CheckpointRecord(format="other", path="/x", name="x"), "unknown"),
        (None, "unknown"),
    ],
)  # fmt: skip
def test_licence_comes_from_the_backbone_provenance(untrained, monkeypatch, record, license):
    monkeypatch.setattr(untrained.module.backbone.provenance, "checkpoint", record)
    assert backbone_record(untrained)["license"] == license


@pytest.mark.filterwarnings("ignore:The model is not trained")
def test_cellfm_weights_set_the_licence_and_warn_when_uploaded(untrained, hub, monkeypatch):
    record = CheckpointRecord(format="mindspore", path="/ckpt/CellFM_80M_weight.ckpt", name="cellfm-80m")
    monkeypatch.setattr(untrained.module.backbone.provenance, "checkpoint", record)
    with pytest.warns(UserWarning, match=r"cc-by-nc-nd-4.0 \(non-commercial, no derivatives\)"):
        untrained.save_to_hub(REPO)
    card = huggingface_hub.ModelCard.load(hub.snapshot() / CARD_FILE)
    assert card.data.license == "cc-by-nc-nd-4.0"
    assert "ShangguanNingyuan/CellFM" in card.text
    with pytest.warns(UserWarning, match="but the backbone's weights are under 'cc-by-nc-nd-4.0'"):
        untrained.save_to_hub(REPO, license="mit", save_backbone=False)


def test_revision_uploads_to_a_branch(trained, hub):
    trained.save_to_hub(REPO, revision="v1")
    assert hub.calls["create_branch"]["branch"] == "v1" and hub.calls["upload_folder"]["revision"] == "v1"
    assert _load(hub, revision="v1").panel_genes_ == trained.panel_genes_


@pytest.mark.parametrize("name", ["model.safetensors", "model.json", "backbone.pt"])
def test_tampered_cache_file_raises_the_integrity_error(trained, hub, name):
    trained.save_to_hub(REPO)
    path = hub.snapshot() / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))  # writes through the link into the cached blob
    with pytest.raises(FileIntegrityError, match=r"does not match the SHA-256.*Hub download of 'my-lab/hinge-tiny'"):
        _load(hub)


def test_card_edited_on_the_hub_still_loads(trained, hub):
    trained.save_to_hub(REPO)
    card = hub.snapshot() / CARD_FILE
    card.write_text(card.read_text() + "\nEdited in the browser.\n")  # the card is outside the manifest
    assert _load(hub).panel_genes_ == trained.panel_genes_


def test_backbone_saved_by_reference_is_not_uploaded(trained, hub, monkeypatch, tmp_path, backbone):
    trained.module.backbone.save(tmp_path / "bb.pt")
    source = {"loader": "load", "files": {"path": str(tmp_path / "bb.pt")}, "options": {}}
    monkeypatch.setattr(trained.module.backbone, SOURCE_ATTR, source, raising=False)  # as if read with Backbone.load
    trained.save_to_hub(REPO)
    assert not (hub.snapshot() / "backbone.pt").exists()
    assert "backbone_reference" not in (hub.snapshot() / "model.json").read_text()  # no path of this machine
    with pytest.raises(FileNotFoundError, match="pass it with `backbone=`"):
        _load(hub)
    assert _load(hub, backbone=backbone).panel_genes_ == trained.panel_genes_


@pytest.mark.parametrize("call", ["save", "load"])
def test_missing_huggingface_hub_names_the_extra(untrained, monkeypatch, call):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # `import huggingface_hub` raises ImportError
    with pytest.raises(ImportError, match=r'pip install "hinge_sc\[hub\]"'):
        untrained.save_to_hub(REPO) if call == "save" else hs.HINGE.load_from_hub(REPO)


@pytest.mark.parametrize("repo_id", ["hinge-tiny", "a/b/c", "/name", "owner/", "my lab/x", "a--b/c", "owner/-x", ""])
@pytest.mark.parametrize("call", ["save", "load"])
def test_bad_repo_id_raises(untrained, hub, repo_id, call):
    with pytest.raises(ValueError, match="`repo_id` must be 'owner/name'"):
        untrained.save_to_hub(repo_id) if call == "save" else hs.HINGE.load_from_hub(repo_id)
    assert not hub.calls


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"metrics": {"pcc_50": "high"}}, TypeError, "`metrics` must map metric names to numbers"),
        ({"metrics": [0.4]}, TypeError, "`metrics` must be a mapping"),
        ({"model_card": {"license": "mit"}}, ValueError, r"`model_card` sets \['license'\]"),
        ({"license": "MIT License"}, ValueError, "`license` must be a Hub licence id"),
    ],
)
def test_bad_card_arguments_raise_before_upload(untrained, hub, kwargs, error, match):
    with pytest.raises(error, match=match):
        untrained.save_to_hub(REPO, **kwargs)
    assert not hub.calls


def test_untrained_model_warns(untrained, hub):
    with pytest.warns(UserWarning, match="not trained"):
        untrained.save_to_hub(REPO)
    assert "upload_folder" in hub.calls
