"""Encoder precisions: the arithmetic an encode runs in, each a measured point of the grid, float32 the reference.

A faster encoder changes the vectors a little; how much that moves each (layer, dim) cell is what a user needs
to know before choosing one, so each precision is evaluated like any other point and compared with float32.

- float32: the reference (every device; the torch or the ONNX Runtime backend, which agree to ~1e-6).
- bfloat16: on CUDA the weights in bfloat16 (the GPU default); on the CPU the weights stay float32 and
  `torch.autocast` runs the matrix multiplies in bfloat16 (normalisations and softmax stay float32, as autocast
  keeps them), which needs a CPU with bfloat16 instructions (AVX512-BF16 or AMX): elsewhere bfloat16 is emulated
  and slower than float32, so it is refused.
- float16: CUDA only, the weights in float16.
- int8: the CPU only, ONNX Runtime's dynamic quantization of the exported per-layer graph (int8 weights, int8
  activations quantized per batch), as sentence-transformers' `export_dynamic_quantized_onnx_model` does, with
  the first transformer block kept in float32 (QUANTIZATION): so a layer-1 cell's int8 vectors are its float32
  ones, and deeper cells run int8 from block 2 on.

A precision whose vectors differ from what the encoder's dtype alone says (CPU autocast, int8) adds a `tag` to the
embedding store key, so its vectors never mix with float32 ones; float32 keeps today's keys. The int8 tag carries a
digest of QUANTIZATION and of the onnxruntime version, so a changed quantization recipe or runtime is a fresh
store, never a silent reuse of vectors another recipe made.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import metadata

import torch

from elasticir.errors import ElasticIRError

# What ONNX Runtime's dynamic quantization is asked for (elasticir.encoders.onnx applies it): int8 weights with one
# scale per output channel, as sentence-transformers' `export_dynamic_quantized_onnx_model` ("avx512_vnni" preset,
# per_channel by default) does, but on the MatMul / fused Attention nodes only (the preset quantizes every
# integer-op node): per tensor, all-MiniLM-L6-v2's vectors lose 3% in cosine (mean 0.969 on STSb sentences), per
# channel 0.5% (0.994), at the same speed. `float_blocks`: transformer blocks (0 = the first) whose nodes stay in
# float32. Keeping the first block in float32 (a sixth of the weight matrix multiplies) brought all-MiniLM-L6-v2's
# SciFact nDCG@10 (6, 384) from -0.0058 to +0.0004 against float32 and raised the vectors' min cosine to fp32; other
# recipes moved SciFact by up to +-0.006 either way (results/examples/encoder_precision), about what 300 queries
# resolve, so the one closest to float32 on every measure was kept.
QUANTIZATION = {"weights": "QInt8", "per_channel": True, "reduce_range": False, "ops": ["MatMul", "Attention"],
                "float_blocks": [0]}


def int8_tag() -> str:
    """The int8 store tag: the recipe (QUANTIZATION) and the runtime that computes the vectors, digested."""
    try:
        runtime = metadata.version("onnxruntime")
    except metadata.PackageNotFoundError:  # refused later by the onnx backend check, with its install hint
        runtime = "absent"
    recipe = json.dumps({"quantization": QUANTIZATION, "onnxruntime": runtime}, sort_keys=True)
    return "onnx-int8-dynamic-" + hashlib.sha256(recipe.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class EncoderPrecision:
    """How one precision runs on one device type: the weights' dtype, an autocast dtype, the runtime."""

    name: str
    weights: torch.dtype
    autocast: torch.dtype | None = None  # torch.autocast(device, dtype) around the forward
    backend: str | None = None  # a runtime the precision needs ("onnx" for int8), else the one asked for
    quantized: bool = False  # the ONNX graph is dynamically quantized to int8
    tag: str = ""  # added to the embedding store key (empty: the dtype already tells the vectors apart)


def _cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX: the instructions that make bfloat16 matrix multiplies faster than float32 on a CPU."""
    import torch.cpu  # torch's own CPU feature probes (private names: absent ones count as "no")

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def _cpu(name: str) -> EncoderPrecision:
    if name == "float32":
        return EncoderPrecision("float32", torch.float32)
    if name == "bfloat16":
        if not _cpu_has_bf16():
            raise ElasticIRError("--encoder-precisions bfloat16: this CPU has no bfloat16 instructions (AVX512-BF16 "
                                 "or AMX), so bfloat16 would be emulated and slower than float32; use int8 on this "
                                 "CPU, or bfloat16 on a GPU")
        return EncoderPrecision("bfloat16", torch.float32, autocast=torch.bfloat16, tag="autocast-bfloat16")
    if name == "int8":
        return EncoderPrecision("int8", torch.float32, backend="onnx", quantized=True, tag=int8_tag())
    raise ElasticIRError(f"--encoder-precisions {name}: runs on CUDA only; on the CPU use float32, bfloat16 or int8")


def _cuda(name: str) -> EncoderPrecision:
    if name == "int8":
        raise ElasticIRError("--encoder-precisions int8: ONNX Runtime's int8 encoder runs on the CPU only; on the "
                             "GPU use bfloat16 or float16 (or --device cpu)")
    if name == "bfloat16" and not torch.cuda.is_bf16_supported():
        raise ElasticIRError("--encoder-precisions bfloat16: this GPU has no bfloat16 support; use float16")
    return EncoderPrecision(name, {"float32": torch.float32, "bfloat16": torch.bfloat16,
                                   "float16": torch.float16}[name])


ENCODER_PRECISIONS = ("float32", "bfloat16", "float16", "int8")  # float32 first: the reference of every comparison


def resolve(name: str, device: torch.device) -> EncoderPrecision:
    """The precision `name` on `device`, or one error saying where it runs."""
    if name not in ENCODER_PRECISIONS:
        raise ElasticIRError(f"--encoder-precisions {name!r} is not known; choose from {', '.join(ENCODER_PRECISIONS)}")
    if device.type == "cuda":
        return _cuda(name)
    if device.type == "cpu":
        return _cpu(name)
    if name != "float32":
        raise ElasticIRError(f"--encoder-precisions {name}: only float32 runs on {device.type}")
    return EncoderPrecision("float32", torch.float32)


def name_of(dtype: torch.dtype) -> str:
    """The precision a plain dtype runs (an encoder made with `dtype=` rather than a precision)."""
    return {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}.get(dtype, str(dtype))


def check_precisions(names: list[str]) -> None:
    """A precision list the grid can take: known names, no repeats, float32 among them (the reference)."""
    unknown = [name for name in names if name not in ENCODER_PRECISIONS]
    if unknown:
        raise ElasticIRError(f"--encoder-precisions {','.join(names)}: {', '.join(unknown)} not known; choose "
                             f"from {', '.join(ENCODER_PRECISIONS)}")
    if len(set(names)) != len(names):
        raise ElasticIRError(f"--encoder-precisions {','.join(names)}: a precision is listed twice")
