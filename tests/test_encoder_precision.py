"""Encoder precisions: where each runs, how close its vectors stay to float32's, and that their stores never mix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from elasticir.encoders import ElasticEncoder
from elasticir.encoders.precision import check_precisions, resolve
from elasticir.encoders.store import store_key
from elasticir.errors import ElasticIRError

TEXTS = ["A man is playing a guitar.", "A cat sleeps on the sofa.", "Two kids are swimming in a pool.",
         "The stock market fell sharply today, and analysts expect it to fall again tomorrow.", "two"]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _cpu_has_bf16() -> bool:
    import torch.cpu

    return any(getattr(torch.cpu, probe, lambda: False)() for probe in
               ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def test_each_precision_runs_where_it_can_and_says_where_else():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve("float32", cpu).tag == ""  # the reference keeps today's store keys
    assert resolve("int8", cpu).backend == "onnx" and resolve("int8", cpu).quantized
    with pytest.raises(ElasticIRError, match="CUDA only"):
        resolve("float16", cpu)
    with pytest.raises(ElasticIRError, match="CPU only"):
        resolve("int8", cuda)
    with pytest.raises(ElasticIRError, match="not known"):
        resolve("int4", cpu)
    with pytest.raises(ElasticIRError, match="listed twice"):
        check_precisions(["float32", "int8", "int8"])


def test_int8_vectors_stay_close_to_float32_and_get_their_own_store(tiny_model_dir, tmp_path):
    reference = ElasticEncoder(str(tiny_model_dir), device="cpu")
    int8 = ElasticEncoder(str(tiny_model_dir), precision="int8", onnx_cache=tmp_path / "onnx")
    assert int8.backend == "onnx" and int8.device.type == "cpu" and int8.precision.name == "int8"
    ours = int8.encode(TEXTS, [2, 4], batch_size=2, show_progress=False)
    theirs = reference.encode(TEXTS, [2, 4], batch_size=2, show_progress=False)
    for layer in (2, 4):
        cosine = (_unit(ours[layer]) * _unit(theirs[layer])).sum(1)
        assert cosine.min() > 0.98, layer  # quantized: close, and not equal
        assert not np.allclose(ours[layer], theirs[layer], atol=1e-6)
    ids = [str(i) for i in range(len(TEXTS))]
    assert store_key(int8, ids, TEXTS, "", "float32") != store_key(reference, ids, TEXTS, "", "float32")
    # the graph is cached under its own key: a float32 ONNX encoder next to it exports its own
    float_onnx = ElasticEncoder(str(tiny_model_dir), backend="onnx", onnx_cache=tmp_path / "onnx")
    assert float_onnx._onnx.path([4]) != int8._onnx.path([4])
    assert store_key(float_onnx, ids, TEXTS, "", "float32") == store_key(reference, ids, TEXTS, "", "float32")


def test_bfloat16_on_the_cpu_autocasts_or_is_refused(tiny_model_dir):
    if not _cpu_has_bf16():
        with pytest.raises(ElasticIRError, match="no bfloat16 instructions"):
            ElasticEncoder(str(tiny_model_dir), device="cpu", precision="bfloat16")
        return
    reference = ElasticEncoder(str(tiny_model_dir), device="cpu")
    bf16 = ElasticEncoder(str(tiny_model_dir), device="cpu", precision="bfloat16")
    assert bf16.dtype == torch.float32 and bf16.precision.autocast == torch.bfloat16  # weights stay float32
    ours = bf16.encode(TEXTS, [4], show_progress=False)[4]
    theirs = reference.encode(TEXTS, [4], show_progress=False)[4]
    assert ours.dtype == np.float32
    cosine = (_unit(ours) * _unit(theirs)).sum(1)
    assert cosine.min() > 0.99 and not np.allclose(ours, theirs, atol=1e-6)
    ids = [str(i) for i in range(len(TEXTS))]
    assert store_key(bf16, ids, TEXTS, "", "float32") != store_key(reference, ids, TEXTS, "", "float32")
