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


def layer_encode_latency(encoders: ElasticEncoder | dict[str, ElasticEncoder], texts: Sequence[str],
                         layers: Sequence[int], *, repeats: int = 3, batch_size: int = 32) -> list[dict]:
    """Per layer (and per encoder precision, given {name: encoder}): tokens/s and ms per text of an encode that
    runs only that layer's depth (median of repeats). Several encoders are timed side by side, each layer of
    each in turn within every repeat, so drift hits them alike."""
    if not isinstance(encoders, dict):
        encoders = {encoders.precision.name: encoders}
    texts = list(texts)
    first = next(iter(encoders.values()))
    tokens = int(sum(len(ids) for ids in first.tokenizer(texts, truncation=True,
                                                         max_length=first.info.max_length)["input_ids"]))
    for encoder in encoders.values():  # warm-up (an int8 encoder exports its graph here)
        encoder.encode(texts[:batch_size], [max(layers)], batch_size=batch_size, show_progress=False)
    seconds: dict[tuple[str, int], list[float]] = {(name, layer): [] for name in encoders for layer in layers}
    for _ in range(repeats):
        for layer in layers:
            for name, encoder in encoders.items():
                start = time.perf_counter()
                encoder.encode(texts, [layer], batch_size=batch_size, show_progress=False)
                seconds[(name, layer)].append(time.perf_counter() - start)
    return [{"layer": layer, "tokens_per_s": tokens / float(np.median(times)),
             "ms_per_text": 1000 * float(np.median(times)) / len(texts), "texts": len(texts), "tokens": tokens,
             "device": str(encoders[name].device), "encoder_precision": name}
            for (name, layer), times in seconds.items()]
