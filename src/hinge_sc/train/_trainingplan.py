"""Lightning training plan: warm-start curriculum, step-wise LR decay, best-checkpoint restore, and the steps before
and after training — the linear skip's ridge fit, the likelihood's and the spread's calibration (docs/method.md §5–6).
"""

from __future__ import annotations

import copy
import itertools
import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scvi.train import TrainingPlan

from hinge_sc._constants import MODULE_KEYS
from hinge_sc._random import spot_seeds
from hinge_sc._ridge import RidgeMoments, cv_fold_ids
from hinge_sc.module import (
    GenerationConfig,
    batch_bounds,
    correction_weight,
    curriculum_max_step,
    expression_target,
    iter_batches,
    resolve_batch_size,
    spread_scale,
    warm_start_cap,
)

from ._recipe import DEFAULT_RECIPE, TrainingRecipe

if TYPE_CHECKING:
    from hinge_sc.module import HINGEModule
    from hinge_sc.module._base import LossOutput

    from ._datamodule import HINGEDataModule

logger = logging.getLogger(__name__)

VALIDATION_SEED = 12345
#: Samples per validation spot when the spread is calibrated after training (the default of `generate`).
CALIBRATION_SAMPLES = 8


class HINGETrainingPlan(TrainingPlan):
    """Training plan of :class:`~hinge_sc.HINGE`.

    - before training (:meth:`on_fit_start`): the likelihood sees the training spots' library sizes, and the
      module's linear skip (if any) is fitted by ridge on the training spots, its penalty chosen by cross-validation
      over their sections;
    - steps drawn from ``1..t_cap`` during the first ``warmup_epochs`` epochs, then ``1..T``;
    - AdamW, gradient clipping (set on the Trainer), learning rate × ``lr_gamma`` at the recipe's milestones;
    - validation with uniform ``t`` and masks from a fixed generator, so its loss is comparable across epochs;
    - after training (:meth:`on_fit_end`): the trainable weights of the best validation epoch are restored and,
      with ``recipe.calibrate_variance``, the likelihood and the spread of generated samples are calibrated on the
      validation spots. What was fitted is in :attr:`results`.

    Metrics are logged under ``torch.no_grad`` rather than scvi-tools' ``torch.inference_mode``, which breaks
    gloo DDP.

    Parameters
    ----------
    module
        The :class:`~hinge_sc.module.HINGEModule`.
    recipe
        The training recipe (:class:`~hinge_sc.train.TrainingRecipe`; default :data:`~hinge_sc.train.DEFAULT_RECIPE`).
    seed
        Seed of the calibration's masks and generation streams.
    **overrides
        Fields of ``recipe`` to change (e.g. ``lr=1e-3``).
    """

    def __init__(self, module: HINGEModule, recipe: TrainingRecipe | None = None, *, seed: int = 0, **overrides: Any):
        recipe = (recipe or DEFAULT_RECIPE).replace(**overrides)
        super().__init__(module, optimizer="AdamW", lr=recipe.lr, weight_decay=recipe.weight_decay, eps=1e-8)
        self.recipe, self.seed = recipe, int(seed)
        self.warmup_epochs = recipe.warmup_epochs
        self.t_cap = warm_start_cap(module.n_hidden.cpu().numpy(), module.n_genes, recipe.warmup_mask_ratio)
        self.lr_milestones = recipe.milestone_epochs()
        self.lr_gamma = recipe.lr_gamma
        self.best_validation_loss = float("inf")
        self.best_epoch: int | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        #: What the hooks fitted: ``linear_skip_alpha``, ``restored``, ``variance_scale``, ``spread_scale``.
        self.results: dict[str, Any] = {"linear_skip_alpha": None, "restored": False, "variance_scale": None,
                                        "correction_weight": None, "spread_scale": None}  # fmt: skip

    @property
    def data(self) -> HINGEDataModule | None:
        """The trainer's data module (``None`` outside ``fit``)."""
        return getattr(self.trainer, "datamodule", None) if self._trainer is not None else None

    # ------------------------------------------------------------------ before and after training
    def on_fit_start(self):
        """The likelihood sees the training libraries; the linear skip is fitted on the training spots."""
        data = self.data
        if data is None:
            return
        self.module.likelihood.start_training(data.training_library())
        if self.module.linear_skip:
            self.results["linear_skip_alpha"] = self.fit_linear_skip(data)

    def fit_linear_skip(self, data: HINGEDataModule, *, with_validation: bool = False) -> float:
        """Fit the module's linear skip by ridge on the training spots (identity view), and with
        ``with_validation`` on the validation spots too (``recipe.refit_skip``); returns the penalty.

        The spots come a chunk (a section, for a streamed collection) at a time and only the ridge's moments are kept
        (:class:`~hinge_sc._ridge.RidgeMoments`), so the training spots need not fit in memory together.
        """
        module = self.module
        device = module.feature_mean.device
        chunks, groups = data.training_chunks(), data.training_groups()
        n = len(data.training_library())
        if with_validation and data.n_val > 0:
            val = data.validation_arrays()
            chunks = itertools.chain(chunks, [{k: val[k] for k in (MODULE_KEYS.FEATURES, MODULE_KEYS.COUNTS,
                                                                   MODULE_KEYS.LIBRARY)}])  # fmt: skip
            val_groups = data.validation_groups()
            groups = None if groups is None or val_groups is None else np.concatenate([groups, val_groups])
            n += data.n_val
        fold, by = cv_fold_ids(n, groups)
        moments, start = RidgeMoments(int(fold.max()) + 1), 0
        for chunk in chunks:
            x = module.standardize(chunk[MODULE_KEYS.FEATURES].to(device)).cpu().numpy()
            y = expression_target(chunk[MODULE_KEYS.COUNTS], chunk[MODULE_KEYS.LIBRARY], module.target_scale).numpy()
            moments.add(x, y, fold[start : start + len(x)])
            start += len(x)
        coef, intercept, alpha = moments.fit_cv(by=by)
        module.set_linear_skip(torch.as_tensor(coef, dtype=torch.float32, device=device),
                               torch.as_tensor(intercept, dtype=torch.float32, device=device))  # fmt: skip
        return alpha

    def on_fit_end(self):
        """Restore the best epoch's weights, then calibrate on the validation spots (``recipe.calibrate_variance``)."""
        self.results["restored"] = self.restore_best()
        data = self.data
        if data is None or data.n_val == 0 or not self.recipe.calibrate_variance:
            return
        module, device = self.module, self.module.feature_mean.device
        generator = torch.Generator(device).manual_seed(self.seed)
        batches = ({k: v.to(device) for k, v in b.items()} for b in data.val_dataloader())
        variance_scale = module.calibrate_likelihood(batches, generator=generator)
        held_out = ", ".join(map(str, data.validation_sections)) or "random spots"
        if variance_scale is not None:
            logger.info("Variance scale τ² = %.3f (fitted on %d validation spots: %s)", variance_scale, data.n_val,
                        held_out)  # fmt: skip
        self.results["variance_scale"] = variance_scale
        val = data.validation_arrays()
        if module.linear_skip and self.recipe.weigh_correction:
            self.results["correction_weight"] = self.weigh_correction(val)
        self.results["spread_scale"] = self.calibrate_spread(val)
        if module.linear_skip and self.recipe.refit_skip:
            self.results["linear_skip_alpha"] = self.fit_linear_skip(data, with_validation=True)
            self.results["skip_refit_on"] = data.n_train + data.n_val
            logger.info("Linear skip refitted on %d training and validation spots", data.n_train + data.n_val)

    def generate_validation(self, val: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Generate the validation spots as ``generate`` would: samples ``(n, S, G)``, points and targets ``(n, G)``."""
        module = self.module
        module.eval()
        config = GenerationConfig(n_samples=CALIBRATION_SAMPLES)
        n_val = len(val["spot_names"])
        samples = np.zeros((n_val, config.n_samples, module.n_genes), np.float32)
        points = np.zeros((n_val, module.n_genes), np.float32)
        batches = batch_bounds(n_val, resolve_batch_size(None, config.n_samples, module.feature_mean.device))
        feats = val[MODULE_KEYS.FEATURES].numpy()
        seeds = spot_seeds(self.seed, val["spot_names"])
        for start, stop, out, point in iter_batches(module, feats, seeds, batches, config, show_progress_bar=False):
            samples[start:stop], points[start:stop] = out, point
        target = expression_target(val[MODULE_KEYS.COUNTS], val[MODULE_KEYS.LIBRARY], module.target_scale).numpy()
        return samples, points, target

    @torch.no_grad()
    def weigh_correction(self, val: dict[str, Any]) -> float:
        """Fit the per-gene weight of the learned correction to the linear skip on the validation spots
        (:func:`~hinge_sc.module.correction_weight`, docs/method.md §5.6); returns the mean weight."""
        module = self.module
        module.correction_weight.fill_(1.0)
        _, points, target = self.generate_validation(val)
        skip = module.skip_term(val[MODULE_KEYS.FEATURES].to(module.feature_mean.device)).cpu().numpy()
        weight = correction_weight(target, points, skip)
        module.correction_weight.copy_(torch.as_tensor(weight, device=module.correction_weight.device))
        logger.info("Correction weight: mean %.3f, %d of %d genes at 0 (fitted on %d validation spots)",
                    weight.mean(), int((weight == 0).sum()), weight.size, len(target))  # fmt: skip
        return float(weight.mean())

    def calibrate_spread(self, val: dict[str, Any]) -> float:
        """Generate the validation spots and fit the samples' spread so their intervals cover (docs/method.md §5.6)."""
        module = self.module
        module.spread_scale.fill_(1.0)
        samples, _, target = self.generate_validation(val)
        c = spread_scale(target, samples)
        module.spread_scale.fill_(c)
        logger.info("Spread scale c = %.3f (intervals of %d samples fitted on %d validation spots)", c,
                    CALIBRATION_SAMPLES, len(target))  # fmt: skip
        return c

    @property
    def t_max(self) -> int:
        """Largest step drawn in the current epoch (warm-start curriculum)."""
        return curriculum_max_step(self.current_epoch, self.module.diffusion_steps, self.t_cap, self.warmup_epochs)

    def on_train_epoch_start(self):
        """Put the module in training mode (its own rule: the frozen backbone's dropout per ``backbone_dropout``).

        Lightning keeps the modes modules had when ``fit`` began, which depend on what was done with them before
        (e.g. a backbone shared with a model that was trained and set to eval); this makes training independent
        of that history.
        """
        self.module.train()

    def training_step(self, batch, batch_idx):
        _, _, out = self.forward(batch, inference_kwargs={"t_max": self.t_max})
        self.log("train_loss", out.loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=self.use_sync_dist)
        self.log("t_max", float(self.t_max), on_step=False, on_epoch=True, sync_dist=self.use_sync_dist)
        self.compute_and_log_metrics(out, self.train_metrics, "train")
        return out.loss

    def validation_step(self, batch, batch_idx):
        gen = torch.Generator(device=self.device).manual_seed(VALIDATION_SEED + batch_idx + 1000 * self.global_rank)
        _, _, out = self.forward(batch, inference_kwargs={"generator": gen})
        self.log("validation_loss", out.loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=self.use_sync_dist)
        self.compute_and_log_metrics(out, self.val_metrics, "validation")

    @torch.no_grad()
    def compute_and_log_metrics(self, loss_output: LossOutput, metrics, mode: str):
        """Log the module's extra metrics (no ELBO here); ``no_grad`` keeps gloo DDP working."""
        for key, value in loss_output.extra_metrics.items():
            self.log(
                f"{key}_{mode}",
                value.detach().float() if isinstance(value, torch.Tensor) else float(value),
                on_step=False,
                on_epoch=True,
                batch_size=loss_output.n_obs_minibatch,
                sync_dist=self.use_sync_dist,
            )

    def on_validation_epoch_end(self):
        value = self.trainer.callback_metrics.get("validation_loss")
        if value is None or self.trainer.sanity_checking:
            return
        value = float(value)
        if value < self.best_validation_loss:
            self.best_validation_loss, self.best_epoch = value, int(self.current_epoch)
            self.best_state = {
                k: v.detach().cpu().clone() for k, v in self.trainable_state_dict().items()
            }

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """State of the trainable parameters of the module (the frozen backbone excluded)."""
        trainable = {n for n, p in self.module.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.module.state_dict().items() if k in trainable}

    def restore_best(self) -> bool:
        """Load the weights of the best validation epoch into the module; False if there was none."""
        if self.best_state is None:
            return False
        self.module.load_state_dict(copy.copy(self.best_state), strict=False)
        return True

    def configure_optimizers(self):
        params = [p for p in self.module.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay, eps=self.eps)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=self.lr_milestones, gamma=self.lr_gamma)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
