"""Baselines for benchmarking histology-to-expression generators, all with one fit / predict interface.

Every baseline writes its predictions like :func:`hinge_sc.tl.generate` (``obsm[key]``, ``obsm[key + "_std"]``,
``uns[key]["params"]``), so :func:`hinge_sc.tl.evaluate` and :mod:`hinge_sc.pl` score and plot every method the
same way. :class:`RidgeProbe` can choose its penalty by cross-validation grouped by section, and
:class:`ProbabilisticRidge` adds an out-of-fold Gaussian spread so its intervals and CRPS are scored like HINGE's.
:class:`HINGEGaussian` is HINGE with Gaussian instead of masked diffusion (the paper's key ablation).
"""

from __future__ import annotations

from ._base import Baseline, Prediction
from ._baselines import KNNRetrieval, MLPRegressor, TrainingMean
from ._ridge import ProbabilisticRidge, RidgeProbe

__all__ = [
    "Baseline",
    "HINGEGaussian",
    "KNNRetrieval",
    "MLPRegressor",
    "Prediction",
    "ProbabilisticRidge",
    "RidgeProbe",
    "TrainingMean",
]


def __getattr__(name: str):
    # the model class imports scvi-tools: load it on first use
    if name == "HINGEGaussian":
        from hinge_sc.model import HINGEGaussian

        return HINGEGaussian
    raise AttributeError(f"module 'hinge_sc.benchmark' has no attribute {name!r}")
