"""The training recipe: one frozen definition of how HINGE is trained, shared by every entry point.

:class:`TrainingRecipe` holds every training default (epochs, learning rate and schedule, warm-start curriculum,
validation, early stopping, variance calibration). :data:`DEFAULT_RECIPE` is what :meth:`hinge_sc.HINGE.train`,
``hinge-sc train``, ``hinge-sc demo``, the benchmarks and the tutorials use unless told otherwise;
:data:`PAPER_RECIPE` is the schedule of the HINGE paper (40 epochs at 1e-4). A keyword argument of ``train`` that
names a field overrides it for that call (:meth:`TrainingRecipe.replace`).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, Literal

Validation = Literal["auto", "section", "spots"]


@dataclass(frozen=True)
class TrainingRecipe:
    """How a HINGE model is trained (docs/method.md §5–6). Frozen: derive variants with :meth:`replace`.

    Attributes
    ----------
    max_epochs
        Most epochs; early stopping usually ends sooner.
    views_per_epoch
        Augmented views of each training spot per epoch, drawn at random (``None``: every view, in order). With 8
        views, ``1`` makes an epoch 8× cheaper, so that early stopping is checked 8× as often for the same compute.
    batch_size
        Spots (views) per minibatch.
    lr, weight_decay
        AdamW settings.
    lr_milestones, lr_gamma
        The learning rate is multiplied by ``lr_gamma`` at these points, given as **fractions of** ``max_epochs``
        (``(0.5, 0.875)``: at epochs 20 and 35 of 40, 5 and 9 of 10). Whole numbers ≥ 1 are taken as epochs.
    warmup_epochs, warmup_mask_ratio
        Warm-start curriculum: during the first ``warmup_epochs`` epochs at most ``warmup_mask_ratio`` of the genes
        are hidden.
    validation
        What is held out for early stopping, for restoring the best epoch and for fitting the variance scale:
        ``"section"`` — whole sections (grouped by the ``section_key`` of :meth:`~hinge_sc.HINGE.setup_anndata`),
        so that the intervals are calibrated for a **new section**, not for spots beside the training spots;
        ``"spots"`` — random spots; ``"auto"`` — sections when the data has ≥ 3 of them, spots otherwise (logged).
    validation_size
        Fraction held out: of the sections (at least one) or of the spots. 0 disables validation.
    early_stopping, early_stopping_patience
        Stop when the validation loss has not improved for this many epochs.
    gradient_clip_val
        Gradient-norm clipping.
    calibrate_variance
        After training, fit the likelihood's calibration (the Gaussian's variance scale :math:`\\tau^2`) and the
        spread of the generated samples on the validation spots.
    weigh_correction
        With a linear skip (``HINGE(linear_skip=True)``), fit after training a per-gene weight in [0, 1] of the
        network's correction to the skip on the validation spots (:func:`hinge_sc.module.correction_weight`).
    refit_skip
        With a linear skip, refit its ridge on the training **and** validation spots once everything else is fitted
        (docs/method.md §5.6), so that the held-out section is not lost to the linear part of the model. The network
        learned the part of the expression the training spots' ridge leaves, which is uncorrelated with the
        features on those spots; a ridge on more spots is nearer the best linear predictor. Off by default until
        it is measured on held-out training sections (``benchmarks/her2st.py --methods hinge hinge_refit``).
    """

    max_epochs: int = 60
    views_per_epoch: int | None = 1
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.0
    lr_milestones: tuple[float, ...] = (0.5, 0.875)
    lr_gamma: float = 0.2
    warmup_epochs: int = 8
    warmup_mask_ratio: float = 0.2
    validation: Validation = "auto"
    validation_size: float = 0.2
    early_stopping: bool = True
    early_stopping_patience: int = 10
    gradient_clip_val: float = 1.0
    calibrate_variance: bool = True
    weigh_correction: bool = True
    refit_skip: bool = False

    def __post_init__(self):
        for name in ("max_epochs", "batch_size", "early_stopping_patience"):
            _check_int(getattr(self, name), name, low=1)
        _check_int(self.warmup_epochs, "warmup_epochs", low=0)
        if self.views_per_epoch is not None:
            _check_int(self.views_per_epoch, "views_per_epoch", low=1)
        for name, low_open in (("lr", True), ("lr_gamma", True), ("gradient_clip_val", True), ("weight_decay", False)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise TypeError(f"`{name}` must be a finite number, found {value!r}.")
            if value < 0 or (low_open and value == 0):
                raise ValueError(f"`{name}` must be {'> 0' if low_open else '≥ 0'}, found {value!r}.")
        if not 0 < self.warmup_mask_ratio <= 1:
            raise ValueError(f"`warmup_mask_ratio` must be in (0, 1], found {self.warmup_mask_ratio!r}.")
        if self.validation not in ("auto", "section", "spots"):
            raise ValueError(f"`validation` must be 'auto', 'section' or 'spots', found {self.validation!r}.")
        if not 0 <= self.validation_size < 1:
            raise ValueError(f"`validation_size` must be in [0, 1), found {self.validation_size!r}.")
        milestones = tuple(self.lr_milestones)
        if any(isinstance(m, bool) or not isinstance(m, numbers.Real) or not m > 0 for m in milestones):
            raise ValueError(
                f"`lr_milestones` must be positive fractions of `max_epochs` (e.g. (0.5, 0.875)) or epochs, found "
                f"{self.lr_milestones!r}."
            )
        object.__setattr__(self, "lr_milestones", milestones)

    def replace(self, **changes: Any) -> TrainingRecipe:
        """A copy with ``changes`` (field names; an unknown name raises a TypeError that lists the fields)."""
        unknown = sorted(set(changes) - set(self.fields()))
        if unknown:
            raise TypeError(f"{unknown} are not fields of TrainingRecipe; its fields are {list(self.fields())}.")
        if all(getattr(self, k) == v for k, v in changes.items()):
            return self  # no change: the same object (so "the default" stays one object)
        return dataclasses.replace(self, **changes)

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        """Names of the fields, in order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def milestone_epochs(self) -> list[int]:
        """``lr_milestones`` as epochs: fractions ``f < 1`` become ``max(1, round(f · max_epochs))``."""
        return sorted({int(m) if m >= 1 else max(1, round(m * self.max_epochs)) for m in self.lr_milestones})

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for ``train_params_``, model folders and reports)."""
        out = dataclasses.asdict(self)
        out["lr_milestones"] = list(self.lr_milestones)
        return out


def _check_int(value: Any, name: str, *, low: int) -> None:
    kind = "a positive integer" if low == 1 else f"an integer ≥ {low}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be {kind}, found {type(value).__name__} {value!r}.")
    if value < low:
        raise ValueError(f"`{name}` must be {kind}, found {value}. Pass e.g. `{name}={max(low, 1) * 4}`.")


#: The default recipe of every entry point (API, CLI, demo, benchmarks, tutorials). Chosen on held-out *training*
#: sections of her2st patient C (benchmarks/her2st_recipe.py, README "Recipe"); never on a test section.
DEFAULT_RECIPE = TrainingRecipe()

#: The HINGE paper's schedule: 40 epochs at lr 1e-4, × 0.2 at epochs 20 and 35, 5 warm-start epochs, patience 10,
#: random validation spots.
PAPER_RECIPE = TrainingRecipe(
    max_epochs=40, views_per_epoch=None, lr=1e-4, warmup_epochs=5, early_stopping_patience=10, validation="spots",
    validation_size=0.1,
)

#: Presets by name (``hinge-sc train --recipe NAME``).
RECIPES = {"default": DEFAULT_RECIPE, "paper": PAPER_RECIPE}


def resolve_recipe(
    recipe: TrainingRecipe | None, max_epochs: int | None, kwargs: dict[str, Any]
) -> tuple[TrainingRecipe, dict[str, Any]]:
    """The recipe of one ``train`` call and the keyword arguments left for the Trainer.

    ``recipe`` (default :data:`DEFAULT_RECIPE`) with ``max_epochs`` and every recipe field among ``kwargs``, and among
    scvi-tools' ``plan_config`` / ``plan_kwargs`` / ``trainer_config`` mappings, applied; the other keys are returned.
    """
    if recipe is None:
        recipe = DEFAULT_RECIPE
    elif not isinstance(recipe, TrainingRecipe):
        raise TypeError(
            f"`recipe` must be a hinge_sc.model.TrainingRecipe (e.g. `DEFAULT_RECIPE.replace(lr=1e-3)`), found "
            f"{type(recipe).__name__}."
        )
    rest = dict(kwargs)
    merged: dict[str, Any] = {}
    for name in ("plan_config", "plan_kwargs", "trainer_config"):
        config = rest.pop(name, None)
        if config is None:
            continue
        if dataclasses.is_dataclass(config):
            config = dataclasses.asdict(config)
        if not isinstance(config, dict):
            raise TypeError(f"`{name}` must be a mapping (or a dataclass), found {type(config).__name__}.")
        for key, value in config.items():
            (merged if key in TrainingRecipe.fields() else rest).__setitem__(key, value)
    fields = {k: rest.pop(k) for k in list(rest) if k in TrainingRecipe.fields()}
    merged.update(fields)
    if max_epochs is not None:
        merged["max_epochs"] = max_epochs
    return (recipe.replace(**merged) if merged else recipe), rest
