"""Unpadded (packed, variable-length) attention for BERT-family encoders, and pooling of packed sequences.

Why: padded batches spend attention and MLP FLOPs on pad tokens. Packing a batch into one row of
`sum(lengths)` tokens with per-sequence position ids removes them from every matmul; only attention needs to
know where sequences start (`cu_seqlens`, cumulative lengths), so it does not attend across them.

Why a registered attention function rather than transformers' own padding-free path: transformers detects
packed sequences from `position_ids` only in its flash-attention integration, which needs the `flash_attn`
package (not a dependency here, and absent on CPU). BERT's attention calls whatever function is registered
under `config._attn_implementation`, passing through the model's keyword arguments, so one small function
gives packed attention with torch alone. Two torch kernels are tried, fastest first:
- `flash`: `torch.nn.attention.varlen.varlen_attn` (flash-attention varlen; CUDA, fp16/bf16 only);
- `nested`: `scaled_dot_product_attention` on nested jagged tensors (CPU and CUDA, any dtype).
When neither works the encoder stays on padded SDPA and says so in its `attention_note`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch
import torch.nn.functional as F

IMPLEMENTATION = "elasticir_varlen"
KERNELS = ("flash", "nested")
# Absolute learned positions starting at 0 and attention through ALL_ATTENTION_FUNCTIONS: packing is exact.
# (RoBERTa-style models offset their positions by the pad id, so they are not listed.)
PACKABLE_MODEL_TYPES = ("bert",)


def _flash(query, key, value, cu_seqlens, max_seqlen, scaling):
    from torch.nn.attention.varlen import varlen_attn

    args = (query, key, value, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen)
    if scaling is None or abs(scaling - query.shape[-1] ** -0.5) < 1e-12:
        return varlen_attn(*args)  # the default scale; older torch releases have no `scale` argument
    return varlen_attn(*args, scale=scaling)


def _nested(query, key, value, cu_seqlens, max_seqlen, scaling):
    offsets = cu_seqlens.long()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "nested tensors are a prototype" on every call
        q, k, v = (torch.nested.nested_tensor_from_jagged(t, offsets=offsets, max_seqlen=max_seqlen).transpose(1, 2)
                   for t in (query, key, value))
        out = F.scaled_dot_product_attention(q, k, v, scale=scaling)
    return out.transpose(1, 2).values()


_KERNEL_FUNCTIONS = {"flash": _flash, "nested": _nested}
CALLS = 0  # calls of the packed attention function (see ElasticEncoder's check that the model uses it)


def varlen_attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Attention over packed sequences: `query/key/value` are [1, heads, total_tokens, head_dim]; returns
    [1, total_tokens, heads, head_dim] as transformers' attention functions do (dropout is inference-off)."""
    global CALLS
    if not torch.compiler.is_compiling():  # a global that changes per call would make torch.compile recompile
        CALLS += 1
    cu_seqlens = kwargs["elasticir_cu_seqlens"]
    kernel = _KERNEL_FUNCTIONS[kwargs["elasticir_kernel"]]
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # [total, heads, head_dim]
    out = kernel(q, k, v, cu_seqlens, kwargs["elasticir_max_seqlen"], scaling)
    return out.unsqueeze(0), None


def register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(IMPLEMENTATION, varlen_attention_forward)


@contextlib.contextmanager
def packed_attention(config) -> Iterator[None]:
    """Route the model's attention to the packed function for one forward pass, then restore it."""
    previous = config._attn_implementation
    config._attn_implementation = IMPLEMENTATION
    try:
        yield
    finally:
        config._attn_implementation = previous


def probe_kernel(device: torch.device, dtype: torch.dtype, head_dim: int) -> tuple[str | None, str]:
    """The first kernel that runs and matches per-sequence SDPA on this device/dtype, and why others did not."""
    generator = torch.Generator().manual_seed(0)
    lengths = [5, 3, 7]
    cu_seqlens = torch.tensor([0, 5, 8, 15], dtype=torch.int32, device=device)
    q, k, v = (torch.randn(15, 2, head_dim, generator=generator).to(device, dtype) for _ in range(3))
    reference = torch.cat([
        F.scaled_dot_product_attention(*(t[a:b].transpose(0, 1) for t in (q, k, v))).transpose(0, 1)
        for a, b in zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist())
    ])
    tolerance = 1e-4 if dtype == torch.float32 else 2e-2
    reasons = []
    for name in KERNELS:
        if name == "flash" and (device.type != "cuda" or dtype == torch.float32):
            reasons.append("flash: needs CUDA and fp16/bf16")
            continue
        try:
            out = _KERNEL_FUNCTIONS[name](q, k, v, cu_seqlens, max(lengths), head_dim**-0.5)
            error = (out.float() - reference.float()).abs().max().item()
            if error <= tolerance:
                return name, "; ".join(reasons)
            reasons.append(f"{name}: differs from SDPA by {error:.1e}")
        except Exception as exc:  # noqa: BLE001 - any failure means "not available here"; the reason is recorded
            reasons.append(f"{name}: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:100]}")
    return None, "; ".join(reasons)


def pool_packed(hidden: torch.Tensor, batch: dict, pooling: str) -> torch.Tensor:
    """Per-sequence pooling of a packed [1, total, hidden] state: CLS = each sequence's first token, mean =
    segment mean in fp32.

    Why `embedding_bag` for the mean: a sequence's tokens are consecutive rows, which is exactly a bag of rows
    given by its start offset; its kernel sums each (bag, feature) in one place, where `index_add_` scatters
    every token with an atomic add (a tenth of an H100 batch's time at 12 layers). No host sync: the offsets
    stay on the device. The states are upcast first so the sums and the mean stay fp32, as before."""
    states = hidden[0]
    if pooling == "cls":
        return states[batch["starts"]]
    rows = torch.arange(states.shape[0], device=states.device)
    return F.embedding_bag(rows, states.float(), batch["starts"], mode="mean")
