"""The user-facing model class and its result type."""

from __future__ import annotations

from ._hinge import HINGE
from ._prediction import GeneratedExpression, Prediction
from ._recipe import DEFAULT_RECIPE, PAPER_RECIPE, RECIPES, TrainingRecipe

__all__ = ["DEFAULT_RECIPE", "HINGE", "PAPER_RECIPE", "RECIPES", "GeneratedExpression", "Prediction", "TrainingRecipe"]
