"""Measured encode cost per layer: what a layer-L cell costs to encode on the device used.

The analytic FLOPs (encoders/cost.py) say what a cell should cost; this says what it did cost here. Each layer
is timed alone (early exit at L) on the same fixed sample of real texts, interleaved over repeats so that a
machine whose speed drifts slows every layer alike; the median is kept. One batch of texts per layer is
enough: the cost of a layer-L encode is steady across batches once warmed up.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from elasticir.encoders import ElasticEncoder


def layer_encode_latency(encoder: ElasticEncoder, texts: Sequence[str], layers: Sequence[int], *,
                         repeats: int = 3, batch_size: int = 32) -> list[dict]:
    """Per layer: tokens/s and ms per text of an encode that runs only that layer's depth (median of repeats)."""
    texts = list(texts)
    tokens = int(sum(len(ids) for ids in encoder.tokenizer(texts, truncation=True,
                                                           max_length=encoder.info.max_length)["input_ids"]))
    encoder.encode(texts[:batch_size], [max(layers)], batch_size=batch_size, show_progress=False)  # warm-up
    seconds: dict[int, list[float]] = {layer: [] for layer in layers}
    for _ in range(repeats):
        for layer in layers:
            start = time.perf_counter()
            encoder.encode(texts, [layer], batch_size=batch_size, show_progress=False)
            seconds[layer].append(time.perf_counter() - start)
    return [{"layer": layer, "tokens_per_s": tokens / float(np.median(times)),
             "ms_per_text": 1000 * float(np.median(times)) / len(texts), "texts": len(texts), "tokens": tokens,
             "device": str(encoder.device)} for layer, times in seconds.items()]
