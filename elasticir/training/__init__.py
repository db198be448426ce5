"""Training elastic encoders: the losses of every fine-tuning method (plain, MRL, 2DMSE, Starbucks SRL, full-grid
SRL), each wrapping a sentence-transformers base loss, and the trainer that drives them."""

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
