"""The user-facing model class, its configurations and its result type."""

from __future__ import annotations

from hinge_sc.module import DEFAULT_GENERATION, GenerationConfig, ModuleConfig
from hinge_sc.train import DEFAULT_RECIPE, PAPER_RECIPE, RECIPES, TrainingRecipe

from ._gaussian import HINGEGaussian
from ._hinge import HINGE
from ._prediction import GeneratedExpression, Prediction

__all__ = [
    "DEFAULT_GENERATION",
    "DEFAULT_RECIPE",
    "HINGE",
    "HINGEGaussian",
    "PAPER_RECIPE",
    "RECIPES",
    "GeneratedExpression",
    "GenerationConfig",
    "ModuleConfig",
    "Prediction",
    "TrainingRecipe",
]
