"""GPU profile of the bert-base-shaped all-layer encode: where the time goes, and what the obvious fixes give.

One script, one run (< ~5 minutes on an H100), every section fail-soft, a compact table last, JSON under --out.
Same texts, model shape (12 x 768, random weights), FLOP formula and MFU peak as benchmarks/gpu_check.py, whose
helpers it imports (texts at MS MARCO lengths from `.gpu/texts.txt`, `build_model`, `model_flops`).

Sections (all on the bert-base shape, bf16, every one of the 12 layers captured, unless a variant says otherwise):
  split     three levels of the same elasticir code path, interleaved and repeated, unpadded and padded:
              e2e        `ElasticEncoder.encode(texts)` as gpu_check times it (tokenizing in its background thread)
              pretok     the same `encode`, but the encoder's tokenize step is a dict lookup of ids made up front:
                         batching, collation (pad/pack), pinned copies, forward, pooling, host copies still run
              gpu_only   batches already collated and on the device; only `forward_packed`/`forward_layers` and
                         the stack of the pooled layers run (Python dispatch + kernels; no host copies)
            e2e - pretok ~ tokenization cost on the critical path; pretok - gpu_only ~ collation/transfer cost.
  profile   torch.profiler over a few gpu_only batches and over a pretok encode of the same texts: CUDA kernel
            time vs wall time (GPU busy fraction), kernel launches per batch, top-15 kernels and time per category
            (matmul, attention, layernorm, gelu, elementwise, copy/cast, reduce/index, triton, other).
  variants  tok/s and MFU of each (pretok path unless named gpu_only): token budgets 65536/131072/262144
            (unpadded and padded), padded SDPA backends (efficient, cudnn, math), fp16, fp32 with TF32, and
            `torch.compile` of the model: first with elasticir's hooks and early exit in place; when that fails,
            a compiled model without hooks returning all hidden states, pooled outside (gpu_only).

Run (GPU):  PYTHONPATH=. python3 benchmarks/gpu_profile.py --data .gpu --out $OUT
Run (CPU):  python benchmarks/gpu_profile.py --cpu-smoke   (every section, tiny; checks the script itself)
Only torch, transformers, sentence-transformers, numpy and elasticir.encoders are imported.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's elasticir, not an installed one
sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_check as gc  # after the path setup (it also sets the offline environment)

CATEGORIES = (  # kernel name -> category, first match wins
    ("attention", r"flash|fmha|attention|sdpa|attn"),
    ("matmul", r"gemm|cutlass|xmma|nvjet|cublas|matmul|wgmma|sm90_|sm80_"),
    ("triton", r"^triton_"),
    ("layernorm", r"layer_?norm"),
    ("gelu", r"gelu"),
    ("copy/cast", r"copy|memcpy|memset|cast|cat_|CatArray|fill"),
    ("reduce/index", r"reduce|index|scatter|gather|sum|embedding"),
    ("elementwise", r"elementwise|vectorized|unrolled"),
)


# ---------------------------------------------------------------- encoders and the three levels of the path

def make_encoder(ctx: dict, folder: Path, attention: str, budget: int | None, dtype=None):
    from elasticir.encoders import ElasticEncoder

    return ElasticEncoder(str(folder), device=ctx["device"], dtype=dtype or ctx["dtype"], attention=attention,
                          max_tokens_per_batch=budget)


def cap_for(budget: int | None, ctx: dict) -> int:
    """The text-count cap: gpu_check's 1024 at a 65536 budget, scaled with the budget (else the cap binds)."""
    return ctx["batch"] if budget is None else max(16, budget // 64)


@contextlib.contextmanager
def pretokenized(encoder, table: dict):
    """The encoder's tokenize step replaced by a lookup of ids computed up front, in-process (instance
    attributes, undone after)."""
    encoder._window_ids = lambda texts: [table[text] for text in texts]
    encoder.tokenize_workers = 0
    try:
        yield
    finally:
        del encoder._window_ids, encoder.tokenize_workers


def encode_fn(encoder, layers, cap, table=None):
    def run(texts):
        with pretokenized(encoder, table) if table is not None else contextlib.nullcontext():
            return encoder.encode(texts, layers, batch_size=cap, show_progress=False)
    return run


def device_batches(encoder, texts, table, cap) -> list[dict]:
    """The batches `encode` would form, collated and moved to the device once (for gpu_only timing)."""
    from elasticir.encoders import batching

    out = []
    for _rows, sequences in batching.iter_batches(
            texts, lambda chunk: [table[t] for t in chunk], batch_size=cap, max_tokens=encoder.max_tokens_per_batch,
            packed=encoder.packed, window=max(8 * cap, 4096)):
        if encoder.packed:
            batch = batching.pack(sequences)
        else:
            batch = batching.pad(sequences, encoder.tokenizer.pad_token_id or 0)
            batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
        out.append(batching.to_device(batch, encoder.device))
    gc.sync(encoder.device)
    return out


def gpu_only_fn(encoder, layers, batches):
    forward = encoder.forward_packed if encoder.packed else encoder.forward_layers

    def run(_texts=None):
        with torch.inference_mode():
            for batch in batches:
                pooled = forward(batch, layers)
                torch.stack([pooled[layer].float() for layer in layers])
    return run


def time_fns(ctx: dict, fns: dict, texts, repeats: int, warm_all: bool = False) -> dict[str, list[float]]:
    """Warm each (on all texts when `warm_all`: compiled code meets every batch shape before it is timed), then
    `repeats` timed runs in a shuffled order per repeat; stops adding repeats past the deadline."""
    times = {name: [] for name in fns}
    for name, fn in fns.items():
        try:
            fn(texts if warm_all else texts[: min(len(texts), 2048)])
        except Exception as exc:  # noqa: BLE001 - fail soft: this one is dropped, the others run
            times[name] = f"failed: {type(exc).__name__}: {str(exc)[:300]}"
    live = [name for name in fns if isinstance(times[name], list)]
    rng = random.Random(0)
    for repeat in range(repeats):
        rng.shuffle(live)
        for name in live:
            if repeat > 0 and time.monotonic() > ctx["deadline"]:
                continue
            gc.sync(ctx["device"])
            start = time.perf_counter()
            fns[name](texts)
            gc.sync(ctx["device"])
            times[name].append(time.perf_counter() - start)
    return times


def rate_rows(times: dict, flops: float, tokens: int, texts: int) -> dict:
    rows = {}
    for name, seconds in times.items():
        if not isinstance(seconds, list) or not seconds:
            rows[name] = {"error": seconds if isinstance(seconds, str) else "not timed (deadline)"}
            continue
        median = statistics.median(seconds)
        rows[name] = {"seconds": seconds, "median_s": median, "tokens_per_s": tokens / median,
                      "texts_per_s": texts / median, "tflops": flops / median / 1e12,
                      "mfu_datasheet": flops / median / gc.DATASHEET_PEAK}
    return rows


# ---------------------------------------------------------------- sections

def section_setup(ctx: dict) -> dict:
    """Texts (gpu_check's builder), their ids up front, and the bert-base-shaped model folder."""
    texts = gc.section_texts(ctx)
    start = time.perf_counter()
    ids = ctx["tokenizer"](ctx["passages"], truncation=True, max_length=gc.MAX_LENGTH)["input_ids"]
    ctx["table"] = dict(zip(ctx["passages"], ids))
    ctx["root"] = Path(tempfile.mkdtemp(prefix="gpu_profile_"))
    ctx["folder"], ctx["config"] = gc.build_model(ctx, "bert-base", ctx["root"])
    ctx["layers"] = list(range(1, ctx["config"].num_hidden_layers + 1))
    ctx["flops"] = gc.model_flops(ctx["lengths"], ctx["config"])
    ctx["tokens"] = int(ctx["lengths"].sum())
    return {"texts": {k: v for k, v in texts.items() if not isinstance(v, list)},
            "pretokenize_seconds": time.perf_counter() - start, "tokens": ctx["tokens"], "flops": ctx["flops"]}


def section_split(ctx: dict) -> dict:
    texts, out = ctx["passages"], {}
    for attention in ("unpadded", "padded"):
        budget = ctx["max_tokens"]
        cap = cap_for(budget, ctx)
        encoder = make_encoder(ctx, ctx["folder"], attention, budget)
        batches = device_batches(encoder, texts, ctx["table"], cap)
        fns = {"e2e": encode_fn(encoder, ctx["layers"], cap),
               "pretok": encode_fn(encoder, ctx["layers"], cap, ctx["table"]),
               "gpu_only": gpu_only_fn(encoder, ctx["layers"], batches)}
        times = time_fns(ctx, fns, texts, ctx["repeats"])
        out[attention] = {"note": f"{encoder.attention_note}; budget {budget}; cap {cap}", "batches": len(batches),
                          "rows": rate_rows(times, ctx["flops"], ctx["tokens"], len(texts))}
        if attention == "unpadded":
            ctx["profile_encoder"], ctx["profile_batches"] = encoder, batches
        del batches
        if ctx["device"].type == "cuda":
            torch.cuda.empty_cache()
    return out


def category(name: str) -> str:
    for label, pattern in CATEGORIES:
        if re.search(pattern, name, re.IGNORECASE):
            return label
    return "other"


def busy_seconds(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of [start, end) intervals (kernels on several streams may overlap)."""
    total, end = 0.0, -float("inf")
    for start, stop in sorted(intervals):
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def parse_trace(path: Path, batches: int, wall: float) -> dict:
    """Kernel and copy statistics from a chrome trace (its format is stable across torch releases)."""
    events = json.loads(path.read_text()).get("traceEvents", [])
    device = [e for e in events if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset") and "dur" in e]
    kernels = [e for e in device if e["cat"] == "kernel"]
    per_name: dict[str, float] = {}
    for e in device:
        per_name[e["name"]] = per_name.get(e["name"], 0.0) + e["dur"] / 1e6
    per_category: dict[str, float] = {}
    for name, seconds in per_name.items():
        per_category[category(name)] = per_category.get(category(name), 0.0) + seconds
    intervals = [(e["ts"] / 1e6, (e["ts"] + e["dur"]) / 1e6) for e in device]
    span = (max(b for _, b in intervals) - min(a for a, _ in intervals)) if intervals else 0.0
    busy = busy_seconds(intervals)
    top = sorted(per_name.items(), key=lambda kv: -kv[1])[:15]
    return {"batches": batches, "wall_s": wall, "device_span_s": span, "device_busy_s": busy,
            "kernel_sum_s": sum(e["dur"] for e in kernels) / 1e6, "busy_fraction_of_wall": busy / wall if wall else None,
            "kernels": len(kernels), "kernels_per_batch": len(kernels) / max(batches, 1),
            "memcpy": sum(1 for e in device if e["cat"] == "gpu_memcpy"),
            "by_category_s": dict(sorted(per_category.items(), key=lambda kv: -kv[1])),
            "top15": [{"name": name[:120], "category": category(name), "seconds": s,
                       "share": s / busy if busy else None} for name, s in top]}


def profile_one(ctx: dict, fn, batches: int, label: str) -> dict:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if ctx["device"].type == "cuda" else [])
    fn()  # warm
    gc.sync(ctx["device"])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        fn()
        gc.sync(ctx["device"])
        wall = time.perf_counter() - start
    trace = ctx["root"] / f"trace_{label}.json"
    prof.export_chrome_trace(str(trace))
    out = parse_trace(trace, batches, wall)
    if ctx.get("keep_traces"):
        shutil.copy(trace, Path(ctx["out"]) / trace.name)
    averages = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:10]
    out["top10_cpu_ops"] = [{"name": e.key[:80], "self_cpu_s": e.self_cpu_time_total / 1e6, "calls": e.count}
                            for e in averages]
    return out


def section_profile(ctx: dict) -> dict:
    encoder, batches = ctx["profile_encoder"], ctx["profile_batches"][: ctx["profile_batches_n"]]
    cap = cap_for(encoder.max_tokens_per_batch, ctx)
    # the texts of those batches, so the pretok encode does the same work
    lengths = [int(b["lengths"].sum()) for b in batches]
    count = sum(int(b["lengths"].shape[0]) for b in batches)
    order = np.argsort([-len(t) for t in ctx["passages"]], kind="stable")[:count]
    texts = [ctx["passages"][i] for i in order]
    out = {"gpu_only": profile_one(ctx, gpu_only_fn(encoder, ctx["layers"], batches), len(batches), "gpu_only")}
    pretok = encode_fn(encoder, ctx["layers"], cap, ctx["table"])
    out["pretok"] = profile_one(ctx, lambda: pretok(texts), len(batches), "pretok")
    out["tokens_per_batch"] = lengths
    # the ceiling of this kernel mix: tok/s and MFU were the device never idle between the kernels
    sequence_lengths = np.concatenate([b["lengths"].cpu().numpy() for b in batches])
    flops = gc.model_flops(sequence_lengths, ctx["config"])
    for label in ("gpu_only", "pretok"):
        busy = out[label]["device_busy_s"]
        out[label]["kernel_bound_tokens_per_s"] = sum(lengths) / busy if busy else None
        out[label]["kernel_bound_mfu"] = flops / busy / gc.DATASHEET_PEAK if busy else None
    return out


def variant_fns(ctx: dict) -> dict:
    """{name: (builder -> run(texts)), note}; each builder is called lazily so a failure drops only its variant."""
    folder, layers = ctx["folder"], ctx["layers"]
    table = ctx["table"]

    def pretok_variant(attention, budget, dtype=None, backend=None, tf32=False):
        def build():
            encoder = make_encoder(ctx, folder, attention, budget, dtype)
            run = encode_fn(encoder, layers, cap_for(budget, ctx), table)

            def wrapped(texts):
                with contextlib.ExitStack() as stack:
                    if backend is not None:
                        from torch.nn.attention import SDPBackend, sdpa_kernel
                        stack.enter_context(sdpa_kernel(getattr(SDPBackend, backend)))
                    if tf32:
                        stack.enter_context(tf32_on())
                    return run(texts)
            return wrapped, encoder.attention_note
        return build

    base = ctx["max_tokens"]
    variants = {}
    # most informative first: later ones are skipped once the time budget is spent
    for budget in ctx["budgets"]:
        variants[f"unpadded_{budget}"] = pretok_variant("unpadded", budget)
    variants["compile_hooks_unpadded"] = lambda: compiled_with_hooks(ctx, "unpadded")
    for budget in ctx["budgets"]:
        variants[f"padded_{budget}"] = pretok_variant("padded", budget)
    for backend in ("EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"):
        variants[f"padded_sdpa_{backend.split('_')[0].lower()}"] = pretok_variant("padded", base, backend=backend)
    if ctx["device"].type == "cuda":
        variants["unpadded_fp16"] = pretok_variant("unpadded", base, dtype=torch.float16)
    variants["padded_fp32_tf32"] = pretok_variant("padded", base, dtype=torch.float32, tf32=True)
    variants["compile_hooks_padded"] = lambda: compiled_with_hooks(ctx, "padded")
    return variants


@contextlib.contextmanager
def tf32_on():
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


def dynamo_counters() -> dict:
    """Graph count, graph breaks (with reasons) and recompiles: a compiled variant that broke into many graphs or
    hit the recompile limit runs (partly) eagerly, and its number must say so."""
    counters = torch._dynamo.utils.counters
    return {"unique_graphs": counters["stats"].get("unique_graphs", 0),
            "graph_breaks": sum(counters["graph_break"].values()),
            "break_reasons": [reason[:160] for reason in list(counters["graph_break"])[:5]],
            "frames": dict(counters["frames"])}


def compiled_with_hooks(ctx: dict, attention: str):
    """elasticir's own path with `encoder.model` compiled (hooks, StopForward and packed kwargs all inside)."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    budget = ctx["max_tokens"]
    encoder = make_encoder(ctx, ctx["folder"], attention, budget)
    encoder.model = torch.compile(encoder.model, dynamic=True, backend=ctx["compile_backend"],
                                  mode=ctx["compile_mode"])
    return encode_fn(encoder, ctx["layers"], cap_for(budget, ctx), ctx["table"]), \
        f"{encoder.attention_note}; torch.compile({ctx['compile_backend']}, mode={ctx['compile_mode']}, dynamic)"


def compiled_hidden_states(ctx: dict, attention: str):
    """Fallback: the model compiled without hooks (all layers run anyway), hidden states pooled outside."""
    from elasticir.encoders import varlen

    budget = ctx["max_tokens"]
    encoder = make_encoder(ctx, ctx["folder"], attention, budget)
    cap = cap_for(budget, ctx)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    model = torch.compile(encoder.model, dynamic=True, backend=ctx["compile_backend"], mode=ctx["compile_mode"])
    batches = device_batches(encoder, ctx["passages"], ctx["table"], cap)

    def run(_texts=None):
        with torch.inference_mode():
            for batch in batches:
                if encoder.packed:
                    with varlen.packed_attention(encoder.model.config):
                        states = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                                       token_type_ids=torch.zeros_like(batch["input_ids"]),
                                       elasticir_cu_seqlens=batch["cu_seqlens"],
                                       elasticir_max_seqlen=batch["max_seqlen"], elasticir_kernel=encoder._kernel,
                                       output_hidden_states=True).hidden_states
                    pooled = [varlen.pool_packed(states[layer], batch, "mean") for layer in ctx["layers"]]
                else:
                    states = model(**batch, output_hidden_states=True).hidden_states
                    pooled = [encoder.stack.embed(states[layer], batch) for layer in ctx["layers"]]
                torch.stack([p.float() for p in pooled])
    return run, f"gpu_only; {encoder.attention_note}; compiled without hooks, output_hidden_states"


def section_variants(ctx: dict) -> dict:
    texts = ctx["passages"][: ctx["variant_passages"]]
    lengths = ctx["lengths"][: ctx["variant_passages"]]
    flops, tokens = gc.model_flops(lengths, ctx["config"]), int(lengths.sum())
    out = {"texts": len(texts), "tokens": tokens, "rows": {}}
    for name, build in variant_fns(ctx).items():
        left = ctx["deadline"] - time.monotonic()
        if left < 0 or (name.startswith("compile") and left < ctx["compile_reserve_s"]):
            out["rows"][name] = {"error": f"skipped: time budget spent ({left:.0f} s left)"}
            continue
        start = time.perf_counter()
        try:
            fn, note = build()
            times = time_fns(ctx, {name: fn}, texts, ctx["variant_repeats"], warm_all=name.startswith("compile"))
            row = rate_rows(times, flops, tokens, len(texts))[name]
            if name.startswith("compile"):
                row["dynamo"] = dynamo_counters()
            if name.startswith("compile") and "error" in row:
                fallback = name.replace("hooks", "hidden_states")
                fn, note = compiled_hidden_states(ctx, name.rsplit("_", 1)[-1])
                times = time_fns(ctx, {fallback: fn}, texts, ctx["variant_repeats"], warm_all=True)
                row = rate_rows(times, flops, tokens, len(texts))[fallback] | {"hooks_error": row["error"]}
                name = fallback
            out["rows"][name] = row | {"note": note, "wall_incl_build_s": time.perf_counter() - start}
        except Exception as exc:  # noqa: BLE001 - fail soft per variant
            out["rows"][name] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}",
                                 "traceback": traceback.format_exc()[-1500:]}
        if ctx["device"].type == "cuda":
            torch.cuda.empty_cache()
        print(f"    {name}: {summary(out['rows'][name])}", flush=True)
    return out


# ---------------------------------------------------------------- table and main

def summary(row: dict) -> str:
    if "tokens_per_s" in row:
        return f"{row['tokens_per_s']:>10.0f} tok/s {row['tflops']:>7.1f} TFLOP/s {100 * row['mfu_datasheet']:>5.1f}%"
    return f"- {str(row.get('error', ''))[:90]}"


def table(results: dict) -> str:
    needed = gc.MSMARCO_PASSAGES * results.get("setup", {}).get("texts", {}).get("mean_tokens", 75) / gc.TARGET_SECONDS
    lines = [f"target: {needed:.0f} tok/s (MS MARCO, 12x768 all layers, 10 min, 1 GPU); MFU vs 989 TFLOP/s"]
    for attention, section in results.get("split", {}).items():
        if not isinstance(section, dict) or "rows" not in section:
            continue
        for level, row in section["rows"].items():
            lines.append(f"split    {attention:<9} {level:<9} {summary(row)}")
    for label, prof in results.get("profile", {}).items():
        if isinstance(prof, dict) and "kernels_per_batch" in prof:
            cats = ", ".join(f"{k} {1e3 * v / max(prof['batches'], 1):.1f}" for k, v in list(prof["by_category_s"].items())[:6])
            busy = prof["busy_fraction_of_wall"]
            lines.append(f"profile  {label:<9} {prof['batches']} batches: wall {1e3 * prof['wall_s'] / max(prof['batches'], 1):.1f}"
                         f" ms/batch, device busy {100 * busy if busy is not None else float('nan'):.0f}%, "
                         f"{prof['kernels_per_batch']:.0f} kernels/batch; ms/batch: {cats}")
            if prof.get("kernel_bound_tokens_per_s"):
                lines.append(f"           if never idle: {prof['kernel_bound_tokens_per_s']:.0f} tok/s, "
                             f"MFU {100 * prof['kernel_bound_mfu']:.1f}% (tokens / device-busy time)")
            for entry in prof["top15"][:5]:
                lines.append(f"           {entry['category']:<12} {1e3 * entry['seconds'] / max(prof['batches'], 1):7.2f} ms/batch  "
                             f"{entry['name'][:70]}")
    for name, row in results.get("variants", {}).get("rows", {}).items():
        dynamo = row.get("dynamo")
        extra = f"  graphs {dynamo['unique_graphs']}, breaks {dynamo['graph_breaks']}" if dynamo else ""
        lines.append(f"variant  {name:<28} {summary(row)}{extra}")
    failed = [name for name, value in results.items() if isinstance(value, dict) and "error" in value]
    if failed:
        lines.append(f"FAILED sections: {', '.join(failed)} (see the JSON)")
    return "\n".join(lines)


def context(args) -> dict:
    smoke = args.cpu_smoke
    ctx = {"data": Path(args.data), "out": args.out, "device": torch.device("cpu" if smoke else "cuda"),
           "dtype": torch.float32 if smoke else torch.bfloat16, "passages": 64 if smoke else args.passages,
           "batch": 16 if smoke else 256, "max_tokens": 512 if smoke else args.max_tokens,
           "budgets": (512, 1024) if smoke else (args.max_tokens, 2 * args.max_tokens, 4 * args.max_tokens),
           "repeats": 1 if smoke else args.repeats, "variant_repeats": 1 if smoke else 2,
           "variant_passages": 64 if smoke else args.variant_passages, "profile_batches_n": 2 if smoke else 6,
           "compile_backend": "aot_eager" if smoke else "inductor", "compile_reserve_s": 0 if smoke else 60,
           "compile_mode": None if smoke or not args.max_autotune else "max-autotune-no-cudagraphs",
           "keep_traces": args.keep_traces,
           "bert_base": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                         "intermediate_size": 128} if smoke else gc.BERT_BASE}
    ctx["deadline"] = time.monotonic() + args.budget_s
    return ctx


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=".gpu", help="folder written by gpu_check.py --prepare")
    parser.add_argument("--out", default=os.environ.get("OUT", "gpu_profile_out"), help="folder for the JSON")
    parser.add_argument("--passages", type=int, default=32768, help="texts of the split section (gpu_check's count)")
    parser.add_argument("--variant-passages", type=int, default=16384, help="texts per variant run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=65536, help="token budget (gpu_check's); variants x2, x4")
    parser.add_argument("--budget-s", type=float, default=230, help="stop adding repeats/variants after this")
    parser.add_argument("--max-autotune", action="store_true",
                        help="compile with mode=max-autotune-no-cudagraphs (minutes of autotuning)")
    parser.add_argument("--keep-traces", action="store_true", help="copy the chrome traces to --out")
    parser.add_argument("--cpu-smoke", action="store_true", help="every section tiny on CPU")
    args = parser.parse_args(argv)
    if not args.cpu_smoke and not torch.cuda.is_available():
        print("error: no CUDA device; use --cpu-smoke to check the script on CPU", file=sys.stderr)
        return 2
    if not (Path(args.data) / "texts.txt").is_file():
        print(f"error: {args.data}/texts.txt not found; run gpu_check.py --prepare first (and carry the folder)",
              file=sys.stderr)
        return 2
    if args.cpu_smoke:
        torch.set_num_threads(1)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    ctx = context(args)
    import transformers

    results: dict = {"env": {"python": platform.python_version(), "torch": torch.__version__,
                             "transformers": transformers.__version__,
                             "device": torch.cuda.get_device_name() if ctx["device"].type == "cuda" else "cpu",
                             "cpus": os.cpu_count(), "args": vars(args)}}
    def section(name, fn):  # the JSON is rewritten after every section: a run killed by a timeout keeps its part
        gc.run_section(results, name, fn, ctx)
        (Path(args.out) / "gpu_profile.json").write_text(json.dumps(results, indent=1, default=str))

    try:
        section("setup", section_setup)
        if "folder" in ctx:
            section("split", section_split)
            if "profile_encoder" in ctx:
                section("profile", section_profile)
            ctx.pop("profile_batches", None)
            section("variants", section_variants)
    finally:
        if "root" in ctx:
            shutil.rmtree(ctx["root"], ignore_errors=True)
    print(f"\nfull results: {Path(args.out) / 'gpu_profile.json'}\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
