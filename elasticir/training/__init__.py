"""Training elastic encoders (issue 5): the losses of every fine-tuning method in docs/METHODS.md."""

from elasticir.training.losses import (
    ElasticLoss,
    FullGridSRLLoss,
    MRLLoss,
    PlainLoss,
    SRLLoss,
    TwoDMSELoss,
    validate_pairs,
)

__all__ = [
    "ElasticLoss",
    "FullGridSRLLoss",
    "MRLLoss",
    "PlainLoss",
    "SRLLoss",
    "TwoDMSELoss",
    "validate_pairs",
]
