"""Registry and module keys (no bare key strings elsewhere)."""

from __future__ import annotations

from typing import NamedTuple


class _RegistryKeys(NamedTuple):
    X_KEY: str = "X"
    FEATURES_KEY: str = "features"
    VIEWS_KEY: str = "views"


class _ModuleKeys(NamedTuple):
    COUNTS: str = "counts"
    LIBRARY: str = "library"
    FEATURES: str = "features"
    TARGET: str = "x0"
    X_T: str = "x_t"
    STEP: str = "t"
    VISIBLE: str = "visible"
    VISIBLE_PREV: str = "visible_prev"
    CONDITION: str = "condition"
    PREDICTION: str = "mean"
    LOG_VARIANCE: str = "log_variance"
    SKIP: str = "linear_skip"


REGISTRY_KEYS = _RegistryKeys()
MODULE_KEYS = _ModuleKeys()

#: Environment variable pointing at a local copy of the data folder (``her2st/``, ``vocab/`` …).
DATA_DIR_ENV = "HINGE_SC_DATA_DIR"

#: Top-level key of a model's registry holding the settings of its image features (see ``model/_provenance.py``).
FEATURE_PROVENANCE_KEY = "feature_provenance"

#: ``uns`` key of an AnnData built by :func:`hinge_sc.tl.to_adata` (provenance); also marks the generated tables of a
#: SpatialData object, which table resolution does not take for the measured spots.
GENERATED_KEY = "hinge_sc"


#: Feature defaults of the one recipe (issue 21; chosen on held-out her2st sections, README "Recipe"), used by
#: :func:`hinge_sc.pp.histology_features` and the command line: the spatial context of a 3× field of view, and every
#: feature standardised within its section.
DEFAULT_CONTEXT = "field"
DEFAULT_STANDARDIZE = "section"
