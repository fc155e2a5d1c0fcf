"""Neural-network blocks: the backbone, its layers and SoftAdaLN."""

from __future__ import annotations

from ._adapted import AdaptedBackbone
from ._backbone import CELLFM_SHAPES, Backbone, BackboneConfig, SoftBinningValueEncoder, ValueDecoder
from ._retention import MultiHeadRetention, RetentionLayer, SimpleGatedLinearUnit, per_head_rms_norm
from ._softadaln import (
    ConditionEmbedding,
    FinalModulation,
    ModulationHead,
    SoftAdaLNLayer,
    SoftNorm,
    modulate,
    timestep_embedding,
)

__all__ = [
    "CELLFM_SHAPES",
    "AdaptedBackbone",
    "Backbone",
    "BackboneConfig",
    "ConditionEmbedding",
    "FinalModulation",
    "ModulationHead",
    "MultiHeadRetention",
    "RetentionLayer",
    "SimpleGatedLinearUnit",
    "SoftAdaLNLayer",
    "SoftBinningValueEncoder",
    "SoftNorm",
    "ValueDecoder",
    "modulate",
    "per_head_rms_norm",
    "timestep_embedding",
]
