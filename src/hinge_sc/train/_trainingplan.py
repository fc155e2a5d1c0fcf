"""Lightning training plan: warm-start curriculum, step-wise LR decay, best-checkpoint restore (docs/method.md §6)."""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING

import torch
from scvi.train import TrainingPlan

from hinge_sc.module import curriculum_max_step, warm_start_cap

if TYPE_CHECKING:
    from collections.abc import Sequence

    from hinge_sc.module import HINGEModule
    from hinge_sc.module._base import LossOutput

logger = logging.getLogger(__name__)

VALIDATION_SEED = 12345


class HINGETrainingPlan(TrainingPlan):
    """Training plan of :class:`~hinge_sc.HINGE`.

    - steps drawn from ``1..t_cap`` during the first ``warmup_epochs`` epochs, then ``1..T``;
    - AdamW, gradient clipping (set on the Trainer), learning rate × ``lr_gamma`` at ``lr_milestones``;
    - validation with uniform ``t`` and masks from a fixed generator, so its loss is comparable across epochs;
    - the trainable weights of the best validation epoch are kept and restored at the end.

    Metrics are logged under ``torch.no_grad`` rather than scvi-tools' ``torch.inference_mode``, which breaks
    gloo DDP.

    Parameters
    ----------
    module
        The :class:`~hinge_sc.module.HINGEModule`.
    lr, weight_decay
        AdamW settings.
    warmup_epochs
        Epochs of the warm-start curriculum ``E_w``.
    warmup_mask_ratio
        ``ρ``: largest fraction of hidden genes during warm-up.
    lr_milestones, lr_gamma
        Step decay of the learning rate.
    """

    def __init__(
        self,
        module: HINGEModule,
        *,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        warmup_epochs: int = 5,
        warmup_mask_ratio: float = 0.2,
        lr_milestones: Sequence[int] = (20, 35),
        lr_gamma: float = 0.2,
    ):
        super().__init__(module, optimizer="AdamW", lr=lr, weight_decay=weight_decay, eps=1e-8)
        self.warmup_epochs = int(warmup_epochs)
        self.t_cap = warm_start_cap(module.n_hidden.cpu().numpy(), module.n_genes, warmup_mask_ratio)
        self.lr_milestones = list(lr_milestones)
        self.lr_gamma = lr_gamma
        self.best_validation_loss = float("inf")
        self.best_epoch: int | None = None
        self.best_state: dict[str, torch.Tensor] | None = None

    @property
    def t_max(self) -> int:
        """Largest step drawn in the current epoch (warm-start curriculum)."""
        return curriculum_max_step(self.current_epoch, self.module.n_steps, self.t_cap, self.warmup_epochs)

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
