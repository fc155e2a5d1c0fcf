"""Persistence of :class:`~hinge_sc.nn.Backbone`: one ``torch.save`` file of tensors and plain data, read back with
``weights_only=True``, and the checksum that identifies a backbone."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hinge_sc._files import FileIntegrityError, load_tensors, refuse_existing, write_atomic

from ._provenance import Provenance
from ._registry import BACKBONES, backbone_class, unknown_architecture

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from ._backbone import Backbone

logger = logging.getLogger(__name__)

FORMAT = "hinge_sc.Backbone/1"
#: Attribute of a backbone read from files: how to read it again (see :func:`record_source`); not saved with it.
SOURCE_ATTR = "source_"
#: Readers :func:`load_from_source` can replay.
LOADERS = ("load", "from_cellfm")


def checksum(backbone: Backbone) -> str:
    """SHA-256 over the vocabulary, config and every tensor (first 16 hex digits)."""
    digest = hashlib.sha256(repr((backbone.genes, asdict(backbone.config))).encode())
    for name, tensor in sorted(backbone.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def save_backbone(backbone: Backbone, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``backbone`` to ``path`` atomically (see :meth:`hinge_sc.nn.Backbone.save`)."""
    path = Path(path)
    refuse_existing([path], overwrite=overwrite)
    payload = {
        "format": FORMAT,
        "architecture": backbone.architecture,
        "genes": backbone.genes,
        "config": asdict(backbone.config),
        "state_dict": backbone.state_dict(),
        "meta": backbone.provenance.to_dict(),
    }
    write_atomic(path, lambda tmp: torch.save(payload, tmp))
    logger.info("Saved backbone %s (%d genes) to %s", backbone.config.name, len(backbone.genes), path)
    return path


def load_backbone(path: str | Path, *, map_location: str | torch.device = "cpu") -> Backbone:
    """Read a file written by :func:`save_backbone` into a new backbone of the class registered under the file's
    architecture (see :meth:`hinge_sc.nn.Backbone.load`); files without one (the first format) are CellFM-style."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No backbone file at `path` {path}; write one with `Backbone.save(path)`.")
    payload = load_tensors(path, map_location=map_location, what="backbone file")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise FileIntegrityError(f"{path} is not a hinge_sc backbone file (expected format {FORMAT!r}).")
    architecture = payload.get("architecture", "cellfm")  # files of the first format are all CellFM-style
    if isinstance(architecture, str) and architecture not in BACKBONES:  # a sound file of an unregistered class
        raise ValueError(f"Cannot read the backbone file {path}: {unknown_architecture(architecture)}.")
    try:
        cls = backbone_class(architecture)
        genes, config, state = payload["genes"], cls.config_class(**payload["config"]), payload["state_dict"]
        if not isinstance(state, dict) or not isinstance(genes, list):
            raise TypeError("`genes` must be a list and `state_dict` a mapping of tensors")
        with torch.device("meta"):  # the shapes the config implies, without allocating them
            expected = {k: tuple(v.shape) for k, v in cls(genes, config).state_dict().items()}
        found = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
        wrong = sorted(k for k in expected if found.get(k) != expected[k])
        if wrong or len(found) != len(state):
            details = "; ".join(f"{k}: config implies {expected[k]}, file holds {found.get(k)}" for k in wrong[:5])
            raise ValueError(f"its config and vocabulary do not fit its tensors ({details})")
        model = cls(genes, config)
        model.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise FileIntegrityError(
            f"{path} is an incomplete or inconsistent backbone file ({err}); it is corrupt or was edited. Use the "
            "file as `Backbone.save` wrote it."
        ) from None
    for name, tensor in state.items():
        check_finite_tensor(tensor, name=name, path=path)
    model.provenance = Provenance.from_dict(payload.get("meta"))
    record_source(model, "load", {"path": path})
    return model


def check_finite_tensor(tensor: torch.Tensor, *, name: str, path: str | Path) -> None:
    """Raise :class:`~hinge_sc.FileIntegrityError` if the floating-point ``tensor`` (``name`` in the file ``path``)
    has a NaN or infinite value: weights like that make every output NaN."""
    if not (tensor.is_floating_point() or tensor.is_complex()) or tensor.numel() == 0:
        return
    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        n_bad = int((~finite).sum())
        raise FileIntegrityError(
            f"{path} holds NaN or infinite weights: tensor {name!r} has {n_bad} of {tensor.numel()} values that are "
            "not finite (the first such tensor). The file is corrupt, or it was saved from a run that diverged; use "
            "the weights of an earlier, finite checkpoint."
        )


def record_source(
    backbone: Backbone, loader: str, files: Mapping[str, str | Path], options: Mapping[str, Any] | None = None
) -> None:
    """Remember on ``backbone`` the files it was read from and how, so a model can save it by reference.

    Parameters
    ----------
    backbone
        The backbone just read.
    loader
        ``"load"`` (:meth:`Backbone.load`) or ``"from_cellfm"`` (:meth:`Backbone.from_cellfm`).
    files
        The reader's file arguments (name → path); stored as absolute paths.
    options
        The reader's other arguments (plain data).
    """
    source = {
        "loader": loader,
        "files": {name: str(Path(p).resolve()) for name, p in files.items()},
        "options": dict(options or {}),
    }
    setattr(backbone, SOURCE_ATTR, source)


def source_of(backbone: Backbone) -> dict[str, Any] | None:
    """What :func:`record_source` remembered about ``backbone`` (``None``: not read from files)."""
    return getattr(backbone, SOURCE_ATTR, None)


def load_from_source(
    cls: type[Backbone], loader: str, files: Mapping[str, str | Path], options: Mapping[str, Any]
) -> Backbone:
    """Read a backbone again as :func:`record_source` describes it (files already checked by the caller)."""
    if loader == "load":
        return cls.load(files["path"])
    if loader == "from_cellfm":
        opts = dict(options)
        config = opts.pop("config", "auto")
        config = backbone_class("cellfm").config_class(**config) if isinstance(config, dict) else config
        vocabulary = files.get("vocabulary", opts.pop("vocabulary", None))
        opts.pop("vocabulary", None)
        return cls.from_cellfm(files["ckpt_path"], vocabulary=vocabulary, config=config, **opts)
    raise ValueError(f"Unknown backbone reader {loader!r}; expected one of {LOADERS}.")

def mismatch_report(
    missing: Sequence[str], unexpected: Sequence[str], wrong: Sequence[str], *, limit: int = 10
) -> str | None:
    """One sentence per kind of mismatch between a checkpoint and a backbone, for the readers' ValueError.

    Parameters
    ----------
    missing, unexpected, wrong
        Parameters the checkpoint lacks, checkpoint tensors the backbone has no place for, and tensors of the wrong
        shape or type (each item already described).
    limit
        Items named per kind (the rest are counted).

    Returns
    -------
    E.g. ``"missing (2): a; b. mis-shaped (1): c: expected (4,), found (5,)"``; ``None`` when all three are empty.
    """
    problems = [
        f"{label} ({len(items)}): {'; '.join(items[:limit])}{' …' if len(items) > limit else ''}"
        for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", wrong))
        if items
    ]
    return ". ".join(problems) if problems else None
