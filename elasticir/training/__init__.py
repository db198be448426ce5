"""Training elastic encoders: the losses of every fine-tuning method, their named recipes, and the trainer."""

from elasticir.training.losses import (
    ElasticLoss,
    FullGridSRLLoss,
    MRLLoss,
    PlainLoss,
    SortedNetLoss,
    SRLLoss,
    TwoDMSELoss,
    validate_pairs,
)
from elasticir.training.recipes import PRESETS

__all__ = [
    "PRESETS",
    "ElasticLoss",
    "FullGridSRLLoss",
    "MRLLoss",
    "PlainLoss",
    "SRLLoss",
    "SortedNetLoss",
    "TwoDMSELoss",
    "validate_pairs",
]
