"""Where a backbone's weights come from: a typed record saved with it (pre-training run, source checkpoint)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class PretrainingRecord:
    """Settings and outcome of :func:`hinge_sc.pretrain_backbone`.

    Attributes
    ----------
    objective
        Training objective.
    n_spots, n_genes
        Spots (or cells) and genes trained on.
    token_ids
        Token ids whose embeddings were trained (sorted).
    n_tokens, mask_ratio, max_epochs, lr, seed
        Settings of the run.
    history
        One row per epoch (``epoch``, ``train_loss``, ``validation_loss``).
    """

    objective: str
    n_spots: int
    n_genes: int
    token_ids: list[int]
    n_tokens: int
    mask_ratio: float
    max_epochs: int
    lr: float
    seed: int
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class CheckpointRecord:
    """A checkpoint the weights were read from (e.g. CellFM's MindSpore file)."""

    format: str
    path: str
    name: str


@dataclass
class Provenance:
    """Provenance of a backbone, saved with it (plain data only).

    Attributes
    ----------
    target_scale
        Expression scale the backbone was pre-trained on (``None``: unknown, e.g. CellFM's own).
    pretraining
        Record of :func:`hinge_sc.pretrain_backbone`, if it was pre-trained by hinge_sc.
    checkpoint
        The checkpoint it was read from, if any.
    """

    target_scale: str | None = None
    pretraining: PretrainingRecord | None = None
    checkpoint: CheckpointRecord | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain ``dict`` (saved in the backbone file)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Provenance:
        """Read :meth:`to_dict` output (unknown keys are ignored, so newer files still load)."""
        data = dict(data or {})

        def build(record_cls, value):
            if value is None:
                return None
            known = {f.name for f in fields(record_cls)}
            return record_cls(**{k: v for k, v in value.items() if k in known})

        return cls(
            target_scale=data.get("target_scale"),
            pretraining=build(PretrainingRecord, data.get("pretraining")),
            checkpoint=build(CheckpointRecord, data.get("checkpoint")),
        )
