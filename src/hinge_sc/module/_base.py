"""The module interface that scvi-tools' training plans call, in pure torch (no scvi-tools import).

:class:`DiffusionModule` follows scvi-tools' ``BaseModuleClass`` contract — ``inference`` → ``generative`` →
``loss`` and ``forward(tensors, inference_kwargs=..., ...)`` returning the three outputs — so the training plan in
:mod:`hinge_sc.train` (the layer that imports scvi-tools and Lightning) drives it unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class LossOutput:
    """Loss of a minibatch: the scalar to minimise, the batch size and 0-d metrics to log.

    Attributes
    ----------
    loss
        0-d tensor.
    n_obs_minibatch
        Number of samples in the minibatch.
    extra_metrics
        Name → 0-d tensor, logged by the training plan.
    """

    loss: torch.Tensor
    n_obs_minibatch: int
    extra_metrics: dict[str, torch.Tensor] = field(default_factory=dict)


class DiffusionModule(nn.Module):
    """Base of the diffusion modules: ``forward`` runs inference, the generative step and the loss."""

    @property
    def device(self) -> torch.device:
        """Device of the module's parameters."""
        return next(self.parameters()).device

    def _get_inference_input(self, tensors: dict[str, torch.Tensor], **kwargs) -> dict[str, Any]:
        raise NotImplementedError

    def _get_generative_input(self, tensors, inference_outputs, **kwargs) -> dict[str, Any]:
        raise NotImplementedError

    def forward(
        self,
        tensors: dict[str, torch.Tensor],
        get_inference_input_kwargs: dict | None = None,
        get_generative_input_kwargs: dict | None = None,
        inference_kwargs: dict | None = None,
        generative_kwargs: dict | None = None,
        loss_kwargs: dict | None = None,
        compute_loss: bool = True,
    ):
        """``(inference_outputs, generative_outputs[, loss_output])`` for a minibatch of ``tensors``."""
        inference_inputs = self._get_inference_input(tensors, **(get_inference_input_kwargs or {}))
        inference_outputs = self.inference(**inference_inputs, **(inference_kwargs or {}))
        generative_inputs = self._get_generative_input(
            tensors, inference_outputs, **(get_generative_input_kwargs or {})
        )
        generative_outputs = self.generative(**generative_inputs, **(generative_kwargs or {}))
        if not compute_loss:
            return inference_outputs, generative_outputs
        return (
            inference_outputs,
            generative_outputs,
            self.loss(tensors, inference_outputs, generative_outputs, **(loss_kwargs or {})),
        )

    def on_load(self, model: Any, **kwargs) -> None:
        """Hook scvi-tools calls after loading (nothing to do)."""
