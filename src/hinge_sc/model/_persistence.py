"""Save and load :class:`~hinge_sc.HINGE` models: adaptation weights, registry and the frozen backbone."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from anndata import AnnData

    from hinge_sc.nn import Backbone

    from ._hinge import HINGE

logger = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
BACKBONE_FILE = "backbone.pt"
ADATA_FILE = "adata.h5ad"
_FORMAT = "hinge_sc.HINGE/1"
_BACKBONE_PREFIX = "denoiser.backbone."
_ATTRIBUTES = (
    "init_params_",
    "panel_genes_",
    "backbone_info_",
    "train_params_",
    "history_",
    "is_trained_",
    "train_indices_",
    "validation_indices_",
)


def save_model(model: HINGE, dir_path: str | Path, *, overwrite: bool, save_anndata: bool, save_backbone: bool) -> Path:
    """Write ``model.pt`` (adaptation weights, registry, attributes), ``backbone.pt`` and optionally the data."""
    from hinge_sc import __version__

    path = Path(dir_path)
    if (path / MODEL_FILE).exists() and not overwrite:
        raise FileExistsError(f"{path / MODEL_FILE} exists; pass `overwrite=True` to replace it.")
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v for k, v in model.module.state_dict().items() if not k.startswith(_BACKBONE_PREFIX)}
    payload = {
        "format": _FORMAT,
        "hinge_sc_version": __version__,
        "registry": model.registry_,
        "attributes": {name: getattr(model, name) for name in _ATTRIBUTES},
        "adapter_state_dict": state,
    }
    torch.save(payload, path / MODEL_FILE)
    if save_backbone:
        model.module.backbone.save(path / BACKBONE_FILE, overwrite=True)
    if save_anndata:
        if model.adata is None:
            raise ValueError("`save_anndata=True` but the model has no AnnData attached.")
        model.adata.write_h5ad(path / ADATA_FILE)
    logger.info("Saved HINGE model to %s", path)
    return path


def load_model(
    cls: type[HINGE],
    dir_path: str | Path,
    *,
    adata: AnnData | None,
    backbone: Backbone | None,
    device: str | torch.device,
) -> HINGE:
    """Rebuild a model from :func:`save_model` output (see :meth:`HINGE.load`)."""
    from hinge_sc.nn import Backbone

    path = Path(dir_path)
    if not (path / MODEL_FILE).is_file():
        raise FileNotFoundError(f"No {MODEL_FILE} in {path}; save a model there with `model.save(path)`.")
    # our own file: it holds the scvi-tools registry and the training history (pandas), hence full unpickling
    payload = torch.load(path / MODEL_FILE, map_location="cpu", weights_only=False)
    if payload.get("format") != _FORMAT:
        raise ValueError(f"{path / MODEL_FILE} is not a hinge_sc model file (expected format {_FORMAT!r}).")
    attrs = payload["attributes"]
    if backbone is None:
        if not (path / BACKBONE_FILE).is_file():
            raise FileNotFoundError(
                f"The model in {path} was saved without its backbone; pass it with `backbone=` "
                f"(name {attrs['backbone_info_']['name']!r}, checksum {attrs['backbone_info_']['checksum']})."
            )
        backbone = Backbone.load(path / BACKBONE_FILE)
    if backbone.checksum() != attrs["backbone_info_"]["checksum"]:
        raise ValueError(
            f"`backbone` (checksum {backbone.checksum()}) is not the backbone this model was trained with "
            f"(checksum {attrs['backbone_info_']['checksum']})."
        )
    registry = payload["registry"]
    params = dict(attrs["init_params_"]["non_kwargs"])
    if adata is not None:
        setup_args = {k: v for k, v in registry["setup_args"].items() if k != "kwargs"}
        cls.setup_anndata(adata, **setup_args)
        model = cls(adata, backbone, **params)
    else:
        model = cls(None, backbone, registry=registry, **params)
    missing, unexpected = model.module.load_state_dict(payload["adapter_state_dict"], strict=False)
    missing = [k for k in missing if not k.startswith(_BACKBONE_PREFIX)]
    if {"feature_mean", "feature_scale"} <= set(missing):  # saved before hinge_sc standardised features
        n = model.module.n_features
        model.module.set_feature_stats(torch.zeros(n), torch.ones(n))
        missing = [k for k in missing if k not in ("feature_mean", "feature_scale")]
    if missing or unexpected:
        raise ValueError(f"Saved weights do not fit the model: missing {missing}, unexpected {unexpected}.")
    for name, value in attrs.items():
        setattr(model, name, value)
    model.to_device(device)
    model.module.eval()
    return model
