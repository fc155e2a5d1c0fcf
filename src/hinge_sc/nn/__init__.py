"""Neural-network blocks: the backbones (one class per architecture, registered in :data:`BACKBONES`), their layers
and SoftAdaLN."""

from __future__ import annotations

from ._adapted import HEADS, AdaptedBackbone, VarianceHead
from ._backbone import Backbone, register_backbone
from ._cellfm import CELLFM_CHECKPOINTS, download_cellfm
from ._cellfm_backbone import CellFMBackbone, SoftBinningValueEncoder, ValueDecoder
from ._config import CELLFM_SHAPES, BackboneConfig
from ._gene_aliases import GENE_ALIASES
from ._genes import GeneVocabulary, match_genes, read_hgnc_aliases
from ._inference import IncrementalDenoiser
from ._mindspore import MindSporeCheckpoint, read_mindspore_checkpoint
from ._provenance import CheckpointRecord, PretrainingRecord, Provenance
from ._registry import BACKBONES
from ._retention import MultiHeadRetention, RetentionLayer, SimpleGatedLinearUnit, per_head_rms_norm
from ._scgpt import ScGPTBackbone, ScGPTConfig, ScGPTLayer
from ._scgpt_checkpoint import SCGPT_CHECKPOINTS, download_scgpt, read_scgpt_vocabulary
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
    "BACKBONES",
    "CELLFM_CHECKPOINTS",
    "CELLFM_SHAPES",
    "GENE_ALIASES",
    "AdaptedBackbone",
    "Backbone",
    "BackboneConfig",
    "CellFMBackbone",
    "CheckpointRecord",
    "ConditionEmbedding",
    "FinalModulation",
    "GeneVocabulary",
    "IncrementalDenoiser",
    "MindSporeCheckpoint",
    "ModulationHead",
    "MultiHeadRetention",
    "PretrainingRecord",
    "Provenance",
    "RetentionLayer",
    "SCGPT_CHECKPOINTS",
    "ScGPTBackbone",
    "ScGPTConfig",
    "ScGPTLayer",
    "SimpleGatedLinearUnit",
    "SoftAdaLNLayer",
    "SoftBinningValueEncoder",
    "SoftNorm",
    "ValueDecoder",
    "VarianceHead",
    "HEADS",
    "download_cellfm",
    "download_scgpt",
    "match_genes",
    "modulate",
    "per_head_rms_norm",
    "read_hgnc_aliases",
    "read_mindspore_checkpoint",
    "read_scgpt_vocabulary",
    "register_backbone",
    "timestep_embedding",
]
