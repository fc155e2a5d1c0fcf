"""hinge_sc: histology-conditioned generation of spatial transcriptomics (HINGE, CVPR 2026)."""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# a library leaves logging to its user (the command line configures it once)
logging.getLogger(__name__).addHandler(logging.NullHandler())

_SUBMODULES = ("pp", "tl", "pl", "datasets", "benchmark", "io", "model", "module", "nn", "train")
_LAZY = {
    "HINGE": "hinge_sc.model", "TrainingRecipe": "hinge_sc.model", "DEFAULT_RECIPE": "hinge_sc.model",
    "PAPER_RECIPE": "hinge_sc.model", "Backbone": "hinge_sc.nn", "FileIntegrityError": "hinge_sc._files",
    "pretrain_backbone": "hinge_sc.train", "ModuleConfig": "hinge_sc.model", "GenerationConfig": "hinge_sc.model",
    "LazySlideAdapter": "hinge_sc.tl", "OutputNotWritableError": "hinge_sc._files",
}  # fmt: skip

__all__ = [
    "DEFAULT_RECIPE", "HINGE", "PAPER_RECIPE", "Backbone", "FileIntegrityError", "GenerationConfig", "LazySlideAdapter",
    "ModuleConfig", "OutputNotWritableError", "TrainingRecipe", "benchmark",
    "datasets", "io", "model", "module", "nn", "pl", "pp", "pretrain_backbone", "tl", "train",
]  # fmt: skip

if TYPE_CHECKING:
    from . import benchmark, datasets, io, model, module, nn, pl, pp, tl, train
    from ._files import FileIntegrityError, OutputNotWritableError
    from .model import DEFAULT_RECIPE, HINGE, PAPER_RECIPE, GenerationConfig, ModuleConfig, TrainingRecipe
    from .nn import Backbone
    from .tl import LazySlideAdapter
    from .train import pretrain_backbone


def __getattr__(name: str):
    # keep `import hinge_sc` fast: scvi-tools, lightning and torch load on first use
    if name in _SUBMODULES:
        return importlib.import_module(f"hinge_sc.{name}")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hinge_sc' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
