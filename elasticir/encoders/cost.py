"""Analytic cost of a cell (L, d): forward FLOPs per token, parameters touched, index bytes.

Convention (Kaplan et al. 2020 style, stated in every caption that uses it): one multiply-add = 2 FLOPs, and
only matrix products are counted; layer norms, softmax, GELU, biases and residual adds (all O(H) per token,
under 1% here) are left out. For a BERT-style encoder layer with width H, feed-forward width I and n tokens
per sequence, per token:

    Q, K, V, output projections     4 * 2*H*H  = 8 H^2
    attention scores Q K^T           2*n*H
    attention-weighted values A V    2*n*H
    feed-forward (H->I->H)           2 * 2*H*I  = 4 H I
                                     ------------------------------
    per layer                        8 H^2 + 4 H I + 4 n H

An L-layer cell runs L such layers (early exit). Mean pooling adds H FLOPs per token (one add per coordinate;
CLS pooling adds none). The dim d changes nothing in the encoder (a prefix slice); it costs 3d per sequence to
re-normalise and 2d per scored pair, so exact search over N documents costs 2 d N FLOPs per query.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class EncoderShape:
    """The numbers the cost model needs; read from a Hugging Face config (BERT, MiniLM, RoBERTa, ...)."""

    num_layers: int
    hidden_size: int
    intermediate_size: int
    vocab_size: int = 30522
    max_position_embeddings: int = 512
    type_vocab_size: int = 2

    @classmethod
    def from_config(cls, config: Any) -> EncoderShape:
        get = (lambda k, d=None: config.get(k, d)) if isinstance(config, dict) else (lambda k, d=None: getattr(config, k, d))
        hidden = int(get("hidden_size"))
        return cls(
            num_layers=int(get("num_hidden_layers")),
            hidden_size=hidden,
            intermediate_size=int(get("intermediate_size") or 4 * hidden),
            vocab_size=int(get("vocab_size", 30522) or 0),
            max_position_embeddings=int(get("max_position_embeddings", 512) or 0),
            type_vocab_size=int(get("type_vocab_size", 0) or 0),
        )

    @classmethod
    def from_folder(cls, folder: str | Path) -> EncoderShape | None:
        """config.json of a model folder (or its sentence-transformers Transformer sub-folder); None if absent."""
        folder = Path(folder)
        for candidate in (folder / "config.json", *sorted(folder.glob("*/config.json"))):
            try:
                config = json.loads(candidate.read_text())
            except (OSError, ValueError):
                continue
            if "hidden_size" in config and "num_hidden_layers" in config:
                return cls.from_config(config)
        return None


def layer_flops_per_token(shape: EncoderShape, seq_len: int) -> int:
    """Matmul FLOPs of one transformer layer, per token, for sequences of `seq_len` tokens."""
    h, i = shape.hidden_size, shape.intermediate_size
    return 8 * h * h + 4 * h * i + 4 * seq_len * h


def encode_flops_per_token(shape: EncoderShape, layer: int, seq_len: int, pooling: str = "mean") -> int:
    """FLOPs per token to produce layer `layer`'s pooled embedding: `layer` layers plus pooling."""
    return layer * layer_flops_per_token(shape, seq_len) + (shape.hidden_size if pooling == "mean" else 0)


def params_touched(shape: EncoderShape, layer: int) -> dict[str, int]:
    """Parameters an L-layer cell needs: the embedding block plus L layers (the unused pooler excluded).

    `non_embedding` is Kaplan's N (2N ~ matmul FLOPs per token at short lengths).
    """
    h, i = shape.hidden_size, shape.intermediate_size
    embedding = (shape.vocab_size + shape.max_position_embeddings + shape.type_vocab_size) * h + 2 * h
    per_layer = (4 * h * h + 4 * h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h
    return {"embedding": embedding, "per_layer": per_layer, "non_embedding": layer * per_layer,
            "total": embedding + layer * per_layer}


def cell_costs(shape: EncoderShape, layer: int, dim: int, *, seq_len: int = 32, n_docs: int | None = None,
               pooling: str = "mean") -> dict[str, float]:
    """Every analytic cost of one cell.

    encode_flops: FLOPs to embed one text of `seq_len` tokens (+ re-normalising d coordinates);
    search_flops: exact inner-product search of one query over `n_docs` documents (2 d N), 0 when unknown;
    query_flops: encode_flops + search_flops (the per-query cost of dense retrieval at this cell).
    """
    per_token = encode_flops_per_token(shape, layer, seq_len, pooling)
    encode = per_token * seq_len + 3 * dim
    search = 2 * dim * n_docs if n_docs else 0
    params = params_touched(shape, layer)
    return {"flops_per_token": float(per_token), "encode_flops": float(encode), "search_flops": float(search),
            "query_flops": float(encode + search), "params": float(params["total"]),
            "non_embedding_params": float(params["non_embedding"]), "seq_len": float(seq_len),
            "flat_bytes_per_vector": float(4 * dim)}


def mean_token_length(texts: list[str], model_folder: str | Path, max_length: int = 512) -> float | None:
    """Mean tokenised length (special tokens included, truncated as the encoder truncates); None on failure."""
    try:
        from transformers import AutoTokenizer  # lazy: transformers, only to measure token lengths

        folder = Path(model_folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception:  # noqa: BLE001 - the report then falls back to a fixed length, and says so
        return None
    if not texts:
        return None
    lengths = [len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]]
    return float(sum(lengths) / len(lengths))
