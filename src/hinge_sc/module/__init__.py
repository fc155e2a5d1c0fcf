"""scvi-tools modules: tensors in, tensors out."""

from __future__ import annotations

from ._hinge import HINGEModule, expression_target
from ._sampler import reverse_step_grid, sample_masked

__all__ = ["HINGEModule", "expression_target", "reverse_step_grid", "sample_masked"]
