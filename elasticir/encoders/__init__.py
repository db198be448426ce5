"""The encoder stage: the elastic encoder (one early-exiting pass gives every layer) and the on-disk
per-layer embedding store that every dim and index type reads."""

from elasticir.encoders.model import (
    ALIASES,
    DEFAULT_MODEL,
    WHEEL_MODELS,
    ElasticEncoder,
    ModelInfo,
    StopForward,
    default_device,
    default_dtype,
    load_sentence_transformer,
    refused_pickle,
    resolve_model_path,
    run_layers,
    training_summary,
    transformer_blocks,
    transformer_folder,
    truncate,
    weights_sha256,
)
from elasticir.encoders.store import EmbeddingStore, store_key

__all__ = [
    "ALIASES",
    "DEFAULT_MODEL",
    "WHEEL_MODELS",
    "ElasticEncoder",
    "EmbeddingStore",
    "ModelInfo",
    "StopForward",
    "default_device",
    "default_dtype",
    "load_sentence_transformer",
    "refused_pickle",
    "resolve_model_path",
    "run_layers",
    "store_key",
    "training_summary",
    "transformer_blocks",
    "transformer_folder",
    "truncate",
    "weights_sha256",
]  # fmt: skip
