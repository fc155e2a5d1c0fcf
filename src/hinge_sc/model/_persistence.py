"""Save and load :class:`~hinge_sc.HINGE` models without pickle: JSON metadata, safetensors weights, a manifest.

A model folder holds

- ``model.json``: format, version, the scvi-tools registry and the model's attributes (plain JSON);
- ``model.safetensors``: the adaptation weights (everything but the frozen backbone);
- ``backbone.pt`` (optional): the frozen backbone, see :meth:`hinge_sc.Backbone.save`; by default a backbone read
  from files (:meth:`hinge_sc.Backbone.load`, :meth:`~hinge_sc.Backbone.from_cellfm`) is not copied but
  referenced in ``model.json`` (``backbone_reference``: reader, absolute and relative path, size and SHA-256 of each
  file), and read again from there by :func:`load_model`;
- ``adata.h5ad`` (optional): the registered data, attached again by :func:`load_model` when no ``adata`` is given;
- ``manifest.json``: size and SHA-256 of each file above, checked by :func:`load_model` before anything is read.

Folders written by hinge_sc 0.1.0 (one pickled ``model.pt``) are refused unless the caller opts in.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hinge_sc._constants import FEATURE_PROVENANCE_KEY, REGISTRY_KEYS
from hinge_sc._files import (
    MANIFEST_FILE,
    FileIntegrityError,
    read_json,
    refuse_existing,
    sha256,
    verify_manifest,
    write_atomic,
    write_json,
    write_manifest,
    writing_to,
)
from hinge_sc.nn._backbone_io import load_from_source, source_of

if TYPE_CHECKING:
    from anndata import AnnData

    from hinge_sc.nn import Backbone

    from ._hinge import HINGE

logger = logging.getLogger(__name__)

METADATA_FILE = "model.json"
WEIGHTS_FILE = "model.safetensors"
BACKBONE_FILE = "backbone.pt"
ADATA_FILE = "adata.h5ad"
LEGACY_FILE = "model.pt"
_FORMAT = "hinge_sc.HINGE/2"
_LEGACY_FORMAT = "hinge_sc.HINGE/1"
_BACKBONE_PREFIX = "denoiser.backbone."
#: Buffers and sub-modules renamed since 0.1.0 (old → new name or prefix of the state-dict key).
_RENAMED_STATE = {
    "mask_counts": "n_hidden",
    "denoiser.condition.": "denoiser.condition_embedding.",
    "log_variance_offset": "likelihood.log_variance_offset",  # the variance scale belongs to the likelihood (0.3)
    "denoiser.variance_head.": "denoiser.heads.log_variance.",
}
#: Arguments of :class:`HINGE` renamed since 0.1.0 (old → new).
_RENAMED_PARAMS = {"condition": "conditioning", "n_steps": "diffusion_steps"}
#: Arguments of :class:`HINGE` added (or whose default changed) since models were first saved, with the value a
#: model saved without them was built with: the model is rebuilt as it was trained.
_PARAMS_BEFORE = {"likelihood": "mse", "readout": False, "linear_skip": False}
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


def backbone_mode(model: HINGE, save_backbone: bool | None) -> str:
    """``"copy"``, ``"reference"`` or ``"none"``: how :func:`save_model` keeps the backbone.

    ``None`` references a frozen backbone that was read from files whose files still exist, else copies it.
    """
    if save_backbone is not None:
        return "copy" if save_backbone else "none"
    backbone = model.module.backbone
    source = source_of(backbone)
    if source is None or any(p.requires_grad for p in backbone.parameters()):
        return "copy"  # built in memory (random, pre-trained here) or fine-tuned: only a copy can restore it
    missing = [f for f in source["files"].values() if not Path(f).is_file()]
    if missing:
        logger.warning("The backbone's files %s are gone; saving a copy of the backbone instead.", missing)
        return "copy"
    return "reference"


def _backbone_reference(model: HINGE, folder: Path) -> dict[str, Any]:
    """Reader, files (absolute and relative path, size, SHA-256) and options of the model's backbone."""
    source = source_of(model.module.backbone)
    files = {}
    for name, file in source["files"].items():
        file = Path(file)
        relative = os.path.relpath(file, folder.resolve())
        files[name] = {
            "path": str(file),
            "relative_path": relative,
            "size": file.stat().st_size,
            "sha256": sha256(file),
        }
    return {"loader": source["loader"], "files": files, "options": source["options"]}


def _read_reference(reference: dict[str, Any], folder: Path, info: dict[str, Any]) -> Backbone:
    """Find and check the files of a backbone saved by reference, then read it (clear errors naming the file)."""
    from hinge_sc.nn import Backbone

    paths = {}
    for name, entry in reference["files"].items():
        path = Path(entry["path"])
        if not path.is_file():
            moved = (folder / entry["relative_path"]).resolve()
            path = moved if moved.is_file() else path
        if not path.is_file():
            raise FileNotFoundError(
                f"The model in {folder} references its backbone file {entry['path']} (SHA-256 {entry['sha256']}), "
                "which is not there any more. Put the file back, or pass the backbone yourself: "
                "`HINGE.load(path, backbone=hs.Backbone.load(new_path))` (or `Backbone.from_cellfm(...)`)."
            )
        found = sha256(path)
        if found != entry["sha256"] or path.stat().st_size != entry["size"]:
            raise FileIntegrityError(
                f"The backbone file {path} referenced by the model in {folder} has changed since the model was saved "
                f"(SHA-256 {found}, expected {entry['sha256']}). Restore the original file, or pass the backbone "
                f"the model was trained with via `backbone=` (name {info['name']!r}, checksum {info['checksum']})."
            )
        paths[name] = path
    logger.info("Reading the backbone by reference from %s", ", ".join(map(str, paths.values())))
    return load_from_source(Backbone, reference["loader"], paths, reference["options"])


def resolve_device(accelerator: str, device: str | int | torch.device) -> torch.device:
    """Torch device from Lightning-style ``accelerator`` / ``device`` (``"auto"``: a GPU when there is one).

    ``device`` may also name a torch device (``"cpu"``, ``"cuda:1"``), used as given.
    """
    if isinstance(device, torch.device):
        return device
    if isinstance(device, str) and device != "auto" and not device.isdigit():
        return torch.device(device)
    from scvi.model._utils import parse_device_args

    _, _, torch_device = parse_device_args(
        accelerator=accelerator, devices=device, return_device="torch", validate_single_device=True
    )
    return torch_device


def save_model(
    model: HINGE, dir_path: str | Path, *, overwrite: bool, save_anndata: bool, save_backbone: bool | None
) -> Path:
    """Write the model folder (see the module docstring); every file atomically, the manifest last.

    Raises
    ------
    FileExistsError
        Any file this call would write exists and ``overwrite`` is false (all of them are listed).
    """
    from safetensors.torch import save_file

    from hinge_sc import __version__

    if save_anndata and model.adata is None:
        raise ValueError("`save_anndata=True` but the model has no AnnData attached; pass `save_anndata=False`.")
    path = Path(dir_path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"`dir_path` {path} is a file; a model is saved as a folder. Pass a folder path.")
    mode = backbone_mode(model, save_backbone)
    files = [METADATA_FILE, WEIGHTS_FILE] + [BACKBONE_FILE] * (mode == "copy") + [ADATA_FILE] * save_anndata
    refuse_existing([path / name for name in [*files, MANIFEST_FILE]], overwrite=overwrite)
    path.mkdir(parents=True, exist_ok=True)
    (path / MANIFEST_FILE).unlink(missing_ok=True)  # a folder without a manifest never loads: no half-new model
    state = {
        k: v.detach().cpu().contiguous()
        for k, v in model.module.state_dict().items()
        if not k.startswith(_BACKBONE_PREFIX)
    }
    write_atomic(path / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp)))
    metadata = {
        "format": _FORMAT,
        "hinge_sc_version": __version__,
        "registry": model.registry_,
        "attributes": {name: getattr(model, name) for name in _ATTRIBUTES},
    }
    if mode == "reference":
        metadata["backbone_reference"] = _backbone_reference(model, path)
    write_json(path / METADATA_FILE, metadata)
    if mode == "copy":
        model.module.backbone.save(path / BACKBONE_FILE, overwrite=True)
    if save_anndata:
        write_atomic(path / ADATA_FILE, lambda tmp: model.adata.write_h5ad(tmp))
    write_manifest(path, files, meta={"format": _FORMAT, "hinge_sc_version": __version__})
    logger.info("Saved HINGE model to %s (%s)", path, ", ".join(files))
    if mode == "reference":
        referenced = ", ".join(f["path"] for f in metadata["backbone_reference"]["files"].values())
        logger.info("The backbone is saved by reference to %s (save_backbone=True copies it)", referenced)
    return path


def _read_legacy(path: Path, trust_legacy_pickle: bool) -> dict[str, Any]:
    """Read a hinge_sc 0.1.0 ``model.pt`` (a pickle) only when the caller trusts it."""
    if not trust_legacy_pickle:
        raise FileIntegrityError(
            f"{path} holds a model in the hinge_sc 0.1.0 format ({LEGACY_FILE}, a Python pickle). Loading a pickle "
            "can run any code its author put in it, so hinge_sc refuses it by default. If you wrote this file "
            "yourself or trust its source, load it once with `HINGE.load(path, trust_legacy_pickle=True)` and "
            "save it again with `model.save(new_path)` (the new format has no pickle)."
        )
    logger.warning("Unpickling %s because `trust_legacy_pickle=True`.", path / LEGACY_FILE)
    payload = torch.load(path / LEGACY_FILE, map_location="cpu", weights_only=False)
    if not isinstance(payload, dict) or payload.get("format") != _LEGACY_FORMAT:
        raise FileIntegrityError(f"{path / LEGACY_FILE} is not a hinge_sc model file.")
    return {
        "registry": payload["registry"],
        "attributes": payload["attributes"],
        "state": payload["adapter_state_dict"],
        "has_backbone": (path / BACKBONE_FILE).is_file(),
    }


def _read_current(path: Path) -> dict[str, Any]:
    """Verify the manifest, then read the metadata and the weights (no pickle)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    manifest = verify_manifest(path)
    listed = manifest["files"]
    for name in (METADATA_FILE, WEIGHTS_FILE):
        if name not in listed:
            raise FileIntegrityError(f"{path / MANIFEST_FILE} does not list {name}; the folder is incomplete.")
    metadata = read_json(path / METADATA_FILE)
    if not isinstance(metadata, dict) or metadata.get("format") != _FORMAT:
        found = metadata.get("format") if isinstance(metadata, dict) else type(metadata).__name__
        raise FileIntegrityError(
            f"{path / METADATA_FILE} is not a hinge_sc model file (format {found!r}, expected {_FORMAT!r})."
        )
    try:
        state = load_file(str(path / WEIGHTS_FILE))
    except (SafetensorError, OSError) as err:
        raise FileIntegrityError(f"{path / WEIGHTS_FILE} could not be read ({err}).") from None
    return {
        "registry": metadata["registry"],
        "attributes": metadata["attributes"],
        "state": state,
        "has_backbone": BACKBONE_FILE in listed,
        "has_adata": ADATA_FILE in listed,
        "backbone_reference": metadata.get("backbone_reference"),
    }


def _read_saved_adata(path: Path) -> AnnData:
    """Read the ``adata.h5ad`` that ``save(..., save_anndata=True)`` wrote (already checked against the manifest)."""
    import anndata as ad

    try:
        adata = ad.read_h5ad(path / ADATA_FILE)
    except Exception as err:  # h5py / anndata raise OSError, KeyError, ValueError … on a damaged file
        raise FileIntegrityError(
            f"{path / ADATA_FILE} could not be read as AnnData ({type(err).__name__}: {err}); the file is corrupt. "
            "Use an intact copy of the folder, or pass the data yourself with `HINGE.load(path, adata=...)`."
        ) from None
    logger.info("Attaching the AnnData saved with the model, %s (%d spots)", path / ADATA_FILE, adata.n_obs)
    return adata


def _check_params(cls: type[HINGE], params: dict[str, Any], path: Path) -> None:
    """Raise if the saved init arguments name one that ``cls`` does not take (an edited or foreign ``model.json``)."""
    import inspect

    signature = inspect.signature(cls.__init__)
    accepted = set(signature.parameters) - {"self", "adata", "backbone", "overrides"}
    accepted |= set(cls._default_config.field_names())
    unknown = sorted(k for k in params if k not in accepted)
    if unknown:
        from hinge_sc import __version__

        raise FileIntegrityError(
            f"{path / METADATA_FILE} records init argument(s) {', '.join(map(repr, unknown))} of {cls.__name__}, which "
            f"hinge_sc {__version__} does not take: the file was edited, or written by another version of hinge_sc. "
            "Restore the file as `model.save` wrote it, or load the model with the hinge_sc version that saved it "
            "(`hinge_sc_version` in model.json)."
        )


def _check_features(adata: AnnData, registry: dict, path: Path) -> None:
    """Before any weight is loaded: the data's feature width must be the saved model's."""
    key = registry["setup_args"].get("features_key")
    n_saved = registry["field_registries"][REGISTRY_KEYS.FEATURES_KEY]["summary_stats"].get(
        f"n_{REGISTRY_KEYS.FEATURES_KEY}"
    )
    if key in adata.obsm and n_saved is not None:
        n_found = np.shape(adata.obsm[key])[1] if np.ndim(adata.obsm[key]) == 2 else None
        if n_found != int(n_saved):
            raise ValueError(
                f"`adata.obsm[{key!r}]` has {n_found} features per spot, but the model in {path} was trained on "
                f"{int(n_saved)}. Compute the features with the encoder and settings used for training."
            )


def load_model(
    cls: type[HINGE],
    dir_path: str | Path,
    *,
    adata: AnnData | None,
    backbone: Backbone | None,
    device: str | torch.device,
    trust_legacy_pickle: bool = False,
) -> HINGE:
    """Rebuild a model from :func:`save_model` output (see :meth:`HINGE.load`)."""
    from hinge_sc.nn import Backbone

    path = Path(dir_path)
    if (path / MANIFEST_FILE).is_file():
        saved = _read_current(path)
    elif (path / LEGACY_FILE).is_file():
        saved = _read_legacy(path, trust_legacy_pickle)
    elif (path / METADATA_FILE).is_file():
        raise FileIntegrityError(
            f"{path} has no {MANIFEST_FILE}: the save that wrote it did not finish. Save the model again."
        )
    else:
        raise FileNotFoundError(f"No hinge_sc model in `dir_path` {path}; save a model there with `model.save(path)`.")
    attrs, registry = saved["attributes"], saved["registry"]
    info = attrs["backbone_info_"]
    if backbone is None and saved.get("backbone_reference") and not saved["has_backbone"]:
        backbone = _read_reference(saved["backbone_reference"], path, info)
    if backbone is None:
        if not saved["has_backbone"]:
            raise FileNotFoundError(
                f"The model in {path} was saved without its backbone; pass it with `backbone=` "
                f"(name {info['name']!r}, checksum {info['checksum']})."
            )
        backbone = Backbone.load(path / BACKBONE_FILE)
    if backbone.checksum() != info["checksum"]:
        raise ValueError(
            f"`backbone` (checksum {backbone.checksum()}) is not the backbone this model was trained with "
            f"(name {info['name']!r}, checksum {info['checksum']})."
        )
    params = dict(attrs["init_params_"]["non_kwargs"])
    for old, new in _RENAMED_PARAMS.items():  # arguments renamed since the model was saved
        if old in params:
            value = params.pop(old)
            params.setdefault(new, value)
    for name, value in _PARAMS_BEFORE.items():
        params.setdefault(name, value)
    _check_params(cls, params, path)
    if adata is None and saved.get("has_adata"):  # saved with `save_anndata=True` and checked by the manifest
        adata = _read_saved_adata(path)
    if adata is not None:
        _check_features(adata, registry, path)
        setup_args = {k: v for k, v in registry["setup_args"].items() if k != "kwargs"}
        cls.setup_anndata(adata, **setup_args)
        model = cls(adata, backbone, **params)
        if FEATURE_PROVENANCE_KEY in registry:  # the training features' settings, not the attached data's
            model.registry_[FEATURE_PROVENANCE_KEY] = registry[FEATURE_PROVENANCE_KEY]
    else:
        model = cls(None, backbone, registry=registry, **params)
    _load_weights(model, saved["state"], path)
    for name, value in attrs.items():
        setattr(model, name, value)
    model.to_device(device)
    model.module.eval()
    return model


def _renamed_key(key: str) -> str:
    """State-dict key under the current names (see ``_RENAMED_STATE``)."""
    for old, new in _RENAMED_STATE.items():
        if key == old or (old.endswith(".") and key.startswith(old)):
            return new + key[len(old) :]
    return key


def _load_weights(model: HINGE, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load the adaptation weights; name what does not fit."""
    state = {_renamed_key(k): v for k, v in state.items()}
    expected = {k: v.shape for k, v in model.module.state_dict().items() if not k.startswith(_BACKBONE_PREFIX)}
    if "likelihood.log_variance_offset" not in expected:  # saved before 0.3, where every module had the buffer
        state.pop("likelihood.log_variance_offset", None)
    wrong = [
        f"{k} {tuple(v.shape)} vs {tuple(expected[k])}"
        for k, v in state.items()
        if k in expected and v.shape != expected[k]
    ]
    if wrong:
        raise ValueError(f"Saved weights in {path} do not fit the model: mis-shaped {wrong[:10]}.")
    missing, unexpected = model.module.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(_BACKBONE_PREFIX)]
    if {"feature_mean", "feature_scale"} <= set(missing):  # saved before hinge_sc standardised features
        n = model.module.n_features
        model.module.set_feature_stats(torch.zeros(n), torch.ones(n))
        missing = [k for k in missing if k not in ("feature_mean", "feature_scale")]
    missing = [k for k in missing if k != "spread_scale"]  # saved before the spread calibration: 1 (as sampled)
    if missing or unexpected:
        raise ValueError(f"Saved weights in {path} do not fit the model: missing {missing}, unexpected {unexpected}.")


class SaveLoadMixin:
    """``save`` and ``load`` of :class:`~hinge_sc.HINGE` (JSON, safetensors and a manifest; nothing is pickled)."""

    def save(
        self,
        dir_path: str,
        *,
        overwrite: bool = False,
        save_anndata: bool = False,
        save_backbone: bool | None = None,
    ):
        """Save the trained adaptation, the registry and the backbone (or a reference to its file) to ``dir_path``.

        Writes ``model.json`` (registry and settings), ``model.safetensors`` (adaptation weights), optionally
        ``backbone.pt`` and ``adata.h5ad``, each atomically (a temporary file renamed in one step), then
        ``manifest.json`` with the size and SHA-256 of each. No file is a pickle.

        Parameters
        ----------
        dir_path
            Output folder.
        overwrite
            Replace files of an earlier save. Without it, nothing is written if any of the files exists.
        save_anndata
            Also write the registered AnnData.
        save_backbone
            ``None`` (default): a frozen backbone read from files (:meth:`hinge_sc.Backbone.load`,
            :meth:`~hinge_sc.Backbone.from_cellfm`, :meth:`~hinge_sc.Backbone.from_pretrained`) is saved **by
            reference**: the absolute and relative path, size and SHA-256 of its files go into ``model.json`` and
            :meth:`load` reads it from there (the 800M CellFM is not copied into every model); any other backbone
            (random, pre-trained in this session, fine-tuned) is copied to ``backbone.pt``. ``True``: always copy.
            ``False``: neither; pass the same backbone to :meth:`load` (its checksum is checked).

        Raises
        ------
        FileExistsError
            A file to be written exists and ``overwrite=False`` (every such file is listed).
        """
        with writing_to(dir_path, argument="dir_path"):
            save_model(self, dir_path, overwrite=overwrite, save_anndata=save_anndata, save_backbone=save_backbone)

    @classmethod
    def load(
        cls,
        dir_path: str,
        adata: AnnData | None = None,
        *,
        backbone: Backbone | None = None,
        accelerator: str = "auto",
        device: int | str | torch.device = "auto",
        trust_legacy_pickle: bool = False,
    ) -> HINGE:
        """Load a model written by :meth:`save`.

        Every file is checked against ``manifest.json`` (size and SHA-256) before it is read, and nothing is
        unpickled, so a folder received from someone else cannot run code.

        Parameters
        ----------
        dir_path
            Folder written by :meth:`save`.
        adata
            Optional data to attach (set up with the saved arguments; its feature width must be the model's); not
            needed for :meth:`generate` on new data. Default: the data saved with ``save(..., save_anndata=True)``
            (``adata.h5ad``, checked against the manifest), else none.
        backbone
            The frozen backbone, if it was not saved with the model, or to use instead of the file it references
            (checked against the saved checksum).
        accelerator, device
            Where to put the model, as in Lightning / scvi-tools: ``accelerator="auto"``, ``device="auto"`` picks a
            GPU when there is one, else the CPU; e.g. ``accelerator="gpu", device=1``. ``device`` may also name a
            torch device (``"cpu"``, ``"cuda:0"``).
        trust_legacy_pickle
            Only for files you trust: read a folder written by hinge_sc 0.1.0, whose ``model.pt`` is a pickle
            (unpickling can run any code its author put in the file). Save the model again to convert it.

        Raises
        ------
        FileNotFoundError
            No model in ``dir_path``; no backbone saved and none given; or the backbone file the model references
            is not at its path (nor at the same place relative to ``dir_path``); the file is named.
        hinge_sc.FileIntegrityError
            A file is missing, truncated or changed since it was saved (the file is named), the folder is from an
            unfinished save, it is a 0.1.0 folder and ``trust_legacy_pickle=False``, the referenced backbone
            file has changed (its SHA-256 differs), or ``model.json`` records an init argument this version does
            not take (the file was edited or written by another version; the argument is named).
        ValueError
            ``backbone`` or ``adata`` does not fit the saved model.
        """
        device = resolve_device(accelerator, device)
        return load_model(
            cls, dir_path, adata=adata, backbone=backbone, device=device, trust_legacy_pickle=trust_legacy_pickle
        )
